"""The run report: ``report.html`` (self-contained) and ``report.md`` (for the model card), with their figures.

``write_eval_report`` serves ``ftsdk eval`` / ``Tuner.evaluate``; ``write_training_report`` serves every ``Tuner.fit``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ftsdk.evaluation.document import Code, Document, Figure, Heading, Paragraph, Table
from ftsdk.evaluation.results import METRICS, CandidateResult, Comparison, ExampleResult

FIGURES = "figures"
#: longest prompt or reply text shown in the worst-examples tables
CLIP = 160
PERPLEXITY_NOTE = ("Perplexity of the reference replies counts only the tokens of each reference reply (through its "
                   "end-of-turn marker), given its prompt: the tokens assistant-only tuning trains. Perplexity, whole "
                   "conversation also counts the prompt's tokens, which a tuned model is not taught to predict, so it "
                   "can rise while the replies get likelier.")


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= CLIP else flat[: CLIP - 1] + "…"


def _write(document: Document, folder: Path) -> None:
    (folder / "report.html").write_text(document.html(), encoding="utf-8")
    (folder / "report.md").write_text(document.markdown(folder), encoding="utf-8")


def _figure(path: Path | None, caption: str) -> Figure | None:
    return Figure(path, caption) if path is not None else None


# -- evaluation ------------------------------------------------------------------------------------


def write_eval_report(comparison: Comparison, output_dir: str | Path, *, overwrite: bool = False,
                      worst: int = 5) -> Path:
    """Write the comparison's report, figures, ``results.json`` and manifest atomically into ``output_dir``."""
    from ftsdk.artifacts import write_output

    target = Path(output_dir)
    with write_output(target, kind="evaluation", overwrite=overwrite, libraries=False) as out:
        (out.folder / FIGURES).mkdir()
        document = eval_document(comparison, out.folder, worst=worst)
        _write(document, out.folder)
        (out.folder / "results.json").write_text(json.dumps(comparison.as_dict(), indent=1, default=str),
                                                 encoding="utf-8")
        out.manifest = {**comparison.manifest, "report": "report.html"}  # the evaluation's own (see run.py)
    return target


def eval_document(comparison: Comparison, folder: Path, *, worst: int = 5) -> Document:
    """The evaluation report; its figures are drawn into ``folder/figures``."""
    from ftsdk.evaluation.figures import (
        confusion_figure,
        forgetting_figure,
        metrics_figure,
    )
    from ftsdk.training.report import plot_losses

    figures = folder / FIGURES
    data = comparison.data
    doc = Document(f"Evaluation on {Path(data['path']).name}")
    doc.add(Paragraph(f"{len(comparison.candidates[0].examples)} held-out examples, {comparison.task} task"
                      + (f" ({', '.join(comparison.labels)})" if comparison.labels else "")
                      + f"; deltas are against {comparison.baseline}. Created {comparison.manifest.get('created', '')}."))
    doc.add(Heading("Candidates"), _candidates_table(comparison))
    header, rows = comparison.table()
    doc.add(Heading("Metrics"), Table(header, rows, _marks(comparison)))
    if "reply_perplexity" in comparison.metric_names():
        doc.add(Paragraph(PERPLEXITY_NOTE))
    doc.add(_figure(metrics_figure(comparison, figures / "metrics.png"), "rate metrics per candidate"))
    if comparison.forgetting:
        doc.add(Heading("Forgetting check"))
        for check in comparison.forgetting:
            doc.add(Paragraph(check.summary(), "flag" if check.forgot else "ok"))
        base = comparison.forgetting[0]
        names = [base.base] + [c.tuned for c in comparison.forgetting]
        scores = [base.base_score] + [c.tuned_score for c in comparison.forgetting]
        doc.add(Table(["category", *names],
                      [[category, *(f"{s.by_category[category]:.0%}" for s in scores)]
                       for category in base.base_score.by_category]
                      + [["overall", *(f"{s.accuracy:.1%}" for s in scores)]]))
        doc.add(Figure(forgetting_figure(comparison.forgetting, figures / "forgetting.png"),
                       "general-purpose set per category"))
    labelled = [c for c in comparison.candidates if c.labels is not None]
    if labelled:
        doc.add(Heading("Confusion matrices"))
        for result in labelled:
            panels = [("generated", result.labels)]
            if result.constrained is not None:
                panels.append(("likeliest label", result.constrained))
            path = confusion_figure(panels, figures / f"confusion-{_slug(result.name)}.png")
            doc.add(Figure(path, f"{result.name}: reference label (rows) against reply (columns)"))
    curves = [(c, Path(c.source) / "log_history.json") for c in comparison.candidates if c.kind == "adapter"]
    curves = [(c, p) for c, p in curves if p.is_file()]
    if curves:
        doc.add(Heading("Training loss"))
        for result, history in curves:
            plotted = plot_losses(json.loads(history.read_text(encoding="utf-8")),
                                  figures / f"loss-{_slug(result.name)}.png", title=f"{result.name}: loss")
            doc.add(_figure(plotted, f"{result.name}: train and eval loss"))
    focus = comparison.candidates[-1]
    doc.add(Heading(f"Where {focus.name} still fails"), *_worst_blocks(focus, worst))
    doc.add(Heading("Held-out data"), *_data_blocks(data))
    doc.add(Heading("Manifest"), Code(json.dumps(comparison.manifest, indent=1, default=str), "ftsdk.json"))
    return doc


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)


def _candidates_table(comparison: Comparison) -> Table:
    rows = [[c.name + (" (baseline)" if c.name == comparison.baseline else ""), c.kind, c.runtime, c.source,
             _clip(c.system_prompt) if c.system_prompt else "", str(c.few_shot), f"{c.seconds:.0f}s"]
            for c in comparison.candidates]
    return Table(["name", "kind", "runtime", "source", "system prompt", "few-shot", "time"], rows)


def _marks(comparison: Comparison) -> list[list[str]]:
    """Colour each delta cell by whether the change is good for that metric."""
    others = [c.name for c in comparison.candidates if c.name != comparison.baseline]
    marks = []
    for metric in comparison.metric_names():
        higher = METRICS[metric][1]
        row = [""] * (1 + len(comparison.candidates))
        for name in others:
            change = comparison.delta(name, metric)
            good = None if change is None or higher is None or abs(change) < 1e-12 else (change > 0) == higher
            row.append("" if good is None else "up" if good else "down")
        marks.append(row)
    return marks


def failure_groups(examples: list[ExampleResult]) -> dict[str, list[ExampleResult]]:
    """Failing examples by failure mode, most frequent mode first, worst (least close) example first."""
    groups: dict[str, list[ExampleResult]] = defaultdict(list)
    for example in examples:
        if example.failure is not None:
            groups[example.failure].append(example)
    return {mode: sorted(items, key=lambda e: e.closeness)
            for mode, items in sorted(groups.items(), key=lambda kv: -len(kv[1]))}


def _worst_blocks(result: CandidateResult, worst: int) -> list[Paragraph | Table]:
    groups = failure_groups(result.examples)
    if not groups:
        return [Paragraph(f"{result.name} answered every held-out example right.", "ok")]
    blocks: list[Paragraph | Table] = [Paragraph(
        f"{sum(len(v) for v in groups.values())} of {len(result.examples)} examples fail: "
        + ", ".join(f"{mode} {len(items)}" for mode, items in groups.items()) + ".")]
    for mode, items in groups.items():
        shown = items[:worst]
        blocks.append(Paragraph(f"{mode}: {len(items)} (showing {len(shown)})"))
        header = ["line", "prompt", "reference", "reply"] + (["likeliest label"] if shown[0].choice else [])
        blocks.append(Table(header, [[str(e.line), _clip(e.prompt), _clip(e.reference), _clip(e.reply) or "(empty)"]
                                     + ([e.choice] if e.choice else []) for e in shown]))
    return blocks


def _data_blocks(data: dict[str, Any]) -> list[Paragraph | Table]:
    stats = data.get("stats", {})
    blocks: list[Paragraph | Table] = [Paragraph(
        f"{data['path']}: {data['rows']} rows, {data['format']} format, sha256 {data['sha256'][:12]}; "
        f"exact-duplicate groups {data['exact_duplicate_groups']}, near-duplicate groups "
        f"{data['near_duplicate_groups']}, contradictions {data['contradictions']}"
        + (", personal data: " + ", ".join(f"{k} {v}" for k, v in data["pii_rows"].items()) if data["pii_rows"] else "")
        + ".")]
    if "labels" in stats:
        blocks.append(Table(["label", "rows"], [[k, str(v)] for k, v in stats["labels"].items()]))
    if "tokens" in stats:
        blocks.append(Table(["tokens per row", "value"], [[k, str(v)] for k, v in stats["tokens"].items()]))
    return blocks


# -- training --------------------------------------------------------------------------------------


def data_stats(data: Any, tokenizer: Any = None, task: str = "sft", columns: Any = None) -> dict[str, Any]:
    """What ``ftsdk data check`` says about a data source of ``task``, or a loaded :class:`ftsdk.data.loading.DataSet`
    (read again from nothing); token counts too, given a ``tokenizer``."""
    from ftsdk.data.curate import analyse, check
    from ftsdk.data.loading import DataSet

    loaded = isinstance(data, DataSet)
    report = analyse(data, tokenizer) if loaded else check(data, task, tokenizer=tokenizer, columns=columns)
    return {"path": str(data.path if loaded else data), "rows": report.rows, "format": report.format, "sha256": report.sha256,
            "stats": report.stats, "exact_duplicate_groups": len(report.exact_duplicates),
            "near_duplicate_groups": len(report.near_duplicates), "contradictions": len(report.contradictions),
            "pii_rows": {kind: len(lines) for kind, lines in report.pii.items()}}


def write_training_report(folder: Path, manifest: dict[str, Any], checks: dict[str, Any] | None = None, *,
                          tokenizer: Any = None, task: str = "sft") -> None:
    """``report.html`` and ``report.md`` of a training run, into its (not yet renamed) output ``folder``.

    The loss curves are the run's ``loss.png`` (train and eval loss). The data statistics are ``checks``
    (:func:`data_stats` by split: ``Tuner.fit`` passes those of the data it trained on); without them, the data
    files the manifest names are checked now (a report for a finished run's folder).
    """
    doc = Document(f"Training run: {manifest['adapter']['name']} + {manifest['objective']['name']} on "
                   f"{manifest['base_model']['reference']}")
    doc.add(Paragraph(f"Created {manifest['created']} with ftsdk {manifest['ftsdk_version']}; "
                      f"{manifest['train_seconds']:.0f}s on {manifest['placement']['device']} "
                      f"({manifest['placement']['dtype']})."))
    doc.add(Heading("Loss curves"))
    plotted = folder / manifest["loss_plot"] if manifest.get("loss_plot") else None
    doc.add(_figure(plotted, "train and eval loss per optimizer step")
            or Paragraph("Nothing was logged (too few steps for logging_steps)."))
    doc.add(Heading("Metrics"),
            Table(["metric", "value"], [[k, f"{v:.4g}"] for k, v in sorted(manifest["metrics"].items())]))
    for split, info in manifest["data"].items():
        if info:
            stats = (checks or {}).get(split) or data_stats(info.get("hub") or Path(info["path"]), tokenizer, task,
                                                            info.get("columns"))
            doc.add(Heading(f"Data: {split}"), *_data_blocks(stats))
    doc.add(Heading("Settings"), Table(["setting", "value"],
                                       [[k, str(v)] for k, v in manifest["training"].items() if v is not None]))
    doc.add(Heading("Manifest"), Code(json.dumps(manifest, indent=1, default=str), "ftsdk.json"))
    _write(doc, folder)
