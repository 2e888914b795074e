"""Merging models without training: the config, the streaming engine the mergers run on, and ``merge()``.

``import ftsdk.merging`` stays light; torch loads when a merge runs.

    from ftsdk.merging import merge
    merge("examples/merges/ties.yaml")            # or a mapping, or a MergeConfig
"""

from ftsdk.merging.api import merge
from ftsdk.merging.config import MergeConfig, load_merge_config

__all__ = ["MergeConfig", "load_merge_config", "merge"]
