"""Conformance checks that train: an adapter or an objective runs a few steps through ``Tuner`` on a tiny model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftsdk.plugin.kinds import Plugin
from ftsdk.testing.kit import (
    PluginRef,
    active,
    fail,
    plugin_class,
    require_installed,
    sample_ids,
)

#: a few quick steps on the tiny model: enough to move the weights, seconds on a CPU
QUICK_TRAINING: dict[str, Any] = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "max_length": 64,
                                  "logging_steps": 1, "threads": 1, "seed": 0}
#: a small LoRA for objective checks
QUICK_LORA: dict[str, Any] = {"r": 4, "dropout": 0.0}


def _base_model(model_dir: Path | None, tmp_path: Path, architecture: str = "llama") -> Path:
    if model_dir is not None:
        return Path(model_dir)
    from ftsdk.testing.tiny import TinySpec, build_tiny_model

    return build_tiny_model(tmp_path / f"tiny-{architecture}", TinySpec(), architecture)


def _data(task: str, data: str | Path | None, tmp_path: Path) -> Path:
    if data is not None:
        return Path(data)
    from ftsdk.testing.datasets import rows_of_task
    from ftsdk.testing.tiny import write_jsonl

    return write_jsonl(tmp_path / f"{task}.jsonl", rows_of_task(task, 16, seed=1))


def _logits(model: Any, tokenizer: Any) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        output = model(input_ids=sample_ids(tokenizer))
    return output.logits.float()


class _Watch:
    """Snapshots the trainable weights ``wrap`` leaves, and checks what ``train`` returns."""

    def __init__(self, tuner: Any, checked: type[Plugin]) -> None:
        self.checked = checked
        self.before: dict[str, Any] = {}
        wrap, train = tuner.adapter.wrap, tuner.objective.train

        def watched_wrap(model: Any) -> Any:
            wrapped = wrap(model)
            self.before = {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
            if not self.before:
                raise fail(checked.kind, checked.name, "after wrap() no parameter requires a gradient, so nothing "
                           "trains", "set requires_grad on the weights the adapter trains (and return the model)")
            return wrapped

        def watched_train(job: Any) -> Any:
            from ftsdk.plugin.jobs import TrainOutcome

            outcome = train(job)
            if not isinstance(outcome, TrainOutcome):
                raise fail("objective", tuner.objective.name, f"train() returned {type(outcome).__name__}",
                           "return ftsdk.plugin.jobs.TrainOutcome(metrics, log_history) (run_trainer does)")
            return outcome

        tuner.adapter.wrap, tuner.objective.train = watched_wrap, watched_train

    def check_moved(self, model: Any) -> None:
        import torch

        cls = self.checked
        now = dict(model.named_parameters())
        moved = [n for n, before in self.before.items() if n in now and not torch.equal(now[n].detach(), before)]
        if not moved:
            raise fail(cls.kind, cls.name, f"training changed none of the {len(self.before)} trainable weights",
                       "train the model the job holds (job.model), with a non-zero learning rate")


def _check_fit(cls: type[Plugin], tuner: Any, data: Path, out: Path, tolerance: float) -> Any:
    watch = _Watch(tuner, cls)
    result = tuner.fit(data, output_dir=out)
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    if not losses or not all(math.isfinite(loss) for loss in losses):
        raise fail(cls.kind, cls.name, f"the log history holds no finite loss: {losses}",
                   "log the training loss (a transformers Trainer does, with logging_steps) and keep it finite")
    watch.check_moved(tuner.model)
    _check_reloads(cls, tuner, out, tolerance)
    return result


def _check_reloads(cls: type[Plugin], tuner: Any, out: Path, tolerance: float) -> None:
    """Its output folder reloads (``Tuner.load``, in the format its consumer reads) and computes as trained."""
    import torch

    from ftsdk import Tuner

    trained = _logits(tuner.model, tuner.tokenizer)
    produces = tuner.adapter.produces
    marker = "adapter_config.json" if produces == "adapter" else "config.json"
    if not (out / marker).is_file():
        raise fail(cls.kind, cls.name, f"the output holds no {marker} though the adapter produces '{produces}'",
                   "save() must write the format `produces` names: a PEFT adapter folder or a full model folder")
    try:
        reloaded = _logits(Tuner.load(out).model, tuner.tokenizer)
    except Exception as exc:
        raise fail(cls.kind, cls.name, f"the output folder does not reload: {type(exc).__name__}: {exc}",
                   "save() must write what its consumer loads (model.save_pretrained(path))") from exc
    if reloaded.shape != trained.shape or not torch.allclose(reloaded, trained, rtol=tolerance, atol=tolerance):
        difference = (reloaded - trained).abs().max().item() if reloaded.shape == trained.shape else "shape"
        raise fail(cls.kind, cls.name, f"the reloaded output computes differently from the trained model "
                   f"(max logit difference {difference}, tolerance {tolerance})",
                   "save() must write every trained weight (all that wrap() made trainable)")


def check_adapter_trains(
    plugin: PluginRef,
    config: Mapping[str, Any] | None,
    tmp_path: str | Path,
    *,
    model_dir: str | Path | None = None,
    data: str | Path | None = None,
    objective: str = "sft",
    training: Mapping[str, Any] | None = None,
    tolerance: float = 1e-4,
    architecture: str = "llama",
) -> Any:
    """The adapter trains a few steps through ``Tuner`` and its output reloads as trained.

    Checked: ``wrap`` leaves trainable weights and training moves them; a finite loss is logged; the output
    holds what ``produces`` says (a PEFT adapter or a full model folder), reloads with ``Tuner.load``
    and computes the same logits as the trained model (within ``tolerance``; quantized bases need more).
    ``model_dir`` defaults to a fresh tiny model of ``architecture`` (one of
    :data:`ftsdk.testing.tiny.TINY_ARCHITECTURES`: llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3), ``data``
    to chat rows of a tiny task. Returns the :class:`ftsdk.FitResult`.
    """
    from ftsdk import Tuner

    cls = plugin_class(plugin, "adapter")
    require_installed(cls)
    tmp_path = Path(tmp_path)
    with active(cls):
        tuner = Tuner(str(_base_model(Path(model_dir) if model_dir else None, tmp_path, architecture)),
                      adapter=cls.name,
                      adapter_config=dict(config or {}), objective=objective,
                      training={**QUICK_TRAINING, **(training or {})})
        task = tuner.objective.data_task
        return _check_fit(cls, tuner, _data(task, data, tmp_path), tmp_path / f"{cls.name}-trained", tolerance)


def check_objective_trains(
    plugin: PluginRef,
    config: Mapping[str, Any] | None,
    tmp_path: str | Path,
    *,
    model_dir: str | Path | None = None,
    data: str | Path | None = None,
    adapter: str = "lora",
    adapter_config: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    tolerance: float = 1e-4,
) -> Any:
    """The objective trains a small LoRA a few steps through ``Tuner`` on data of its ``data_task``.

    Checked: ``train`` returns a ``TrainOutcome`` with a finite logged loss; the trainable weights move; the
    output reloads with ``Tuner.load`` and computes as trained. ``data`` defaults to rows of the objective's
    ``data_task`` (:func:`ftsdk.testing.datasets.rows_of_task`). Returns the :class:`ftsdk.FitResult`.
    """
    from ftsdk import Tuner

    cls = plugin_class(plugin, "objective")
    require_installed(cls)
    tmp_path = Path(tmp_path)
    with active(cls):
        tuner = Tuner(str(_base_model(Path(model_dir) if model_dir else None, tmp_path)), adapter=adapter,
                      adapter_config=dict(QUICK_LORA if adapter_config is None else adapter_config),
                      objective=cls.name, objective_config=dict(config or {}),
                      training={**QUICK_TRAINING, **(training or {})})
        return _check_fit(cls, tuner, _data(cls.data_task, data, tmp_path), tmp_path / f"{cls.name}-trained",
                          tolerance)
