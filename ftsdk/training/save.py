"""Saving a training run: the output folder (weights, tokenizer, loss curve, manifest, model card, run report).

:func:`save_run` is the ``save`` of ``Tuner.fit``'s setup -> train -> save; it writes through
:func:`ftsdk.artifacts.write_output` and adds the run's own manifest fields (:func:`run_record`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk.artifacts import producer, write_output
from ftsdk.data.loading import DataSet
from ftsdk.models.loading import ALIASES
from ftsdk.training.distributed.config import DistributedConfig
from ftsdk.training.trainer import mixed_precision

if TYPE_CHECKING:
    from ftsdk.training.tuner import Tuner


@dataclass
class TrainedRun:
    """A finished training run, before it is saved."""

    model: Any
    tokenizer: Any
    outcome: Any
    train_set: DataSet
    eval_set: DataSet | None
    seconds: float


def save_run(tuner: Tuner, run: TrainedRun, output: Path, overwrite: bool
             ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Write the trained adapter or model, tokenizer, loss curve, manifest, model card and run report.

    The report's data statistics are those of the data in memory, the data trained on (not re-read); they are
    returned with the manifest.
    """
    from ftsdk.evaluation.report import data_stats, write_training_report
    from ftsdk.training.report import model_card

    sets = {"train": run.train_set, "eval": run.eval_set}
    checks = {split: data_stats(data, run.tokenizer) for split, data in sets.items() if data is not None}
    with write_output(output, kind=tuner.adapter.produces, overwrite=overwrite, card=model_card) as out:
        tuner.adapter.save(run.model, str(out.folder))
        run.tokenizer.save_pretrained(out.folder)
        (out.folder / "log_history.json").write_text(json.dumps(run.outcome.log_history, indent=1),
                                                     encoding="utf-8")
        out.plot_losses(run.outcome.log_history, title=f"{output.name}: loss")
        out.manifest.update(run_record(tuner, run))
        out.manifest["best"] = run.outcome.best  # keep-best / early stopping (ftsdk.training.early_stopping)
        write_training_report(out.folder, out.manifest, checks)
    return out.manifest, checks


def run_record(tuner: Tuner, run: TrainedRun) -> dict[str, Any]:
    """The training output's own manifest fields: what reproduces the run, and how it went."""
    assert tuner._resolved is not None
    placement = tuner._placement()
    alias = ALIASES.get(tuner.model_spec.name)
    return {
        "adapter": producer("adapter", tuner.adapter),
        "objective": producer("objective", tuner.objective),
        "chat_template": tuner.chat_template_name,
        "base_model": {
            "reference": tuner._resolved.reference,
            "origin": tuner._resolved.origin,
            "source": tuner._resolved.source,
            "hub_id": alias.hub_id if alias else (tuner._resolved.source if tuner._resolved.origin == "hub" else None),
            "spec": tuner.model_spec.model_dump(mode="json"),
        },
        "training": tuner.training.model_dump(mode="json"),
        "seed": tuner.training.seed,
        "placement": {
            "device": placement.device,
            "dtype": placement.dtype_name,
            "mixed_precision": mixed_precision(tuner.training, placement),
            "threads": tuner._threads.as_dict() if tuner._threads else None,
        },
        "distributed": distributed_summary(tuner.distributed),
        "data": {"train": run.train_set.summary(), "eval": run.eval_set.summary() if run.eval_set else None},
        "metrics": run.outcome.metrics,
        "train_seconds": round(run.seconds, 2),
    }


def distributed_summary(config: DistributedConfig | None) -> dict[str, Any] | None:
    """The distributed settings a run used, with its world size; None for a single-process run."""
    from ftsdk.training.distributed.world import current_world

    world = current_world()
    if config is None and not world.distributed:
        return None
    return {"world_size": world.size, **(config or DistributedConfig()).model_dump(mode="json")}
