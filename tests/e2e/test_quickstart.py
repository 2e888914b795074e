"""The quickstart on the real default model: a real gain on the held-out split, in minutes."""

from __future__ import annotations

import time

import pytest

from ftsdk.data.loading import load_dataset
from ftsdk.quickstart.run import data_file


def test_bundled_splits_are_valid_balanced_and_disjoint():
    splits = {name: load_dataset(data_file(name)).examples for name in ("train", "val", "test")}
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 400, "val": 40, "test": 120}
    tickets = {name: {rows[1]["content"] for rows in examples} for name, examples in splits.items()}
    assert not (tickets["train"] & tickets["test"]) and not (tickets["train"] & tickets["val"])
    labels = [rows[-1]["content"] for rows in splits["test"]]
    assert {label: labels.count(label) for label in set(labels)} == dict.fromkeys(
        ["account", "billing", "returns", "sales", "shipping", "technical"], 20
    )


@pytest.mark.slow
def test_quickstart_shows_a_real_gain(tmp_path, smollm2_dir, monkeypatch, capsys):
    from ftsdk.quickstart.run import run_quickstart

    monkeypatch.setenv("FTSDK_CACHE", str(smollm2_dir.parent.parent))
    started = time.perf_counter()
    comparison = run_quickstart(output_dir=tmp_path / "quickstart")
    minutes = (time.perf_counter() - started) / 60
    base, prompted, tuned = (comparison[name].metrics for name in ("base", "prompted", "tuned"))
    (forgetting,) = comparison.forgetting
    with capsys.disabled():  # the figures belong in the CI log
        print(f"\nquickstart in {minutes:.1f} min\n{comparison.summary()}")
    assert tuned["accuracy"] >= max(base["accuracy"], prompted["accuracy"]) + 0.25
    assert tuned["constrained_accuracy"] >= max(base["constrained_accuracy"], prompted["constrained_accuracy"]) + 0.10
    assert tuned["macro_f1"] > base["macro_f1"] and tuned["invalid_rate"] < 0.05
    assert (forgetting.base, forgetting.tuned) == ("base", "tuned") and len(forgetting.base_score.passed) >= 48
    report = comparison.output_dir / "report.html"
    assert report == tmp_path / "quickstart" / "eval" / "report.html" and report.is_file()
    assert report.read_text().count("data:image/png;base64,") >= 6  # metrics, forgetting, 3 confusions, loss
    assert (tmp_path / "quickstart" / "report.html").is_file()  # the training run's own report
