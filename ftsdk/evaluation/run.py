"""Evaluate candidates side by side on a held-out file: every input is checked before any model loads."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftsdk.artifacts import check_output_dir
from ftsdk.data.formats import Conversation, Message
from ftsdk.evaluation.backends import Backend
from ftsdk.evaluation.forgetting import (
    GeneralItem,
    check_forgetting,
    general_set,
    score_general,
)
from ftsdk.evaluation.metrics import (
    field_match,
    follows,
    json_metrics,
    label_metrics,
    parse_json,
    rouge_l,
    text_metrics,
)
from ftsdk.evaluation.prompts import candidate_prompt, few_shot_turns, split_reference
from ftsdk.evaluation.results import CandidateResult, Comparison, ExampleResult
from ftsdk.evaluation.spec import CandidateSpec, EvalConfig
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.settings import validate_config


def detect_task(references: list[str]) -> str:
    """``labels`` (few distinct short replies), ``json`` (every reply is a JSON object or list) or ``text``."""
    from ftsdk.data.curate import labels_of

    if labels_of(references):
        return "labels"
    try:
        if all(isinstance(parse_json(r), (dict, list)) for r in references):
            return "json"
    except ValueError:
        pass
    return "text"


class _Plan:
    """The checked inputs of an evaluation: data, task, labels, prompts per candidate, the general set."""

    def __init__(self, config: EvalConfig) -> None:
        from ftsdk.data.loading import load_dataset

        self.config = config
        data = load_dataset(config.data)
        prompts, references = zip(*(split_reference(c) for c in data.examples))
        # the task and the label set come from the whole file, even when only its first rows are evaluated
        self.task = detect_task(list(references)) if config.task == "auto" else config.task
        self.labels = self._labels(list(references))
        self.lines = data.lines[: config.limit]
        self.prompts, self.references = prompts[: config.limit], references[: config.limit]
        self.constrained = self.task == "labels" if config.constrained is None else config.constrained
        if self.constrained and self.task != "labels":
            raise ConfigError(f"constrained scoring needs a label task, and {config.data} is a {self.task} task",
                              hint="drop constrained: true, or set task: labels with labels: [...]")
        self.schema = config.follow.schema() if config.follow else None
        self.kinds = {c.name: c.resolved_kind() for c in config.candidates}
        self.shots = {c.name: few_shot_turns(c.few_shot) if c.few_shot else [] for c in config.candidates}
        self.general: list[GeneralItem] = (
            general_set(config.forgetting.file, per_category=config.forgetting.per_category)
            if config.forgetting.enabled else []
        )
        compared = config.forgetting.compare or [c.name for c in config.candidates if c.name != config.baseline_name]
        self.general_for = {config.baseline_name, *compared} if self.general else set()
        if config.output_dir is not None:
            check_output_dir(config.output_dir, config.overwrite)

    def _labels(self, references: list[str]) -> list[str] | None:
        if self.task != "labels":
            return None
        if self.config.labels:
            unknown = sorted(set(references) - set(self.config.labels))
            if unknown:
                raise ConfigError(f"references {unknown} of {self.config.data} are not in labels",
                                  hint="add them to labels: or leave labels: out")
            return list(self.config.labels)
        distinct = sorted(set(references))
        if len(distinct) > 50 or any(len(r.split()) > 4 for r in distinct):
            raise ConfigError(f"{self.config.data} does not look like a label task ({len(distinct)} distinct replies, "
                              "labels are at most 4 words)", hint="give labels: [...] explicitly, or use task: text / json")
        return distinct

    def prompts_for(self, spec: CandidateSpec) -> list[Conversation]:
        return [candidate_prompt(list(p), spec, self.shots[spec.name]) for p in self.prompts]


def evaluate(config: EvalConfig | Mapping[str, Any] | str | Path, *,
             opened: Mapping[str, Backend] | None = None) -> Comparison:
    """Compare the candidates of ``config`` (a config, its mapping or a YAML path) on its held-out file.

    ``opened`` gives ready backends for some candidates (``Tuner.evaluate`` passes its live model);
    the others are loaded, each base model once.
    """
    from ftsdk.evaluation.loading import CandidatePool

    if isinstance(config, (str, Path)):
        config = EvalConfig.from_yaml(config)
    config = validate_config(EvalConfig, config, where="evaluation")
    opened = dict(opened or {})
    stray = sorted(set(opened) - {c.name for c in config.candidates})
    if stray:
        raise ConfigError(f"opened backends {stray} are no candidates of this evaluation")
    plan = _Plan(config)
    started = datetime.now(timezone.utc)
    pool = CandidatePool()
    results: list[CandidateResult] = []
    general: dict[str, Any] = {}
    try:
        for spec in config.candidates:
            if spec.name in opened:
                result, general[spec.name] = _run_candidate(plan, spec, opened[spec.name])
            else:
                with pool.open(spec) as backend:
                    result, general[spec.name] = _run_candidate(plan, spec, backend)
            results.append(result)
    finally:
        pool.close()
    checks = [
        check_forgetting(general[config.baseline_name], general[name], threshold=config.forgetting.threshold,
                         category_threshold=config.forgetting.category_threshold, base_name=config.baseline_name,
                         tuned_name=name)
        for name in sorted(plan.general_for - {config.baseline_name}, key=[c.name for c in config.candidates].index)
    ]
    from ftsdk.evaluation.report import data_stats, write_eval_report

    comparison = Comparison(plan.task, plan.labels, config.baseline_name, data_stats(config.data), results, checks)
    comparison.manifest = _manifest(config, plan, started)
    if config.output_dir is not None:
        comparison.output_dir = write_eval_report(comparison, config.output_dir, overwrite=config.overwrite,
                                                  worst=config.worst_examples)
    return comparison


def _run_candidate(plan: _Plan, spec: CandidateSpec, backend: Backend) -> tuple[CandidateResult, Any]:
    """Evaluate one candidate, with a progress bar over its stages (generation, scoring, perplexity, general set)."""
    from tqdm.auto import tqdm

    stages = 1 + (plan.task == "labels" and plan.constrained) + plan.config.perplexity + (spec.name in plan.general_for)
    description = f"evaluating {spec.name} ({plan.kinds[spec.name]}, {len(plan.prompts)} examples)"
    with tqdm(total=stages, desc=description, unit="stage", dynamic_ncols=True) as bar:
        return _evaluate_candidate(plan, spec, backend, bar)


def _evaluate_candidate(plan: _Plan, spec: CandidateSpec, backend: Backend, bar: Any) -> tuple[CandidateResult, Any]:
    def stage(name: str) -> None:  # the next stage begins: the one before it is done
        if bar.postfix:
            bar.update()
        bar.set_postfix_str(name)

    began = time.perf_counter()
    prompts = plan.prompts_for(spec)
    references = list(plan.references)
    stage("generating")
    scoring = plan.labels if plan.task == "labels" and plan.constrained else None
    generations, scores = backend.answer(prompts, spec.generation, scoring)  # one prompt pass for both
    replies = [g.text for g in generations]
    result = CandidateResult(spec.name, plan.kinds[spec.name], spec.source, backend.runtime, spec.system_prompt,
                             len(plan.shots[spec.name]) // 2, {})
    metrics = result.metrics
    choices: list[str | None] = [None] * len(replies)
    closeness = [0.0] * len(replies)
    if plan.task == "labels":
        assert plan.labels is not None
        result.labels = label_metrics(replies, references, plan.labels)
        metrics.update(accuracy=result.labels.accuracy, macro_f1=result.labels.macro_f1,
                       invalid_rate=result.labels.invalid_rate)
        if plan.constrained:
            stage("scoring labels")
            assert scores is not None
            choices = [plan.labels[max(range(len(row)), key=row.__getitem__)] for row in scores]
            result.constrained = label_metrics(choices, references, plan.labels)  # type: ignore[arg-type]
            metrics.update(constrained_accuracy=result.constrained.accuracy,
                           constrained_macro_f1=result.constrained.macro_f1)
            closeness = [row[plan.labels.index(ref)] - max(row) for row, ref in zip(scores, references)]
    elif plan.task == "json":
        result.json = json_metrics(replies, references)
        metrics.update(json_valid=result.json.valid_rate, exact_match=result.json.exact_match,
                       field_match=result.json.field_match)
        closeness = [_field_closeness(r, ref) for r, ref in zip(replies, references)]
    else:
        result.text = text_metrics(replies, references)
        metrics.update(exact_match=result.text.exact_match, rouge_l=result.text.rouge_l)
        closeness = rouge_l(replies, references)
    rule = plan.config.follow
    followed = [follows(r, regex=rule.regex, schema=plan.schema) if rule else True for r in replies]
    if rule:
        metrics["follow_rate"] = sum(followed) / len(followed)
    if plan.config.perplexity:
        stage("perplexity")
        whole = [[*p, {"role": "assistant", "content": ref}] for p, ref in zip(prompts, references)]
        scored = backend.perplexity(whole)
        metrics.update(reply_perplexity=scored.reply.value, conversation_perplexity=scored.whole.value)
    general = None
    if spec.name in plan.general_for:
        stage("general set")
        asked = [[{"role": "user", "content": item.prompt}] for item in plan.general]
        options = spec.generation.model_copy(update={"max_new_tokens": plan.config.forgetting.max_new_tokens})
        general = result.general = score_general(plan.general, [g.text for g in backend.generate(asked, options)])
        metrics["general_accuracy"] = general.accuracy
    metrics["latency_s"] = statistics.fmean(g.seconds for g in generations)
    metrics["output_tokens"] = statistics.fmean(g.tokens for g in generations)
    result.examples = [
        ExampleResult(line, _last_user(prompt), ref, reply, choice, _failure(plan, reply, ref, ok), close)
        for line, prompt, ref, reply, choice, ok, close
        in zip(plan.lines, prompts, references, replies, choices, followed, closeness)
    ]
    result.seconds = time.perf_counter() - began
    bar.update()
    return result, general


def _failure(plan: _Plan, reply: str, reference: str, followed: bool) -> str | None:
    """What is wrong with one reply, or None."""
    if not reply.strip():
        return "empty reply"
    if plan.task == "labels":
        assert plan.labels is not None
        verdict = label_metrics([reply], [reference], plan.labels)
        if verdict.invalid_rate:
            return "not a label"
        if not verdict.accuracy:
            return "wrong label"
    elif plan.task == "json":
        try:
            parsed = parse_json(reply)
        except ValueError:
            return "invalid JSON"
        if field_match(parsed, parse_json(reference)) < 1:
            return "wrong fields"
    elif text_metrics([reply], [reference]).exact_match < 1:
        return "differs from the reference"
    return None if followed else "breaks the format rule"


def _field_closeness(reply: str, reference: str) -> float:
    try:
        return field_match(parse_json(reply), parse_json(reference))
    except ValueError:
        return 0.0


def _last_user(prompt: Conversation) -> str:
    users: list[Message] = [m for m in prompt if m["role"] == "user"]
    return users[-1]["content"] if users else ""


def _manifest(config: EvalConfig, plan: _Plan, started: datetime) -> dict[str, Any]:
    from ftsdk.artifacts import library_versions, manifest_header, sha256_file

    return {
        **manifest_header("evaluation", started),
        "config": config.model_dump(mode="json"),
        "data": {"path": str(config.data), "sha256": sha256_file(config.data), "rows": len(plan.prompts)},
        "task": plan.task,
        "labels": plan.labels,
        "libraries": library_versions(),
    }

