"""ftsdk.quantize with fake in-process quantizers: lookups, refusals before work, atomic outputs, the manifest, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field

import ftsdk
from ftsdk import (
    ConfigError,
    DataError,
    ModelLoadError,
    OutputExistsError,
    PluginConfig,
    Quantizer,
)
from ftsdk.artifacts import read_manifest, write_manifest
from ftsdk.cli import main
from ftsdk.plugin.errors import PluginUnavailableError, UnknownPluginError
from ftsdk.plugin.jobs import QuantizeJob
from ftsdk.quantizing.calibration import TextsConfig, builtin_texts, select_texts
from ftsdk.quantizing.run import human_size, quantize
from ftsdk.testing.kit import active
from ftsdk.testing.tiny import build_tokenizer, task_rows, write_jsonl


class HalfConfig(PluginConfig):
    scale: float = Field(0.5, gt=0, le=1, description="Fraction of the bytes kept.")
    explode: bool = Field(False, description="Raise half-way through.")


class HalfQuantizer(Quantizer):
    """Writes half of each weight file and the calibration texts it got."""

    name = "half"
    summary = "test: keeps half of every weight file"
    Config = HalfConfig
    uses_calibration = True
    seen: ClassVar[list[QuantizeJob]] = []

    def check(self, source: Path, source_kind: str) -> None:
        if (source / "refuse-me").exists():
            raise ConfigError(f"{source} is marked refuse-me")

    def quantize(self, job: QuantizeJob) -> dict:
        type(self).seen.append(job)
        (job.output / "calibration.json").write_text(json.dumps(job.calibration))
        for weights in job.source.glob("*.safetensors"):
            data = weights.read_bytes()
            (job.output / weights.name).write_bytes(data[: int(len(data) * self.config.scale)])
            if self.config.explode:
                raise RuntimeError("backend crashed half-way")
        return {"files": [p.name for p in job.output.iterdir()], "warnings": ["lm_head kept in float32"],
                "quality": {"max_abs_error": 0.25}, "blocks": 3}


class AdapterQuantizer(HalfQuantizer):
    name = "takes-adapters"
    summary = "test: accepts adapters"
    accepts = ("model", "adapter")
    uses_calibration = False


class MissingBackend(HalfQuantizer):
    name = "needs-backend"
    summary = "test: its package is missing"
    requires = ("ftsdk_no_such_backend",)
    install_hint = "pip install ftsdk-no-such-backend"


@pytest.fixture(autouse=True)
def fake_quantizers():
    HalfQuantizer.seen.clear()
    with active(HalfQuantizer), active(AdapterQuantizer), active(MissingBackend):
        yield


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A folder that looks like a transformers model to the core (the fake quantizer reads bytes only)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    build_tokenizer().save_pretrained(folder)
    write_manifest(folder, {"kind": "model", "merged_adapter": {"adapter_dir": "runs/x"}})
    return folder


def test_quantize_writes_the_output_with_its_lineage(model, tmp_path, capsys):
    output = ftsdk.quantize(model, "half", tmp_path / "q", config={"scale": 0.25},
                            calibration={"samples": 5, "max_length": 16, "seed": 3})
    assert (output / "model.safetensors").stat().st_size == 2560
    manifest = read_manifest(output)
    assert manifest["kind"] == "model"
    assert manifest["quantizer"] == {"name": "half", "distribution": "(in-process)", "version": "",
                                     "config": {"scale": 0.25, "explode": False}}
    assert manifest["source"]["kind"] == "model" and len(manifest["source"]["weights_sha256"]["model.safetensors"]) == 64
    assert manifest["source"]["manifest"]["merged_adapter"] == {"adapter_dir": "runs/x"}
    assert manifest["warnings"] == ["lm_head kept in float32"] and manifest["quality"] == {"max_abs_error": 0.25}
    assert manifest["facts"] == {"blocks": 3} and manifest["files"]["model.safetensors"] == 2560
    assert manifest["size_bytes"] < manifest["source_size_bytes"]
    assert manifest["calibration"]["samples"] == 5 and manifest["calibration"]["data"] == "builtin"
    assert "warning: lm_head kept in float32" in capsys.readouterr().out
    assert "half" in (output / "README.md").read_text()
    texts = json.loads((output / "calibration.json").read_text())
    tokenizer = build_tokenizer()
    assert len(texts) == 5 and all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) <= 17 for t in texts)
    assert texts == select_texts(TextsConfig(samples=5, max_length=16, seed=3), tokenizer)  # seeded: reproducible
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "q"]


def test_chat_rows_are_calibrated_through_the_chat_template(model, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", task_rows(4, seed=0))
    quantize(model, "half", tmp_path / "q", calibration=data)
    texts = HalfQuantizer.seen[0].calibration
    assert len(texts) == 4 and all(t.startswith("<|im_start|>system\nreply with one word only") for t in texts)
    plain = tmp_path / "plain.txt"
    plain.write_text("first passage\n\nsecond passage\n")
    quantize(model, "half", tmp_path / "q2", calibration={"data": plain})
    assert sorted(HalfQuantizer.seen[1].calibration) == ["first passage", "second passage"]


def test_a_plugin_failing_half_way_leaves_nothing(model, tmp_path):
    with pytest.raises(RuntimeError, match="half-way"):
        quantize(model, "half", tmp_path / "q", config={"explode": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError):
        quantize(model, "half", tmp_path / "q", config={"explode": True}, overwrite=True)
    assert [p.name for p in (tmp_path / "q").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("method", "config", "error", "message"),
    [
        ("hlaf", None, UnknownPluginError, "did you mean 'half'"),
        ("needs-backend", None, PluginUnavailableError, "pip install ftsdk-no-such-backend"),
        ("half", {"scale": 2}, ConfigError, r"quantizer_config.scale"),
        ("half", {"sclae": 0.5}, ConfigError, "sclae"),
    ],
)
def test_plugin_and_config_errors_come_before_any_work(method, config, error, message, model, tmp_path):
    with pytest.raises(error, match=message):
        quantize(model, method, tmp_path / "q", config=config)
    assert not HalfQuantizer.seen and not (tmp_path / "q").exists()


def test_source_kinds_are_checked(model, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="merge the adapter first: ftsdk merge-adapter"):
        quantize(adapter, "half", tmp_path / "q")
    quantize(adapter, "takes-adapters", tmp_path / "qa")
    assert HalfQuantizer.seen[0].source_kind == "adapter" and HalfQuantizer.seen[0].calibration is None
    quantized = tmp_path / "quantized"
    quantized.mkdir()
    (quantized / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "bitsandbytes"}}))
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(quantized, "half", tmp_path / "q")
    with pytest.raises(ModelLoadError, match="does not exist"):
        quantize(tmp_path / "nowhere", "half", tmp_path / "q")
    with pytest.raises(ModelLoadError, match="holds no model"):
        quantize(tmp_path / "qa" / "..", "half", tmp_path / "q")
    (model / "refuse-me").touch()
    with pytest.raises(ConfigError, match="marked refuse-me"):  # the plugin's own check
        quantize(model, "half", tmp_path / "q")
    assert len(HalfQuantizer.seen) == 1


def test_output_and_calibration_errors(model, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").touch()
    with pytest.raises(OutputExistsError):
        quantize(model, "half", tmp_path / "busy")
    with pytest.raises(ConfigError, match="is the source"):
        quantize(model, "half", model, overwrite=True)
    with pytest.raises(DataError, match="text file not found"):
        quantize(model, "half", tmp_path / "q", calibration="missing.jsonl")
    with pytest.raises(ConfigError, match="calibration.samples"):
        quantize(model, "half", tmp_path / "q", calibration={"samples": 0})
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "no known shape"}])
    with pytest.raises(DataError, match="cannot tell the data format"):
        quantize(model, "half", tmp_path / "q", calibration=bad)
    assert not HalfQuantizer.seen and not (tmp_path / "q").exists()


def test_builtin_texts_and_classify():
    texts = builtin_texts()
    assert 100 <= len(texts) <= 200 and len(set(texts)) == len(texts)
    assert any("def " in t for t in texts) and any(": " in t.splitlines()[0] for t in texts)
    assert human_size(999) == "999 B" and human_size(1_500_000) == "1.5 MB"


def test_cli(model, tmp_path, capsys):
    config = tmp_path / "half.yaml"
    config.write_text("scale: 0.5\nexplode: true\n")
    code = main(["quantize", str(model), "--method", "half", "--output", str(tmp_path / "q"), "--config", str(config),
                 "--set", "explode=false", "--set", "scale=0.25", "--calibration-samples", "3"])
    assert code == 0
    out = capsys.readouterr().out
    manifest = read_manifest(tmp_path / "q")
    sizes = f"{human_size(manifest['source_size_bytes'])} -> {human_size(manifest['size_bytes'])}"
    assert sizes in out and "max_abs_error: 0.25" in out and "lm_head kept" in out
    assert manifest["quantizer"]["config"] == {"scale": 0.25, "explode": False}
    assert len(HalfQuantizer.seen[0].calibration) == 3
    assert main(["quantize", str(model), "--method", "half", "--output", str(tmp_path / "q")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["quantize", str(model), "--method", "half", "--output", str(tmp_path / "q2"), "--set", "scale"]) == 2
    assert "key=value" in capsys.readouterr().err
