"""Model breadcrumbs: drop the largest (outliers) and the smallest task-vector entries, keep the middle."""

from __future__ import annotations

from pydantic import Field

from ftsdk import hookimpl
from ftsdk_plugins.mergers.params import Fraction
from ftsdk_plugins.mergers.task_arithmetic import SparseInput, SparseOptions, TaskArithmeticMerger


class BreadcrumbsInput(SparseInput):
    """Options of each model of a breadcrumbs merge."""

    gamma: Fraction = Field(0.01, description="Fraction of largest-magnitude entries dropped as outliers.")


class BreadcrumbsMerger(TaskArithmeticMerger):
    """Model breadcrumbs (Davari & Belilovsky, 2023): a weighted sum of the trimmed task vectors."""

    name = "breadcrumbs"
    summary = "Breadcrumbs: drop outlier and small task-vector entries, then their weighted sum"
    Config = SparseOptions
    InputParams = BreadcrumbsInput
    sparsification = "magnitude_outliers"


class BreadcrumbsTiesMerger(BreadcrumbsMerger):
    """Model breadcrumbs with TIES sign consensus."""

    name = "breadcrumbs_ties"
    summary = "Breadcrumbs-TIES: drop outlier and small task-vector entries, then TIES sign consensus"
    consensus = True


@hookimpl
def register_mergers(register):
    register(BreadcrumbsMerger)
    register(BreadcrumbsTiesMerger)
