"""ftsdk: a plugin-based SDK for fine-tuning, merging and quantizing language models.

``import ftsdk`` stays light (no torch); the heavy parts load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftsdk.errors import (
    ConfigError,
    DataError,
    FtsdkError,
    ModelLoadError,
    OutputExistsError,
    OutputInUseError,
    PluginConflictError,
    PluginError,
    PluginUnavailableError,
    UnknownPluginError,
)
from ftsdk.hookspecs import hookimpl
from ftsdk.kinds import Adapter, Launcher, Merger, Objective, PluginConfig, Quantizer

__version__ = "0.1.0"

_LAZY = {
    "Tuner": "ftsdk.tuner",
    "FitResult": "ftsdk.tuner",
    "Recipe": "ftsdk.config",
    "ModelSpec": "ftsdk.config",
    "TrainingConfig": "ftsdk.config",
    "plugins": "ftsdk.plugins",
    "merge": "ftsdk.merging",
    "merge_adapter": "ftsdk.export",
    "estimate": "ftsdk.estimate",
    "Chain": "ftsdk.chain",
    "quantize": "ftsdk.quantizing",
}

if TYPE_CHECKING:
    from ftsdk import plugins
    from ftsdk.chain import Chain
    from ftsdk.config import ModelSpec, Recipe, TrainingConfig
    from ftsdk.estimate import estimate
    from ftsdk.export import merge_adapter
    from ftsdk.merging import merge
    from ftsdk.quantizing import quantize
    from ftsdk.tuner import FitResult, Tuner


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ftsdk' has no attribute '{name}'")
    import importlib

    module = importlib.import_module(module_name)
    return module if name == "plugins" else getattr(module, name)


__all__ = [
    "Adapter",
    "Chain",
    "ConfigError",
    "DataError",
    "FitResult",
    "FtsdkError",
    "Launcher",
    "Merger",
    "ModelLoadError",
    "ModelSpec",
    "Objective",
    "OutputExistsError",
    "OutputInUseError",
    "PluginConfig",
    "PluginConflictError",
    "PluginError",
    "PluginUnavailableError",
    "Quantizer",
    "Recipe",
    "TrainingConfig",
    "Tuner",
    "UnknownPluginError",
    "__version__",
    "estimate",
    "hookimpl",
    "merge",
    "merge_adapter",
    "plugins",
    "quantize",
]
