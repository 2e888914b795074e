"""DARE: drop task-vector entries at random and rescale the rest, then add (dare_linear) or TIES-elect (dare_ties)."""

from __future__ import annotations

from ftsdk import hookimpl
from ftsdk_plugins.mergers.task_arithmetic import RandomOptions, SparseInput, TaskArithmeticMerger


class DareTiesMerger(TaskArithmeticMerger):
    """DARE (Yu et al., 2023) with TIES sign consensus: for merging fine-tunes with diverse skills."""

    name = "dare_ties"
    summary = "DARE-TIES: random drop and L1 rescale of task vectors, then TIES sign consensus"
    Config = RandomOptions
    InputParams = SparseInput
    sparsification = "random"
    consensus = True


class DareLinearMerger(TaskArithmeticMerger):
    """DARE (Yu et al., 2023) followed by a weighted sum of the task vectors."""

    name = "dare_linear"
    summary = "DARE-linear: random drop and L1 rescale of task vectors, then their weighted sum"
    Config = RandomOptions
    InputParams = SparseInput
    sparsification = "random"


@hookimpl
def register_mergers(register):
    register(DareTiesMerger)
    register(DareLinearMerger)
