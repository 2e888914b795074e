"""TIES: trim each task vector to its largest entries, elect a sign per entry, average the agreeing ones."""

from __future__ import annotations

from ftsdk import hookimpl
from ftsdk_plugins.mergers.task_arithmetic import SparseInput, SparseOptions, TaskArithmeticMerger, normalize_field


class TiesOptions(SparseOptions):
    """Options of TIES."""

    normalize: bool = normalize_field(True)


class TiesMerger(TaskArithmeticMerger):
    """TIES-merging (Yadav et al., 2023): for three or more fine-tunes whose changes conflict."""

    name = "ties"
    summary = "TIES: trim task vectors by magnitude, elect signs, average the agreeing entries"
    Config = TiesOptions
    InputParams = SparseInput
    sparsification = "magnitude"
    consensus = True


@hookimpl
def register_mergers(register):
    register(TiesMerger)
