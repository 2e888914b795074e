"""A real third-party plugin package (examples/ftsdk-last-blocks) found, listed, filtered and trained with.

Discovery goes through real entry points: a minimal ``.dist-info`` is written next to the package,
as pip would, so nothing is installed into the environment.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftsdk import ConfigError, Tuner, plugins

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ftsdk-last-blocks"


def _fake_install(root: Path) -> Path:
    """Write the dist-info pip would write for ftsdk-last-blocks 0.1.0 (metadata and entry points only)."""
    info = root / "ftsdk_last_blocks-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ftsdk-last-blocks\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text("[ftsdk]\nlast-blocks = ftsdk_last_blocks\n", encoding="utf-8")
    return root


def _listed(root: Path, **env: str) -> list[dict]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("FTSDK_PLUGINS", "FTSDK_DISABLE_PLUGINS")}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(root), str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "ftsdk.cli", "plugins", "--json"],
                          capture_output=True, text=True, env=full_env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_installed_package_is_discovered_through_its_entry_point(tmp_path):
    root = _fake_install(tmp_path / "site")
    rows = _listed(root)
    by_name = {row["name"]: row for row in rows}
    assert by_name["last-blocks"] == {
        "kind": "adapter",
        "name": "last-blocks",
        "distribution": "ftsdk-last-blocks",
        "version": "0.1.0",
        "available": True,
        "summary": by_name["last-blocks"]["summary"],
    }
    assert "last n transformer blocks" in by_name["last-blocks"]["summary"].lower()
    assert by_name["lora"]["kind"] == "adapter" and by_name["lora"]["distribution"] == "ftsdk"
    assert by_name["sft"]["kind"] == "objective" and by_name["sft"]["distribution"] == "ftsdk"
    assert not [row for row in rows if "error" in row]

    assert "last-blocks" not in {row["name"] for row in _listed(root, FTSDK_DISABLE_PLUGINS="last-blocks")}
    assert {"lora", "sft"} <= {row["name"] for row in _listed(root, FTSDK_DISABLE_PLUGINS="last-blocks")}
    assert [row["name"] for row in _listed(root, FTSDK_PLUGINS="last-blocks")] == ["last-blocks"]


@pytest.fixture
def last_blocks(monkeypatch):
    """The example package imported from its folder and registered in this process; removed afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    module = importlib.import_module("ftsdk_last_blocks")
    if ("adapter", "last-blocks") in plugins.registry().plugins:  # pip-installed: already found by entry point
        yield module
        return
    name = plugins.register(module, name="ftsdk-last-blocks-test")
    try:
        yield module
    finally:
        plugins.unregister(name=name)
    assert ("adapter", "last-blocks") not in plugins.registry().plugins


def _state(folder: Path) -> dict:
    from transformers import AutoModelForCausalLM

    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(folder).state_dict().items()}


def test_fit_trains_only_the_last_block_and_norm(last_blocks, tiny_model_dir, chat_data, tmp_path):
    import torch

    tuner = Tuner(
        str(tiny_model_dir),
        adapter="last-blocks",
        adapter_config={"blocks": 1},
        training={"epochs": 2, "learning_rate": 5e-3, "batch_size": 8, "logging_steps": 1},
    )
    result = tuner.fit(chat_data[0], output_dir=tmp_path / "out")

    assert result.manifest["kind"] == "model"
    assert result.manifest["adapter"]["name"] == "last-blocks"
    assert result.manifest["adapter"]["config"] == {"blocks": 1, "train_norm": True, "train_head": False}
    base, tuned = _state(tiny_model_dir), _state(result.output_dir)  # loads with AutoModelForCausalLM
    assert base.keys() == tuned.keys()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    expected = {k for k in base if k.startswith(("model.layers.1.", "model.norm."))}
    assert changed == expected
    assert all(torch.equal(base[k], tuned[k]) for k in base if k.startswith("model.layers.0."))
    assert torch.equal(base["model.embed_tokens.weight"], tuned["model.embed_tokens.weight"])

    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    assert len(losses) >= 2 and losses[0] > losses[-1], losses


def test_too_many_blocks_fails_before_training(last_blocks, tiny_model_dir, chat_data, tmp_path, monkeypatch):
    tuner = Tuner(str(tiny_model_dir), adapter="last-blocks", adapter_config={"blocks": 99})
    monkeypatch.setattr(tuner.objective, "train", lambda job: pytest.fail("training started"))
    with pytest.raises(ConfigError) as caught:
        tuner.fit(chat_data[0], output_dir=tmp_path / "out")
    assert "blocks is 99" in str(caught.value) and "only 2 transformer blocks" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_zero_blocks_fails_at_construction(last_blocks):
    with pytest.raises(ConfigError, match="adapter_config.blocks"):
        Tuner("unused-model", adapter="last-blocks", adapter_config={"blocks": 0})
