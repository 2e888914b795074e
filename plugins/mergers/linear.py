"""Linear merge ("model soup"): the weighted average of the models' weights, as mergekit's ``linear``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ftsdk import ConfigError, PluginConfig, TensorJob, TensorMerger, hookimpl
from ftsdk_plugins.mergers.params import WEIGHT, Weight

if TYPE_CHECKING:
    import torch


class LinearOptions(PluginConfig):
    """Options of the linear merge."""

    normalize: bool = Field(
        True, description="Divide by the sum of the weights (a weighted mean); false gives the weighted sum."
    )


class LinearInput(PluginConfig):
    """Options of each input of a linear merge."""

    weight: Weight = WEIGHT


def linear(tensors: Sequence[torch.Tensor], weights: Sequence[float], normalize: bool) -> torch.Tensor:
    """sum(w_i * x_i) [/ sum(w_i)], accumulated in float32 (float64 for float64 inputs) in input order."""
    import torch

    dtype = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    coefficients = torch.tensor(list(weights), dtype=dtype)
    result = torch.zeros_like(tensors[0], dtype=dtype)
    for tensor, coefficient in zip(tensors, coefficients):
        result.addcmul_(tensor, coefficient)
    if normalize:
        result.div_(coefficients.sum())
    return result


class LinearMerger(TensorMerger):
    """Weighted average of whole models: for two or more close relatives of one base."""

    name = "linear"
    summary = "Linear: weighted average of the models' weights (model soup)"
    Config = LinearOptions
    InputParams = LinearInput
    requires = ("torch",)
    uses_base = False

    config: LinearOptions

    def check_tensor(self, name: str, options: dict[str, Any], params: list[dict[str, Any]]) -> None:
        if options["normalize"] and sum(p["weight"] for p in params) == 0:
            raise ConfigError(f"the weights sum to 0 for tensor {name}, and normalize divides by their sum",
                              hint="change the weights, or set normalize: false")

    def merge_tensor(self, job: TensorJob) -> torch.Tensor:
        return linear(job.inputs, [p["weight"] for p in job.params], job.options["normalize"])


@hookimpl
def register_mergers(register):
    register(LinearMerger)
