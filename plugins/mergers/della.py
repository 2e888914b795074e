"""DELLA: drop task-vector entries at random, keeping large ones more often (MAGPRUNE), then merge."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ftsdk import ConfigError, hookimpl
from ftsdk_plugins.mergers.params import Fraction
from ftsdk_plugins.mergers.task_arithmetic import (
    RandomOptions,
    SparseInput,
    TaskArithmeticMerger,
    normalize_field,
)


class DellaOptions(RandomOptions):
    """Options of DELLA."""

    normalize: bool = normalize_field(True)


class DellaInput(SparseInput):
    """Options of each model of a DELLA merge."""

    epsilon: Fraction = Field(
        0.15, description="Spread of the keep probabilities around density: from density - epsilon for the "
        "smallest entry of a row to density + epsilon for the largest."
    )


class DellaMerger(TaskArithmeticMerger):
    """DELLA-merging (Deep et al., 2024) with TIES sign consensus."""

    name = "della"
    summary = "DELLA: magnitude-ranked random drop of task-vector entries, then TIES sign consensus"
    Config = DellaOptions
    InputParams = DellaInput
    sparsification = "della_magprune"
    consensus = True

    def check_tensor(self, name: str, options: dict[str, Any], params: list[dict[str, Any]]) -> None:
        for index, p in enumerate(params):
            if p["density"] < 1 and not 0 < p["density"] - p["epsilon"] < p["density"] + p["epsilon"] < 1:
                raise ConfigError(
                    f"input {index} of tensor {name}: density {p['density']:g} +/- epsilon {p['epsilon']:g} "
                    "leaves (0, 1)", hint="lower epsilon, or move density away from 0 and 1",
                )


class DellaLinearMerger(DellaMerger):
    """DELLA followed by a weighted sum of the task vectors."""

    name = "della_linear"
    summary = "DELLA-linear: magnitude-ranked random drop of task-vector entries, then their weighted sum"
    Config = RandomOptions
    consensus = False


@hookimpl
def register_mergers(register):
    register(DellaMerger)
    register(DellaLinearMerger)
