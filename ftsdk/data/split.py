"""Seeded, optionally stratified splits that keep groups (duplicates) inside one split."""

from __future__ import annotations

import random
from collections import defaultdict


def split_indices(
    count: int,
    fractions: dict[str, float],
    *,
    seed: int = 42,
    strata: list[str] | None = None,
    groups: list[list[int]] = (),
) -> dict[str, list[int]]:
    """Assign ``range(count)`` to named splits in the given proportions.

    Members of one group (e.g. near-duplicates) always land in the same split, so nothing leaks
    from training into evaluation. With ``strata`` (a label per index) every split keeps the
    label proportions, up to rounding.
    """
    if abs(sum(fractions.values()) - 1) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    in_group = {i for group in groups for i in group}
    units = [list(g) for g in groups] + [[i] for i in range(count) if i not in in_group]
    by_stratum: dict[str, list[list[int]]] = defaultdict(list)
    for unit in units:
        by_stratum[strata[unit[0]] if strata else ""].append(unit)
    rng = random.Random(seed)
    assigned: dict[str, list[int]] = {name: [] for name in fractions}
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum])
        rng.shuffle(members)
        total = sum(len(u) for u in members)
        targets = _largest_remainder(total, fractions)
        filled = dict.fromkeys(fractions, 0)
        for unit in members:  # each unit goes to the split furthest below its target
            name = max(fractions, key=lambda n: (targets[n] - filled[n], fractions[n]))
            assigned[name] += unit
            filled[name] += len(unit)
    return {name: sorted(indices) for name, indices in assigned.items()}


def _largest_remainder(total: int, fractions: dict[str, float]) -> dict[str, int]:
    exact = {name: total * f for name, f in fractions.items()}
    counts = {name: int(value) for name, value in exact.items()}
    leftover = total - sum(counts.values())
    for name in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[:leftover]:
        counts[name] += 1
    return counts
