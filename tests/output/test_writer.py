"""The one output writer (ftsdk.artifacts.write_output): atomic folder, manifest header, libraries, model card."""

from __future__ import annotations

import json

import pytest

from ftsdk import ConfigError, OutputExistsError, __version__
from ftsdk.artifacts import LIBRARIES, manifest_header, producer, read_manifest, write_output
from ftsdk.plugin import registry


def test_writes_the_manifest_header_libraries_facts_and_card(tmp_path):
    target = tmp_path / "out"
    with write_output(target, kind="model", card=lambda m: f"# {m['kind']} by {m['tool']}\n") as out:
        assert out.folder != target and out.folder.parent == tmp_path and not target.exists()
        (out.folder / "weights.bin").write_bytes(b"w")
        out.manifest["tool"] = "test"
    manifest = read_manifest(target)
    assert manifest["kind"] == "model" and manifest["ftsdk_version"] == __version__ and manifest["tool"] == "test"
    assert manifest["created"].endswith("+00:00") and "T" in manifest["created"]
    assert {"ftsdk", "torch", "transformers"} <= set(manifest["libraries"]) <= set(LIBRARIES)
    assert (target / "README.md").read_text() == "# model by test\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder or lock left beside it


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), write_output(target, kind="model") as out:
        (out.folder / "half.bin").write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_stays_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out"
    (target).mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="overwrite=True"), write_output(target, kind="model"):
        pass
    with pytest.raises(RuntimeError), write_output(target, kind="model", overwrite=True):
        raise RuntimeError("failed")
    assert (target / "old.txt").read_text() == "old"
    with write_output(target, kind="model", overwrite=True) as out:
        (out.folder / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["ftsdk.json", "new.txt"]


def test_an_output_overlapping_an_input_is_refused(tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    with pytest.raises(ConfigError, match="lies inside the source"), \
            write_output(source / "quantized", kind="quantized", inputs=[("source", source)]):
        pass
    assert list(source.iterdir()) == []


def test_without_libraries_and_with_a_given_time(tmp_path):
    from datetime import datetime, timezone

    with write_output(tmp_path / "out", kind="evaluation", libraries=False):
        pass
    manifest = json.loads((tmp_path / "out" / "ftsdk.json").read_text())
    assert set(manifest) == {"ftsdk_version", "created", "kind"} and manifest["kind"] == "evaluation"
    assert manifest["ftsdk_version"] == __version__ and datetime.fromisoformat(manifest["created"]).tzinfo
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert manifest_header("data", when)["created"] == "2026-01-02T03:04:05+00:00"


def test_the_loss_plot_is_recorded_only_when_drawn(tmp_path):
    with write_output(tmp_path / "a", kind="adapter") as out:
        out.plot_losses([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], title="loss")
    assert read_manifest(tmp_path / "a")["loss_plot"] == "loss.png"
    assert (tmp_path / "a" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    with write_output(tmp_path / "b", kind="adapter") as out:
        out.plot_losses([{"step": 1, "learning_rate": 0.1}], title="loss")
    assert read_manifest(tmp_path / "b")["loss_plot"] is None and not (tmp_path / "b" / "loss.png").exists()


def test_producer_records_the_plugin_its_package_and_config():
    lora = registry.create("adapter", "lora", {"r": 4})
    record = producer("adapter", lora)
    info = registry.get("adapter", "lora")
    assert record == {"name": "lora", "distribution": info.distribution, "version": info.version,
                      "config": lora.config.model_dump(mode="json")}
    assert record["config"]["r"] == 4
