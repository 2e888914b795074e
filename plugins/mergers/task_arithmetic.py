"""Generalized task arithmetic: the one implementation behind task_arithmetic, TIES, DARE, breadcrumbs and DELLA.

Per tensor, as mergekit computes it: each model's task vector (model minus base) is sparsified (or not),
multiplied by its weight; with sign consensus (TIES) only the entries agreeing with the sign of the
weighted sum (0 counts as +) are kept; the kept entries are summed, divided by the sum of the weights
(per entry, of the agreeing models, with consensus) when ``normalize``, scaled by ``lambda`` and added
to the base. The variants are configurations of :class:`TaskArithmeticMerger` (see ties.py, dare.py...).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from ftsdk import PluginConfig, Setting, SettingOf, TensorJob, TensorMerger, hookimpl
from ftsdk_plugins.mergers.params import WEIGHT, Density, Weight
from ftsdk_plugins.mergers.sparsify import SPARSIFIERS, Sparsifier

if TYPE_CHECKING:
    import torch

RANDOM_SPARSIFIERS = {"random", "della_magprune"}
#: elements mixed at a time: bounds the scratch memory of the elementwise part
CHUNK = 1 << 22


def normalize_field(default: bool) -> Any:
    return Field(default, description="Divide the merged task vector by the sum of the weights (with sign consensus: "
                 "per entry, of the models that agree with the elected sign).")


def rescale_field(default: bool) -> Any:
    return Field(default, description="Scale each sparsified task vector back to its L1 norm before sparsification.")


class TaskArithmeticOptions(PluginConfig):
    """Options of task arithmetic and its variants."""

    normalize: bool = normalize_field(False)
    lambda_: Annotated[Setting, SettingOf()] = Field(
        1.0, alias="lambda", description="Scale of the merged task vector, applied last."
    )
    int8_mask: bool = Field(False, description="Accepted for mergekit files: it only changes mergekit's memory use.")


class SparseOptions(TaskArithmeticOptions):
    """Options of the variants that sparsify the task vectors."""

    rescale: bool = rescale_field(False)


class RandomOptions(SparseOptions):
    """Options of the variants that sparsify at random (DARE, DELLA)."""

    rescale: bool = rescale_field(True)
    seed: int | None = Field(
        None, ge=0, examples=[0], description="Seed of the random draws; none draws one (recorded in ftsdk.json). With the same "
        "seed as mergekit's --random-seed, the draws are mergekit's."
    )


class TaskInput(PluginConfig):
    """Options of each model of a task-arithmetic merge."""

    weight: Weight = WEIGHT


class SparseInput(TaskInput):
    """Options of each model of a sparsifying merge."""

    density: Density = Field(
        1.0, description="Fraction of the task vector's entries kept (per tensor), in (0, 1]. 0 is refused: it "
        "would drop the whole task vector, which weight 0 says plainly.",
    )


def merge_task_vectors(job: TensorJob, sparsify: Sparsifier | None, consensus: bool) -> torch.Tensor:
    """base + lambda * mix(sparsified, weighted task vectors), in the inputs' (compute) dtype.

    The task vectors are whole-tensor work (sparsification ranks or rescales a whole tensor); mixing is
    elementwise and runs in chunks, into the base's buffer. Sums over the models accumulate in float32
    for 16-bit dtypes and round once, as torch's reductions (and so mergekit) do.
    """
    import torch

    base = job.base
    assert base is not None
    rescale = bool(job.options.get("rescale", False))
    deltas, weights = [], []
    for tensor, params in zip(job.inputs, job.params):
        delta = tensor.sub_(base)
        if sparsify is not None:
            delta = sparsify(delta, params, rescale, job.generator)
        weight = torch.tensor(params["weight"], dtype=delta.dtype)
        deltas.append(delta.mul_(weight).view(-1))
        weights.append(weight)
    if not deltas:
        return base
    total_weight = torch.stack(weights).sum()
    mix = _elect if consensus else _add
    for start in range(0, base.numel(), CHUNK):
        parts = [delta[start : start + CHUNK] for delta in deltas]
        mixed, divisor = mix(parts, weights, total_weight)
        if job.options["normalize"]:
            mixed.div_(divisor)
        if job.options["lambda_"] != 1:
            mixed.mul_(job.options["lambda_"])
        base.view(-1)[start : start + CHUNK].add_(mixed)
    return base


def _wide(dtype: torch.dtype) -> torch.dtype:
    import torch

    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:
    total = parts[0].to(_wide(parts[0].dtype), copy=True)
    for part in parts[1:]:
        total.add_(part)
    return total


def _add(
    parts: list[torch.Tensor], weights: list[torch.Tensor], total_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the task vectors; divisor: the sum of the weights (1 if it is about 0)."""
    import torch

    divisor = total_weight if total_weight.abs() >= 1e-8 else torch.ones_like(total_weight)
    return _sum(parts).to(parts[0].dtype), divisor


def _elect(
    parts: list[torch.Tensor], weights: list[torch.Tensor], total_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES sign consensus: sum of the entries whose sign is the sign of their sum (0 counts as +);
    divisor: the sum of those entries' weights (1 where none agrees). Consumes ``parts``."""
    sign = _sum(parts).sign_().add_(0.5).sign_()  # +1 where the sum is >= 0, else -1
    mixed = sign.new_zeros(sign.shape)
    divisor = sign.new_zeros(sign.shape)
    for part, weight in zip(parts, weights):
        agreeing = part.mul_(sign).clamp_(min=0)  # |entry| where it agrees, else 0
        mixed.add_(agreeing)
        divisor.add_(agreeing.sign_(), alpha=float(weight))
    dtype = parts[0].dtype
    divisor = divisor.to(dtype)
    return mixed.mul_(sign).to(dtype), divisor.masked_fill_(divisor == 0, 1)


class TaskArithmeticMerger(TensorMerger):
    """Add the weighted task vectors of fine-tunes of one base (Ilharco et al., 2022)."""

    name = "task_arithmetic"
    summary = "Task arithmetic: base + lambda x weighted sum of the task vectors"
    Config = TaskArithmeticOptions
    InputParams = TaskInput
    requires = ("torch",)
    #: key of :data:`SPARSIFIERS` applied to each task vector, or None
    sparsification: ClassVar[str | None] = None
    #: TIES sign election before the weighted mean
    consensus: ClassVar[bool] = False

    def random_seed(self) -> int | None:
        if self.sparsification not in RANDOM_SPARSIFIERS:
            return None
        seed = getattr(self.config, "seed", None)
        return seed if seed is not None else secrets.randbits(31)

    def merge_tensor(self, job: TensorJob) -> torch.Tensor:
        sparsify = SPARSIFIERS[self.sparsification] if self.sparsification else None
        return merge_task_vectors(job, sparsify, self.consensus)


@hookimpl
def register_mergers(register):
    register(TaskArithmeticMerger)
