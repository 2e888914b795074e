"""Sparsifying a task vector (fine-tune minus base) before it is merged, as mergekit does.

Each function takes the delta (a buffer it may change in place), the input's resolved options, whether
to rescale the kept part to the delta's L1 norm, and the merge's random generator; it returns the
sparsified delta. Magnitude selections keep exactly ``k`` elements; among exactly equal magnitudes at
the cut they choose by index, as mergekit would with a stable sort (its unstable sort leaves it unspecified).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: elements per chunk of elementwise work: bounds scratch memory (chunked random draws equal one draw)
CHUNK = 1 << 22
EPS = 1e-7

Sparsifier = Callable[["torch.Tensor", dict[str, Any], bool, "torch.Generator | None"], "torch.Tensor"]


def _magnitudes(delta: torch.Tensor) -> Iterator[torch.Tensor]:
    """The float32 magnitudes of the flat delta, one chunk at a time in one reused buffer (valid until the next)."""
    import torch

    scratch = torch.empty(min(CHUNK, delta.numel()), dtype=torch.float32)
    for part in delta.view(-1).split(CHUNK):
        yield scratch[: part.numel()].copy_(part).abs_()  # 16-bit values widen exactly, as mergekit's .float()


def kth_largest(delta: torch.Tensor, k: int) -> tuple[float, int, int]:
    """The k-th largest magnitude of ``delta`` (1 <= k <= numel), how many entries are larger, how many equal it.

    Non-negative floats order like their bit patterns, so a count of the top 16 bits (a radix pass)
    narrows the search to one bucket, where ``kthvalue`` finishes: several times faster than a sort.
    """
    import torch

    counts = torch.zeros(1 << 15, dtype=torch.int64)
    for magnitudes in _magnitudes(delta):
        counts += torch.bincount(magnitudes.view(torch.int32) >> 16, minlength=1 << 15)
    at_least = counts.flip(0).cumsum(0).flip(0)  # entries in this bucket or a higher one
    bucket = int((at_least >= k).nonzero().max())
    above = int(at_least[bucket + 1]) if bucket + 1 < at_least.numel() else 0
    candidates = torch.cat([m[(m.view(torch.int32) >> 16) == bucket] for m in _magnitudes(delta)])
    threshold = torch.kthvalue(candidates, candidates.numel() - (k - above) + 1).values
    larger = above + int(torch.count_nonzero(candidates > threshold))
    return float(threshold), larger, int(torch.count_nonzero(candidates == threshold))


def zero_outside_top(delta: torch.Tensor, k: int, *, keep: bool = True, low_index_first: bool = True) -> None:
    """In place, zero every entry but the ``k`` largest magnitudes (``keep=False``: zero exactly those).

    Among entries exactly at the cut, the lowest indices count as larger (``low_index_first=False``: the
    highest), which is what mergekit's descending argsort (ascending sort, for breadcrumbs) picks when made
    stable. Zeros at the cut are left as they are: keeping or dropping a zero changes nothing.
    """
    if k <= 0 or k >= delta.numel():
        if (k <= 0) == keep:
            delta.zero_()
        return
    threshold, larger, equal = kth_largest(delta, k)
    pick = k - larger  # entries at the cut that count among the k
    skip = 0 if low_index_first else equal - pick  # entries at the cut passed over before picking
    whole_cut = threshold == 0 or equal == pick
    for part, magnitudes in zip(delta.view(-1).split(CHUNK), _magnitudes(delta)):
        if whole_cut:
            chosen = magnitudes >= threshold if threshold > 0 else magnitudes > 0
        else:
            chosen = magnitudes > threshold
            at_cut = (magnitudes == threshold).nonzero().flatten()
            passed = min(skip, len(at_cut))
            picked = at_cut[passed : passed + pick]
            chosen[picked] = True
            skip, pick = skip - passed, pick - len(picked)
        part.mul_(chosen if keep else ~chosen)


def apply_mask(delta: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """Zero what the mask drops (in chunks, in place); with ``rescale``, scale the rest back to the L1 norm."""
    before = delta.abs().sum() if rescale else None
    for part, keep in zip(delta.view(-1).split(CHUNK), mask.reshape(-1).split(CHUNK)):
        part.mul_(keep)
    return _rescaled(delta, before)


def _rescaled(masked: torch.Tensor, before: torch.Tensor | None) -> torch.Tensor:
    if before is None:
        return masked
    after = masked.abs().sum()
    if before < EPS or after < EPS:
        return masked
    return masked.mul_(before / after)


def magnitude(delta: torch.Tensor, params: dict[str, Any], rescale: bool, generator: Any) -> torch.Tensor:
    """TIES trimming: keep the ``max(1, int(density * numel))`` largest magnitudes."""
    import torch

    density = params["density"]
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    before = delta.abs().sum() if rescale else None
    zero_outside_top(delta, max(1, int(density * delta.numel())))
    return _rescaled(delta, before)


def magnitude_outliers(delta: torch.Tensor, params: dict[str, Any], rescale: bool, generator: Any) -> torch.Tensor:
    """Model breadcrumbs: drop the ``gamma`` fraction of largest magnitudes and the smallest, keep ``density``."""
    density, gamma = params["density"], params["gamma"]
    if density >= 1:
        return delta
    count = delta.numel()
    keep = int(density * count)
    top = count - max(0, count - keep - int(gamma * count)) - keep  # outliers dropped from the top
    before = delta.abs().sum() if rescale else None
    zero_outside_top(delta, keep + top, low_index_first=False)  # mergekit ranks with an ascending sort here
    zero_outside_top(delta, top, keep=False, low_index_first=False)
    return _rescaled(delta, before)


def _work_dtype(delta: torch.Tensor) -> torch.dtype:
    """Random draws run in bfloat16 for bfloat16 inputs, else in float32 (as mergekit does on CPU)."""
    import torch

    return torch.bfloat16 if delta.dtype == torch.bfloat16 else torch.float32


def random(delta: torch.Tensor, params: dict[str, Any], rescale: bool, generator: Any) -> torch.Tensor:
    """DARE: keep each element with probability ``density`` (one Bernoulli draw per element)."""
    import torch

    density = params["density"]
    if density >= 1:
        return delta
    work = delta.to(_work_dtype(delta))
    before = work.abs().sum() if rescale else None
    for chunk in work.view(-1).split(CHUNK):
        chunk.mul_(torch.bernoulli(torch.full_like(chunk, density), generator=generator))
    return _rescaled(work, before).to(delta.dtype)


def della_magprune(delta: torch.Tensor, params: dict[str, Any], rescale: bool, generator: Any) -> torch.Tensor:
    """DELLA: keep each element with a probability rising with its magnitude's rank in its row."""
    import torch

    density, epsilon = params["density"], params["epsilon"]
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    work_dtype = _work_dtype(delta)
    rows = delta.unsqueeze(0) if delta.dim() < 2 else delta
    order = torch.argsort(rows.abs(), dim=1)
    positions = torch.arange(rows.shape[1]).view(1, -1, *[1] * (rows.dim() - 2)).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions).to(work_dtype) + 1  # inverse permutation
    low, high = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    probabilities = (density - epsilon) + ((ranks - low) / (high - low)).clamp(0, 1) * 2 * epsilon
    mask = torch.bernoulli(probabilities, generator=generator)
    work = rows.to(work_dtype)
    masked = apply_mask(work, mask, rescale)
    return masked.to(delta.dtype).reshape(delta.shape)


SPARSIFIERS: dict[str, Sparsifier] = {
    "magnitude": magnitude,
    "magnitude_outliers": magnitude_outliers,
    "random": random,
    "della_magprune": della_magprune,
}
