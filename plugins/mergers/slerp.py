"""SLERP: spherical interpolation between a base model and one other, tensor by tensor, as mergekit's ``slerp``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from ftsdk import PluginConfig, Setting, SettingOf, TensorJob, TensorMerger, hookimpl

if TYPE_CHECKING:
    import torch

#: |cos| above which the two tensors count as parallel and are interpolated linearly
DOT_THRESHOLD = 0.9995
EPS = 1e-8
#: elements per chunk: bounds the float32 scratch memory whatever the tensor's size
CHUNK = 1024 * 1024


class SlerpOptions(PluginConfig):
    """Options of SLERP."""

    t: Annotated[Setting, SettingOf(ge=0, le=1)] = Field(
        examples=[0.5],
        description="Required. Interpolation factor in [0, 1]: 0 keeps the base model, 1 the other (values "
        "outside would extrapolate along the arc, which mergekit allows; ftsdk refuses them). A number, a per-layer "
        "gradient such as [0, 0.5, 1] (embeddings, final norm and lm_head take the first value), or filtered "
        "entries such as [{filter: self_attn, value: [0, 1]}, {filter: mlp, value: [1, 0]}, {value: 0.5}].",
    )


class SlerpInput(PluginConfig):
    """SLERP takes no per-input options."""


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Interpolate along the great circle between the flattened tensors (linearly when nearly parallel).

    Computed in float32 (float64 for float64 inputs), in chunks of :data:`CHUNK` elements.
    """
    import torch

    dtype = torch.float64 if v0.dtype == torch.float64 else torch.float32
    a, b = v0.reshape(-1), v1.reshape(-1)
    if not a.numel():
        return v0.clone()
    factor = torch.tensor(t, dtype=dtype)
    starts = range(0, a.numel(), CHUNK)

    def norm(v: torch.Tensor) -> torch.Tensor:  # a norm of chunk norms, as mergekit computes it
        parts = [torch.linalg.vector_norm(v[s : s + CHUNK].to(dtype)) for s in starts]
        total = torch.linalg.vector_norm(torch.stack(parts))
        return torch.where(total > EPS, total, 1)

    norm_a, norm_b = norm(a), norm(b)
    dot = torch.stack(
        [((a[s : s + CHUNK].to(dtype) / norm_a) * (b[s : s + CHUNK].to(dtype) / norm_b)).sum() for s in starts]
    ).sum().clamp(-1, 1)
    parallel = dot.abs() > DOT_THRESHOLD
    theta = torch.acos(torch.where(parallel, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(parallel, 1 - factor, torch.sin((1 - factor) * theta) / sin_theta)
    coef_b = torch.where(parallel, factor, torch.sin(factor * theta) / sin_theta)
    result = torch.empty_like(a)
    for s in starts:
        result[s : s + CHUNK] = coef_a * a[s : s + CHUNK].to(dtype) + coef_b * b[s : s + CHUNK].to(dtype)
    return result.reshape(v0.shape)


class SlerpMerger(TensorMerger):
    """Smooth interpolation between exactly two models, per tensor."""

    name = "slerp"
    summary = "SLERP: spherical interpolation between the base model and one other, per tensor"
    Config = SlerpOptions
    InputParams = SlerpInput
    requires = ("torch",)
    min_inputs = 1
    max_inputs = 1

    config: SlerpOptions

    def merge_tensor(self, job: TensorJob) -> torch.Tensor:
        assert job.base is not None
        return slerp(job.options["t"], job.base, job.inputs[0])


@hookimpl
def register_mergers(register):
    register(SlerpMerger)
