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
    scores = run_quickstart(output_dir=tmp_path / "quickstart")
    minutes = (time.perf_counter() - started) / 60
    base, tuned = scores["base"], scores["tuned"]
    with capsys.disabled():  # the figures belong in the CI log
        print(f"\nquickstart in {minutes:.1f} min: generated {base.generated.accuracy:.1%} -> {tuned.generated.accuracy:.1%}, "
              f"likeliest label {base.constrained.accuracy:.1%} -> {tuned.constrained.accuracy:.1%}")
    assert tuned.generated.accuracy >= base.generated.accuracy + 0.25
    assert tuned.constrained.accuracy >= base.constrained.accuracy + 0.10
    assert tuned.generated.invalid_rate < 0.05
