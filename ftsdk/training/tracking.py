"""Experiment tracking: TensorBoard, MLflow and Weights & Biases through transformers' own integrations, plus
what they do not log: ftsdk's resolved settings and data hashes as hyperparameters, and the finished run's
report and manifest as artifacts.

transformers' callbacks log the TrainingArguments, the model config and every logged metric (train loss,
learning rate, eval metrics) per step. ftsdk builds them itself (instead of ``report_to``) so it can name
the TensorBoard folder and reach the runs again once the output folder (with its report) is written.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from ftsdk.plugin.errors import ConfigError

if TYPE_CHECKING:
    from ftsdk.training.recipe import TrainingConfig

#: tracker name -> the import name its transformers integration needs
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
#: files of a finished output folder logged as artifacts (those present)
ARTIFACTS = ("report.html", "report.md", "ftsdk.json", "log_history.json", "loss.png")


def check_trackers(names: list[str]) -> None:
    """Refuse, before any model loads, a tracker whose package is not installed."""
    for name in names:
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise ConfigError(
                f"training.report_to names {name}, which is not installed",
                hint=f'pip install "ftsdk[{name}]"',
            )


def tensorboard_dir(output_dir: Path, run_name: str) -> Path:
    """Where a run's TensorBoard event files go: ``<output_dir's parent>/tensorboard/<run name>``.

    All runs written beside each other share one ``tensorboard`` folder: ``tensorboard --logdir`` on it
    compares them.
    """
    return output_dir.parent / "tensorboard" / run_name


def flatten(value: Any) -> dict[str, Any]:
    """A nested mapping as ``{"a.b.c": leaf}``, other leaves than scalars as JSON strings (trackers take scalars)."""
    from ftsdk.training.checkpoints import flatten as flatten_mapping

    scalar = (bool, int, float, str)
    return {key: leaf if leaf is None or isinstance(leaf, scalar) else json.dumps(leaf, default=str)
            for key, leaf in flatten_mapping(value).items()}


class RunTracking:
    """The trackers of one training run: build its callbacks, then :meth:`finish` once the output is written."""

    def __init__(self, names: list[str], run_name: str, output_dir: Path, hyperparameters: Mapping[str, Any],
                 *, resume: bool = False) -> None:
        self.names = list(names)
        self.run_name = run_name
        self.hyperparameters = flatten(hyperparameters)
        self.log_dir = tensorboard_dir(output_dir, run_name)
        self.extras = _FtsdkExtras(self)
        self.mlflow_run: tuple[str, str] | None = None  # (tracking uri, run id)
        self.wandb_run: Any = None
        if "tensorboard" in self.names and not resume and self.log_dir.exists():
            shutil.rmtree(self.log_dir)  # a fresh run: no events of an earlier one under its name

    @classmethod
    def for_run(cls, training: TrainingConfig, output_dir: Path, hyperparameters: Mapping[str, Any],
                *, resume: bool = False) -> RunTracking | None:
        """The tracking ``training.report_to`` asks for, or None."""
        if not training.report_to:
            return None
        settings = {**hyperparameters, "training": training.model_dump(mode="json")}  # with the benign ones too
        return cls(training.report_to, training.run_name or output_dir.name, output_dir, settings, resume=resume)

    def callbacks(self) -> list[Any]:
        """transformers' integration callbacks, then ftsdk's (which logs the hyperparameters they miss)."""
        from transformers.integrations import MLflowCallback, TensorBoardCallback, WandbCallback

        made: list[Any] = []
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            made.append(TensorBoardCallback(SummaryWriter(log_dir=str(self.log_dir))))
        if "mlflow" in self.names:
            made.append(MLflowCallback())
        if "wandb" in self.names:
            made.append(WandbCallback())
        return [*made, self.extras]

    def finish(self, output: Path, metrics: Mapping[str, float]) -> None:
        """Log the finished output's report and manifest (and the final metrics as hparams) and close the runs."""
        files = [output / name for name in ARTIFACTS if (output / name).is_file()]
        if "tensorboard" in self.names:
            self._finish_tensorboard(output, metrics)
        if self.mlflow_run is not None:
            from mlflow import MlflowClient

            uri, run_id = self.mlflow_run
            client = MlflowClient(tracking_uri=uri)
            for path in files:
                client.log_artifact(run_id, str(path))
        if self.wandb_run is not None:
            import wandb

            artifact = wandb.Artifact(name=re.sub(r"[^\w.-]", "-", f"{self.run_name}-report"), type="ftsdk-run")
            for path in files:
                artifact.add_file(str(path))
            self.wandb_run.log_artifact(artifact)
            self.wandb_run.finish()

    def _finish_tensorboard(self, output: Path, metrics: Mapping[str, float]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        writer = SummaryWriter(log_dir=str(self.log_dir))
        try:
            params = {k: ("none" if v is None else v) for k, v in self.hyperparameters.items()}
            experiment, start, end = hparams(params, {f"final/{k}": v for k, v in metrics.items()})
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            for k, v in metrics.items():
                writer.add_scalar(f"final/{k}", v)
            if (output / "report.md").is_file():
                writer.add_text("ftsdk/report", (output / "report.md").read_text(encoding="utf-8"))
            if (output / "ftsdk.json").is_file():
                manifest = (output / "ftsdk.json").read_text(encoding="utf-8")
                writer.add_text("ftsdk/manifest", f"```json\n{manifest}\n```")
        finally:
            writer.close()


class _FtsdkExtras(TrainerCallback):
    """Logs ftsdk's settings and data hashes as hyperparameters once the integrations opened their runs."""

    def __init__(self, tracking: RunTracking) -> None:
        self.tracking = tracking

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        params = {f"ftsdk.{k}": v for k, v in self.tracking.hyperparameters.items()}
        if "mlflow" in self.tracking.names:
            import mlflow
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

            run = mlflow.active_run()
            if run is not None:
                self.tracking.mlflow_run = (mlflow.get_tracking_uri(), run.info.run_id)
                items = [(k, v) for k, v in params.items() if len(str(v)) <= MAX_PARAM_VAL_LENGTH]
                for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
                    mlflow.log_params(dict(items[start : start + MAX_PARAMS_TAGS_PER_BATCH]))
        if "wandb" in self.tracking.names:
            import wandb

            if wandb.run is not None:
                self.tracking.wandb_run = wandb.run
                wandb.run.config.update(params, allow_val_change=True)
