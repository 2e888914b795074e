"""No code runs because a file says so: trust_remote_code only from the user, dry runs import no reward file."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ftsdk import ConfigError, ModelLoadError, Tuner
from ftsdk.cli import main
from ftsdk.merging.adapter import merge_adapter


def hostile_base(tiny_model_dir: Path, folder: Path, marker: Path, model_type: str | None = None) -> Path:
    """The tiny model, with a config.json whose auto_map points at a Python file that writes ``marker``."""
    shutil.copytree(tiny_model_dir, folder)
    (folder / "evil.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    if model_type:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def adapter_of(tiny: Path, base: Path, folder: Path, manifest_spec: dict | None) -> Path:
    """A LoRA adapter of ``tiny`` naming ``base``; with ``manifest_spec``, an ftsdk.json recording that base spec."""
    import peft
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(base)}))
    if manifest_spec is not None:
        manifest = {"kind": "adapter", "adapter": {"name": "lora", "config": {}},
                    "objective": {"name": "sft", "config": {}}, "training": {},
                    "base_model": {"reference": str(base), "spec": manifest_spec | {"name": str(base)}}}
        (folder / "ftsdk.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def trap(tiny_model_dir, tmp_path):
    """A hostile base and an adapter whose ftsdk.json says trust_remote_code: true; the marker its code writes."""
    marker = tmp_path / "MARKER"
    base = hostile_base(tiny_model_dir, tmp_path / "base", marker)
    return adapter_of(tiny_model_dir, base, tmp_path / "adapter", {"trust_remote_code": True}), marker


def test_an_adapter_manifest_cannot_enable_remote_code_for_merge_adapter(trap, tmp_path, capsys):
    adapter, marker = trap
    assert main(["merge-adapter", str(adapter), str(tmp_path / "merged")]) != 0
    err = capsys.readouterr().err
    assert "asks to run the base model's own Python code (trust_remote_code: true)" in err
    assert "pass --trust-remote-code to ftsdk merge-adapter" in err
    assert not marker.exists() and not (tmp_path / "merged").exists()


def test_an_adapter_manifest_cannot_enable_remote_code_for_tuner_load(trap):
    adapter, marker = trap
    with pytest.raises(ConfigError, match=r"Tuner.load\(folder, trust_remote_code=True\)"):
        Tuner.load(adapter)
    assert not marker.exists()


def test_an_adapter_manifest_cannot_enable_remote_code_for_eval(trap, tmp_path, capsys):
    adapter, marker = trap
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "yes"}]}) + "\n")
    assert main(["eval", "--data", str(data), "--candidate", f"tuned={adapter}"]) != 0
    err = capsys.readouterr().err
    assert "trust_remote_code: true in the candidate, or pass --trust-remote-code to ftsdk eval" in err
    assert not marker.exists()


def test_the_users_explicit_flag_is_what_runs_the_code(trap, tmp_path, monkeypatch):
    """The marker test can fail: with trust_remote_code=True the base's own file runs (here, and only here)."""
    adapter, marker = trap
    modules = tmp_path / "modules"  # where transformers copies the code it runs (not the user's cache)
    monkeypatch.setattr("transformers.dynamic_module_utils.HF_MODULES_CACHE", str(modules))
    monkeypatch.syspath_prepend(str(modules))
    with pytest.raises(Exception):  # noqa: B017 - the code ran, then defined none of the classes it promised
        merge_adapter(adapter, tmp_path / "merged", trust_remote_code=True)
    assert marker.read_text() == "code ran" and not (tmp_path / "merged").exists()


def test_a_base_that_needs_its_code_is_refused_with_how_to_allow_it(tiny_model_dir, tmp_path):
    marker = tmp_path / "MARKER"
    base = hostile_base(tiny_model_dir, tmp_path / "base", marker, model_type="evil-llama")
    adapter = adapter_of(tiny_model_dir, base, tmp_path / "adapter", None)
    with pytest.raises(ModelLoadError, match="needs its own Python code") as caught:
        merge_adapter(adapter, tmp_path / "merged")
    assert "trust_remote_code" in caught.value.hint
    with pytest.raises(ModelLoadError, match="needs its own Python code"):
        Tuner(str(base)).generate("hi", max_new_tokens=1)
    assert not marker.exists()


# -- reward functions are code: checks and dry runs never import them ----------------------------------------


@pytest.fixture
def reward_files(tmp_path, monkeypatch):
    """A reward file and a reward module that write a marker when imported."""
    marker = tmp_path / "IMPORTED"
    body = (f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n\n"
            "def score(prompts, completions, **kwargs):\n    return [1.0] * len(completions)\n")
    (tmp_path / "evil_reward.py").write_text(body)
    package = tmp_path / "lib" / "evil_rewards_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n")
    (package / "scores.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    return tmp_path / "evil_reward.py", marker


def test_chain_dry_run_imports_no_reward_function(reward_files, tiny_model_dir, tmp_path, capsys):
    reward, marker = reward_files
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(4)))
    recipe = {"model": str(tiny_model_dir), "adapter": "lora", "objective": "grpo",
              "objective_config": {"reward_functions": [f"{reward}:score", "evil_rewards_pkg.scores:score"],
                                   "num_generations": 2},
              "training": {"batch_size": 2, "max_steps": 1}, "data": {"train": str(data)}}
    chain = tmp_path / "chain.yaml"
    chain.write_text(yaml.safe_dump({"workdir": str(tmp_path / "build"),
                                     "steps": [{"step": "train", "name": "tuned", "recipe": recipe}]}))
    assert main(["chain", str(chain), "--dry-run"]) == 0
    assert "will run" in capsys.readouterr().out
    assert not marker.exists() and "evil_rewards_pkg" not in sys.modules
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{file}:nope", "has no attribute 'nope'"),
        ("{dir}/missing.py:score", "no file"),
        ("{dir}/broken.py:score", "does not parse"),
        ("evil_rewards_pkg.nothere:score", "No module named 'evil_rewards_pkg.nothere'"),
        ("evil_rewards_pkg.scores:nope", "has no attribute 'nope'"),
        ("no_such_top_module_q:score", "No module named 'no_such_top_module_q'"),
    ],
)
def test_reward_references_are_checked_without_importing(reward_files, tmp_path, reference, message):
    from ftsdk_plugins.objectives._rewards import check_function

    reward, marker = reward_files
    (tmp_path / "broken.py").write_text("def score(:\n")
    with pytest.raises(ConfigError, match=message):
        check_function(reference.format(file=reward, dir=tmp_path))
    check_function(f"{reward}:score")
    check_function("evil_rewards_pkg.scores:score")
    check_function("os.path:join")
    assert not marker.exists() and "evil_rewards_pkg" not in sys.modules


def test_training_imports_the_reward_function(reward_files):
    from ftsdk_plugins.objectives._rewards import resolve_function

    reward, marker = reward_files
    assert resolve_function(f"{reward}:score")(prompts=["a"], completions=["b"]) == [1.0]
    assert marker.read_text() == "imported"
