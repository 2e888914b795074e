"""Chains: every step validated before any runs, runs on a tiny model, reruns that skip, resumes after a failure."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from ftsdk import Chain, ConfigError, Quantizer, plugins
from ftsdk.artifacts import read_manifest
from ftsdk.chain.config import load_chain_config
from ftsdk.cli import main
from ftsdk.plugin.jobs import QuantizeJob
from ftsdk.testing.kit import active

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "chains"


class FlakyQuantizer(Quantizer):
    """Copies the model; fails the first time it runs."""

    name = "flaky"
    summary = "test: fails once, then copies the model"
    calls: ClassVar[list[Path]] = []

    def quantize(self, job: QuantizeJob) -> dict:
        type(self).calls.append(job.source)
        if len(type(self).calls) == 1:
            raise RuntimeError("flaky backend crashed")
        for file in job.source.iterdir():
            if file.is_file() and file.name != "ftsdk.json":
                shutil.copy(file, job.output / file.name)
        return {"files": [], "warnings": []}


@pytest.fixture(autouse=True)
def flaky():
    FlakyQuantizer.calls.clear()
    with active(FlakyQuantizer):
        yield


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter folder written by PEFT (non-zero updates) on the tiny model."""
    import peft
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = peft.LoraConfig(r=4, target_modules=["q_proj", "up_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    peft.get_peft_model(base, config).save_pretrained(folder)
    return folder


def five_steps(adapter: Path, **quantize: object) -> Chain:
    return (Chain(adapter=adapter).merge_adapter("merged").quantize("bnb", "nf4").quantize("bnb", "int8", config={"bits": 8})
            .quantize(**{"method": "bnb", "name": "q4", **quantize}).export())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "bnbb"}, r"steps\[3\] \(quantize 'q4'\): no quantizer plugin named 'bnbb'\n    hint: did you mean 'bnb'"),
        ({"config": {"bits": 5}}, r"steps\[3\] \(quantize 'q4'\): invalid quantizer_config:\n  quantizer_config.bits"),
        ({"source": "mreged"}, r"(?s)steps\[3\] \(quantize 'q4'\): source 'mreged' is no earlier step .*did you mean 'merged'"),
        ({"source": "dist"}, r"steps\[3\] \(quantize 'q4'\): source 'dist' is made by steps\[4\], which runs later"),
        ({"source": "adapter"}, r"(?s)steps\[3\] \(quantize 'q4'\): .* it is a PEFT adapter\n    hint: add a merge_adapter"),
        ({"output": "build/nf4"}, r"steps\[3\] \(quantize 'q4'\): writes the same folder as steps\[1\] \(quantize 'nf4'\)"),
    ],
)
def test_a_mistake_in_step_four_fails_at_once_and_runs_nothing(change, message, lora, tmp_path, monkeypatch,
                                                               no_model_loading):
    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as caught:
        five_steps(lora, **change).run("build")
    assert time.perf_counter() - started < 1.0
    assert "nothing was run" in str(caught.value) and not (tmp_path / "build").exists()


def test_every_problem_is_listed_at_once(tmp_path, no_model_loading):
    chain = (Chain(tmp_path / "work", adapter=tmp_path / "missing").merge_adapter("merged")
             .quantize("bnb", "q", config={"quant_type": "nf5"}).evaluate(models=["q", "nope"]))
    with pytest.raises(ConfigError) as caught:
        chain.run()
    text = str(caught.value)
    assert f"inputs.adapter: {tmp_path / 'missing'} does not exist" in text
    assert "steps[1] (quantize 'q'): invalid quantizer_config" in text
    assert "steps[2] (evaluate 'evaluation'): models[1] 'nope' is no earlier step" in text
    with pytest.raises(ConfigError, match=r"steps\[1\] \(quantise 'x'\): unknown step type 'quantise'\n  hint: did you mean 'quantize'"):
        load_chain_config({"steps": [{"step": "train", "recipe": "r.yaml"}, {"step": "quantise", "name": "x"}]})
    with pytest.raises(ConfigError, match=r"steps\[0\] \(quantize 'bnb'\).method|steps\[0\] \(quantize 'bnb'\)\.confg"):
        load_chain_config({"steps": [{"step": "quantize", "method": "bnb", "confg": {}}]})


def test_outputs_not_written_by_the_chain_are_protected(lora, tmp_path, no_model_loading):
    (tmp_path / "build" / "merged").mkdir(parents=True)
    (tmp_path / "build" / "merged" / "notes.txt").write_text("mine")
    chain = Chain(tmp_path / "build", adapter=lora).merge_adapter("merged")
    with pytest.raises(ConfigError, match="holds files this step did not write"):
        chain.plan()
    assert "will run" in chain.plan(force=["merged"]).describe()
    with pytest.raises(ConfigError, match="overlaps the chain input 'adapter'"):
        Chain(adapter=lora).merge_adapter("merged", output=lora).plan()


def test_chain_runs_reruns_nothing_and_resumes_after_a_failure(lora, tmp_path, capsys):
    chain = (Chain(tmp_path / "build", name="tiny", adapter=lora)
             .merge_adapter("merged")
             .quantize("bnb", "nf4", config={"bits": 4})
             .quantize("flaky", "copy", source="merged")
             .evaluate("ppl", texts={"samples": 8, "max_length": 48})
             .export("dist", artifacts=["nf4"]))
    with pytest.raises(RuntimeError, match="flaky backend crashed"):
        chain.run()
    build = tmp_path / "build"
    assert sorted(p.name for p in build.iterdir()) == [".ftsdk-chain.json", "merged", "nf4"]  # nothing half-written
    state = json.loads((build / ".ftsdk-chain.json").read_text())
    assert state["status"] == "failed" and state["failed_step"] == "steps[2] (quantize 'copy')"

    result = chain.run(resume=True)
    out = capsys.readouterr().out
    assert "resuming chain 'tiny' at steps[2] (quantize 'copy')" in out
    assert result.skipped == ["merged", "nf4"] and result.ran == ["copy", "ppl", "dist"]
    merged = read_manifest(build / "merged")
    assert merged["chain"]["step"] == "merged" and merged["chain"]["inputs"]["source"]["path"] == str(lora)
    assert merged["merged_adapter"]["peft_type"] == "LORA"
    nf4 = read_manifest(build / "nf4")
    assert nf4["quantizer"]["name"] == "bnb" and nf4["chain"]["inputs"]["source"]["name"] == "merged"
    assert nf4["source"]["path"] == str((build / "merged").resolve())
    ppl = read_manifest(build / "ppl")
    assert ppl["reference"] == "merged" and set(ppl["results"]) == {"merged", "nf4", "copy"}
    assert ppl["results"]["copy"]["perplexity"] == ppl["results"]["merged"]["perplexity"]  # an exact copy
    assert ppl["results"]["nf4"]["perplexity"] != ppl["results"]["merged"]["perplexity"]
    assert 1 < ppl["results"]["merged"]["perplexity"] < 1000 and ppl["texts"]["used"] == 8
    dist = read_manifest(build / "dist")
    assert list(dist["artifacts"]) == ["nf4"] and (build / "dist" / "nf4" / "model.safetensors").is_file()
    assert dist["artifacts"]["nf4"]["quality"]["ppl"]["perplexity"] == ppl["results"]["nf4"]["perplexity"]
    assert result.artifacts["nf4"]["perplexity"] == ppl["results"]["nf4"]["perplexity"]
    assert "nf4" in result.table() and "vs reference" in result.table()

    again = chain.run()
    assert again.ran == [] and len(again.skipped) == 5 and len(FlakyQuantizer.calls) == 2
    with pytest.raises(ConfigError, match="nothing to resume"):
        chain.run(resume=True)

    chain.config.steps[1].config = {"bits": 8}  # a changed step reruns with every step that depends on it
    changed = chain.run()
    assert changed.ran == ["nf4", "ppl", "dist"] and changed.skipped == ["merged", "copy"]
    assert chain.run(force=["copy"]).ran == ["copy"]  # ppl's inputs did not change: the copy is identical


def test_yaml_and_cli(lora, tmp_path, capsys):
    yaml_file = EXAMPLES / "tiny.yaml"
    chain = Chain.from_yaml(yaml_file)
    assert chain.config.workdir == EXAMPLES / "../../build/tiny" and chain.config.steps[3].texts.samples == 16
    assert Chain.from_config(chain.config).to_yaml() == chain.to_yaml()
    args = ["chain", str(yaml_file), "--input", f"adapter={lora}", "--workdir", str(tmp_path / "w")]
    assert main([*args, "--dry-run"]) == 0
    assert "steps[4] (export 'dist')" in capsys.readouterr().out and not (tmp_path / "w").exists()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[5/5] export 'dist': done" in out and "int8" in out.splitlines()[-1] or "int8" in out
    assert sorted(p.name for p in (tmp_path / "w" / "dist").iterdir()) == ["README.md", "ftsdk.json", "int8", "nf4"]
    assert main(args) == 0 and "5 skipped" in capsys.readouterr().out
    assert main([*args, "--input", "adapter"]) == 2 and "NAME=PATH" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not plugins.get("quantizer", "gguf").available, reason="the gguf plugin's backend is not installed")
def test_gguf_artifacts_are_scored_through_llama_cpp(lora, tmp_path):
    result = (Chain(tmp_path, adapter=lora).merge_adapter("merged")
              .quantize("gguf", "q8", config={"type": "q8_0", "verify": False})
              .evaluate(texts={"samples": 8, "max_length": 48}).export(artifacts=["q8"]).run())
    scores = read_manifest(tmp_path / "evaluation")["results"]
    assert scores["q8"]["kind"] == "gguf" and scores["q8"]["tokens"] == scores["merged"]["tokens"]
    assert abs(scores["q8"]["vs_reference"]) < 0.01  # q8_0 is close to float32
    assert result.artifacts["q8"]["size_bytes"] < result.artifacts["merged"]["size_bytes"]
    assert "llama-cli -m q8/" in (tmp_path / "dist" / "README.md").read_text()
