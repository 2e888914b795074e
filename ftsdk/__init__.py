"""ftsdk: a plugin-based SDK for fine-tuning, merging and quantizing language models.

``import ftsdk`` stays light (no torch); the heavy parts load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftsdk.plugin.errors import (
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
from ftsdk.plugin.hookspecs import hookimpl
from ftsdk.plugin.kinds import Adapter, Launcher, Merger, Objective, PluginConfig, Quantizer

__version__ = "0.1.0"

_LAZY = {
    "Tuner": "ftsdk.training.tuner",
    "FitResult": "ftsdk.training.tuner",
    "Recipe": "ftsdk.training.recipe",
    "ModelSpec": "ftsdk.models.spec",
    "TrainingConfig": "ftsdk.training.recipe",
    "plugins": "ftsdk.plugin.registry",
    "merge": "ftsdk.merging",
    "merge_adapter": "ftsdk.merging.adapter",
    "estimate": "ftsdk.training.estimate",
    "Chain": "ftsdk.chain",
    "quantize": "ftsdk.quantizing.run",
    # the public face for plugin authors: job types, per-tensor settings, the merge engine, the Trainer glue
    "TrainJob": "ftsdk.plugin.jobs",
    "TrainOutcome": "ftsdk.plugin.jobs",
    "QuantizeJob": "ftsdk.plugin.jobs",
    "MergeRequest": "ftsdk.plugin.jobs",
    "MergeInput": "ftsdk.plugin.jobs",
    "LaunchRequest": "ftsdk.plugin.jobs",
    "Setting": "ftsdk.plugin.per_layer",
    "SettingOf": "ftsdk.plugin.per_layer",
    "TensorMerger": "ftsdk.merging.engine",
    "TensorJob": "ftsdk.merging.engine",
    "trainer_arguments": "ftsdk.training.trainer",
    "run_trainer": "ftsdk.training.trainer",
    "quiet_datasets": "ftsdk.console",
    "tokenize_all": "ftsdk.data.tokenize",
}

if TYPE_CHECKING:
    from ftsdk import plugins
    from ftsdk.chain import Chain
    from ftsdk.console import quiet_datasets
    from ftsdk.data.tokenize import tokenize_all
    from ftsdk.merging import merge
    from ftsdk.merging.adapter import merge_adapter
    from ftsdk.merging.engine import TensorJob, TensorMerger
    from ftsdk.models.spec import ModelSpec
    from ftsdk.plugin.jobs import LaunchRequest, MergeInput, MergeRequest, QuantizeJob, TrainJob, TrainOutcome
    from ftsdk.plugin.per_layer import Setting, SettingOf
    from ftsdk.quantizing.run import quantize
    from ftsdk.training.estimate import estimate
    from ftsdk.training.recipe import Recipe, TrainingConfig
    from ftsdk.training.result import FitResult
    from ftsdk.training.trainer import run_trainer, trainer_arguments
    from ftsdk.training.tuner import Tuner


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
    "LaunchRequest",
    "Launcher",
    "MergeInput",
    "MergeRequest",
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
    "QuantizeJob",
    "Quantizer",
    "Recipe",
    "Setting",
    "SettingOf",
    "TensorJob",
    "TensorMerger",
    "TrainJob",
    "TrainOutcome",
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
    "quiet_datasets",
    "run_trainer",
    "tokenize_all",
    "trainer_arguments",
]
