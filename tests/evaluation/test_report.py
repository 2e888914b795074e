"""The run report without a model: files, tables, failure groups, and rendering in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from ftsdk.evaluation.forgetting import GeneralItem, check_forgetting, score_general
from ftsdk.evaluation.metrics import label_metrics
from ftsdk.evaluation.report import (
    data_stats,
    failure_groups,
    write_eval_report,
    write_training_report,
)
from ftsdk.evaluation.results import CandidateResult, Comparison, ExampleResult
from ftsdk.testing.tiny import task_rows, write_jsonl
from ftsdk.training.report import plot_losses

LABELS = ["billing", "sales", "shipping"]
GOLD = ["billing", "sales", "shipping", "billing"]
#: a script the test adds to a copy of the report: it writes each picture's decoded size into the DOM
MEASURE = """<script>window.addEventListener('load', () => { for (const img of document.images) {
  const p = document.createElement('p'); p.className = 'measured';
  p.textContent = img.naturalWidth + 'x' + img.naturalHeight; document.body.appendChild(p); } });</script>"""


def _candidate(name: str, replies: list[str], general: list[str], items: list[GeneralItem]) -> CandidateResult:
    labels = label_metrics(replies, GOLD, LABELS)
    failures = [None if r == g else "not a label" if r not in LABELS else "wrong label" for r, g in zip(replies, GOLD)]
    result = CandidateResult(name, "model", f"models/{name}", "transformers", None, 0,
                             {"accuracy": labels.accuracy, "macro_f1": labels.macro_f1, "reply_perplexity": 3.5,
                              "conversation_perplexity": 9.5, "latency_s": 0.2, "output_tokens": 1.5},
                             labels=labels, constrained=labels)
    result.examples = [ExampleResult(i + 1, f"ticket {i}", g, r, r, f, -float(i))
                       for i, (g, r, f) in enumerate(zip(GOLD, replies, failures))]
    result.general = score_general(items, general)
    return result


@pytest.fixture
def comparison(tmp_path):
    items = [GeneralItem(id=f"i{k}", category=c, prompt="p", check="exact", answers=["yes"])
             for k, c in enumerate(["math", "math", "facts", "facts"])]
    base = _candidate("base", ["billing", "I think sales", "sales", "billing"], ["yes"] * 4, items)
    tuned = _candidate("tuned", ["billing", "sales", "shipping", "sales"], ["no", "no", "yes", "yes"], items)
    check = check_forgetting(base.general, tuned.general, threshold=0.1)
    data = write_jsonl(tmp_path / "test.jsonl", task_rows(30, seed=4))
    return Comparison("labels", LABELS, "base", data_stats(data), [base, tuned], [check],
                      {"kind": "evaluation", "created": "2026-01-01T00:00:00+00:00"})


def test_failures_grouped_by_mode_most_frequent_first_worst_first():
    examples = [ExampleResult(n, "p", "a", "b", None, mode, close) for n, mode, close in
                [(1, "wrong label", -1.0), (2, None, 0.0), (3, "not a label", -2.0), (4, "wrong label", -5.0)]]
    groups = failure_groups(examples)
    assert [(m, [e.line for e in v]) for m, v in groups.items()] == [("wrong label", [4, 1]), ("not a label", [3])]


def test_eval_report_files_tables_and_figures(comparison, tmp_path):
    folder = write_eval_report(comparison, tmp_path / "report", worst=3)
    html, md = (folder / "report.html").read_text(), (folder / "report.md").read_text()
    assert sorted(p.name for p in (folder / "figures").iterdir()) == [
        "confusion-base.png", "confusion-tuned.png", "forgetting.png", "metrics.png"]
    assert html.count('src="data:image/png;base64,') == 4
    assert "<th>Δ tuned</th>" in html and '<td class="up">+25.0 pt</td>' in html  # accuracy 50% -> 75%
    assert "| accuracy, generated reply | 50.0% | 75.0% | +25.0 pt |" in md
    # the reply-only perplexity is the headline; the whole-conversation one is labelled as such, after it
    assert md.index("| perplexity of the reference replies | 3.50 | 3.50 | +0.00 |") < md.index(
        "| perplexity, whole conversation | 9.50 | 9.50 | +0.00 |")
    assert "<td>perplexity of the reference replies</td>" in html and "counts only the tokens of each reference" in md
    assert "FLAGGED (overall, math)" in html and "wrong label: 1 (showing 1)" in md
    assert "| label | rows |" in md and "sha256" in md and '"kind": "evaluation"' in md
    results = json.loads((folder / "results.json").read_text())
    assert results["deltas"]["tuned"]["accuracy"] == pytest.approx(0.25)
    assert results["metric_labels"]["reply_perplexity"] == "perplexity of the reference replies"
    assert results["metric_labels"]["conversation_perplexity"] == "perplexity, whole conversation"
    assert results["candidates"][1]["metrics"]["reply_perplexity"] == 3.5
    assert json.loads((folder / "ftsdk.json").read_text())["report"] == "report.html"


def _training_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    history = [{"step": s, "loss": 2.0 / s} for s in range(1, 9)] + [{"step": 8, "eval_loss": 0.4}]
    plot_losses(history, folder / "loss.png")
    data = write_jsonl(tmp_path / "train.jsonl", task_rows(12, seed=5))
    manifest = {"created": "2026-01-01", "ftsdk_version": "0.1.0", "train_seconds": 12.0,
                "adapter": {"name": "lora"}, "objective": {"name": "sft"}, "base_model": {"reference": "tiny"},
                "placement": {"device": "cpu", "dtype": "float32"}, "metrics": {"train_loss": 0.7},
                "training": {"epochs": 1.0, "max_steps": None}, "loss_plot": "loss.png",
                "data": {"train": {"path": str(data)}, "eval": None}}
    write_training_report(folder, manifest)
    return folder


def test_training_report(tmp_path):
    folder = _training_folder(tmp_path)
    html, md = (folder / "report.html").read_text(), (folder / "report.md").read_text()
    assert html.count('src="data:image/png;base64,') == 1 and "Data: train" in html and "Data: eval" not in html
    assert "![train and eval loss per optimizer step](loss.png)" in md and "| train_loss | 0.7 |" in md


def _render(page) -> list[str]:
    """The decoded size of every picture of ``page``, as a real headless Chromium reports it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (CI: apt-get install -y chromium)")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", MEASURE + "</body>"))
    dom = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    return re.findall(r'<p class="measured">(\d+)x(\d+)</p>', dom)


def test_reports_render_their_figures_in_chromium(comparison, tmp_path):
    folder = write_eval_report(comparison, tmp_path / "report")
    sizes = _render(folder / "report.html")
    assert len(sizes) == 4 and all(int(w) > 100 and int(h) > 100 for w, h in sizes)
    (training,) = _render(_training_folder(tmp_path) / "report.html")
    assert int(training[0]) > 100 and int(training[1]) > 100
