"""Helpers for testing ftsdk and its plugins on tiny, local, random-weight models.

Load the fixtures from a conftest.py with ``pytest_plugins = ["ftsdk.testing.fixtures"]``; check a plugin
against the contract with :mod:`ftsdk.testing.conformance` (``from ftsdk.testing import conformance``).
"""

from ftsdk.merging.testing import read_weights
from ftsdk.testing.tiny import (
    TinySpec,
    build_tiny_model,
    build_tokenizer,
    task_rows,
    write_jsonl,
)

__all__ = ["TinySpec", "build_tiny_model", "build_tokenizer", "read_weights", "task_rows", "write_jsonl"]
