"""Keep-best and early stopping on a logged eval metric, with task metrics computed during training.

The Trainer's own mechanism does the bookkeeping (``metric_for_best_model``, ``load_best_model_at_end``,
``EarlyStoppingCallback``), so the best metric, its step and the patience counter live in the checkpoint's
trainer state and survive a resume. ftsdk adds the task metrics an eval loss does not show: the accuracy of
label replies and the field match of JSON replies, generated greedily on the eval split at each evaluation
with ftsdk's evaluation code (:mod:`ftsdk.evaluation.metrics`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers import EarlyStoppingCallback, TrainerCallback

from ftsdk.plugin.errors import ConfigError

if TYPE_CHECKING:
    from ftsdk.training.recipe import TrainingConfig

#: task metrics ftsdk computes by generating on the eval split: label accuracy and JSON field match
TASK_METRICS = ("accuracy", "field_match")
#: the longest reply (in words) counted as a label by the accuracy metric (as ftsdk's data check does)
LABEL_WORDS = 4


def metric_name(training: TrainingConfig) -> str:
    """The logged key of ``training.eval_metric`` (``accuracy`` -> ``eval_accuracy``)."""
    name = training.eval_metric
    return name if name.startswith("eval_") else f"eval_{name}"


def task_metric(training: TrainingConfig) -> str | None:
    """``accuracy`` or ``field_match`` when the eval metric is one ftsdk computes, else None."""
    bare = metric_name(training).removeprefix("eval_")
    return bare if bare in TASK_METRICS else None


def uses_eval_metric(training: TrainingConfig) -> bool:
    """Whether the run selects or stops on the eval metric (or computes a task metric)."""
    return training.keep_best or training.early_stopping_patience is not None or task_metric(training) is not None


def check_eval_metric(training: TrainingConfig, data_task: str, eval_examples: list[Any] | None) -> None:
    """Refuse, before any model loads, keep-best or early stopping without eval data, or a task metric
    the eval data cannot give."""
    if not uses_eval_metric(training):
        return
    what = "training.keep_best" if training.keep_best else (
        "training.early_stopping_patience" if training.early_stopping_patience is not None
        else f"training.eval_metric {training.eval_metric}")
    if not eval_examples:
        raise ConfigError(f"{what} needs eval data to measure {training.eval_metric} on",
                          hint="pass eval_data= (data.eval in a recipe)")
    metric = task_metric(training)
    if metric is None:
        return
    if data_task != "sft":
        raise ConfigError(f"training.eval_metric {metric} is computed on sft data (conversations), not on "
                          f"{data_task} data", hint="use eval_loss or a metric the objective logs")
    from ftsdk.evaluation.metrics import parse_json
    from ftsdk.evaluation.prompts import split_reference

    references = [split_reference(example)[1] for example in eval_examples]
    if metric == "accuracy":
        long = next((r for r in references if len(r.split()) > LABEL_WORDS), None)
        if long is not None:
            raise ConfigError(f"training.eval_metric accuracy needs label replies (at most {LABEL_WORDS} words) in "
                              f"the eval data, but one reply is {long[:60]!r}",
                              hint="use field_match for JSON replies, or eval_loss")
        return
    for reference in references:
        try:
            parse_json(reference)
        except ValueError:
            raise ConfigError(f"training.eval_metric field_match needs JSON replies in the eval data, but one reply "
                              f"is {reference[:60]!r}", hint="use accuracy for label replies, or eval_loss") from None


def best_arguments(training: TrainingConfig) -> dict[str, Any]:
    """TrainingArguments for keep-best and early stopping (empty when neither is asked for)."""
    if not uses_eval_metric(training):
        return {}
    arguments: dict[str, Any] = {
        "metric_for_best_model": metric_name(training),
        "greater_is_better": training.greater_is_better,  # None: transformers' rule (not a loss: greater)
        "restore_callback_states_from_checkpoint": True,  # the patience counter continues on resume
    }
    if training.keep_best:
        arguments["load_best_model_at_end"] = True
        if not training.save_steps:  # save only on a new best, into the run's work folder
            arguments |= {"save_strategy": "best", "save_total_limit": 1}
    return arguments


def best_callbacks(training: TrainingConfig, eval_examples: list[Any] | None) -> list[Any]:
    """The task-metric callback (first: early stopping reads its metric) and transformers' early stopping."""
    callbacks: list[Any] = []
    metric = task_metric(training)
    if metric is not None and eval_examples:
        callbacks.append(TaskMetrics(metric, eval_examples, training.eval_generation_limit))
    if training.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(training.early_stopping_patience, training.early_stopping_threshold))
    return callbacks


def best_summary(trainer: Any) -> dict[str, Any] | None:
    """What the manifest records: the metric, its best value and step, whether that checkpoint was restored,
    and whether early stopping ended the run."""
    args, state = trainer.args, trainer.state
    if args.metric_for_best_model is None:
        return None
    stopped = any(getattr(cb, "early_stopping_patience_counter", 0) >= getattr(cb, "early_stopping_patience", 1)
                  for cb in trainer.callback_handler.callbacks if isinstance(cb, EarlyStoppingCallback))
    return {
        "metric": args.metric_for_best_model,
        "greater_is_better": bool(args.greater_is_better),
        "value": state.best_metric,
        "step": state.best_global_step or next(  # set by the Trainer only when it saves checkpoints
            (e["step"] for e in state.log_history if e.get(args.metric_for_best_model) == state.best_metric), None),
        "restored": bool(args.load_best_model_at_end and state.best_model_checkpoint),
        "early_stopped": stopped,
        "last_step": state.global_step,
    }


class TaskMetrics(TrainerCallback):
    """At each evaluation, generate greedy replies to the eval prompts and add ``eval_accuracy`` (label replies)
    or ``eval_field_match`` (JSON replies) to the eval metrics, logged like the Trainer's own."""

    def __init__(self, metric: str, eval_examples: list[Any], limit: int | None) -> None:
        from ftsdk.evaluation.prompts import split_reference

        pairs = [split_reference(example) for example in eval_examples[:limit]]
        self.metric = metric
        self.prompts = [prompt for prompt, _ in pairs]
        self.references = [reference for _, reference in pairs]
        self.trainer: Any = None

    def attach(self, trainer: Any) -> None:
        """Called by :func:`ftsdk.training.trainer.run_trainer`: the trainer logs the metric."""
        self.trainer = trainer

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: Any = None, processing_class: Any = None, **kwargs: Any) -> None:
        from ftsdk.models.generation import generate_replies

        tokenizer = processing_class
        longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in self.references)
        replies = generate_replies(model, tokenizer, self.prompts, max_new_tokens=longest + 4,
                                   batch_size=args.per_device_eval_batch_size)
        value = self.score(replies)
        key = f"eval_{self.metric}"
        if metrics is not None:
            metrics[key] = value  # the same dict the Trainer picks the best checkpoint from
        if self.trainer is not None:
            self.trainer.log({key: value})

    def score(self, replies: list[str]) -> float:
        from ftsdk.evaluation.metrics import json_metrics, label_metrics

        if self.metric == "accuracy":
            labels = sorted(set(self.references))
            return label_metrics(replies, self.references, labels).accuracy
        return json_metrics(replies, self.references).field_match
