"""The streaming merge engine: shards in and out, tied embeddings, vocabularies, up-front checks, atomic output,
the manifest and bounded memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ftsdk import ConfigError
from ftsdk.artifacts import read_manifest
from ftsdk.merging import merge
from ftsdk.merging.safetensors_io import INDEX_NAME, Checkpoint, PlannedTensor, ShardedWriter, read_header
from ftsdk.merging.testing import read_weights, variant, write_weights
from ftsdk.plugin.per_layer import Filtered, evaluate, layer_position


def linear(models: list[tuple[Path, float]], output: Path, **extra: Any) -> dict[str, Any]:
    return {"method": "linear", "models": [{"model": str(m), "parameters": {"weight": w}} for m, w in models],
            "dtype": "float32", "output": str(output), **extra}


def edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.fixture(scope="module")
def shifted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tune of the tiny model (every weight + 0.01), saved in three shards."""
    return variant(tiny_model_dir, tmp_path_factory.mktemp("shifted") / "m", lambda n, t: t + 0.01, shards=3)


def test_sharded_inputs_and_outputs_with_a_correct_index(tiny_model_dir: Path, shifted: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    sharded = merge(linear([(tiny_model_dir, 1), (shifted, 3)], tmp_path / "sharded", max_shard_size="100KB"))
    whole = merge(linear([(tiny_model_dir, 1), (shifted, 3)], tmp_path / "whole"))
    index = json.loads((sharded / INDEX_NAME).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 3 and files == sorted(p.name for p in sharded.glob("*.safetensors"))
    for file in files:
        header = read_header(sharded / file)
        assert sorted(header) == sorted(n for n, f in index["weight_map"].items() if f == file)
        assert sum(t.nbytes for t in header.values()) <= 100_000 or len(header) == 1
    expected = read_weights(tiny_model_dir)
    assert set(index["weight_map"]) == set(expected)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in expected.values())
    merged, reference = read_weights(sharded), read_weights(whole)
    for name, tensor in expected.items():
        assert torch.allclose(merged[name], tensor + 0.0075, atol=1e-6) and torch.equal(merged[name], reference[name])
    model = AutoModelForCausalLM.from_pretrained(sharded, dtype=torch.float32)
    assert torch.equal(model.model.norm.weight, merged["model.norm.weight"])


def test_tied_embeddings_stay_tied_and_mixed_ones_are_untied(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    tied = merge(linear([(tiny_model_dir, 1)], tmp_path / "tied"))
    assert "lm_head.weight" not in read_weights(tied)
    assert json.loads((tied / "config.json").read_text())["tie_word_embeddings"] is True

    untied = variant(tiny_model_dir, tmp_path / "untied", lambda n, t: t)
    weights = read_weights(untied)
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"] + 0.5
    write_weights(untied, weights)
    edit_config(untied, tie_word_embeddings=False)
    mixed = merge(linear([(tiny_model_dir, 1), (untied, 1)], tmp_path / "mixed"))
    merged = read_weights(mixed)
    embeddings = read_weights(tiny_model_dir)["model.embed_tokens.weight"]
    assert torch.allclose(merged["lm_head.weight"], embeddings + 0.25, atol=1e-6)
    assert torch.equal(merged["model.embed_tokens.weight"], embeddings)
    assert json.loads((mixed / "config.json").read_text())["tie_word_embeddings"] is False
    assert read_manifest(mixed)["untied_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(mixed, dtype=torch.float32)
    assert torch.equal(model.lm_head.weight, merged["lm_head.weight"])


@pytest.fixture(scope="module")
def grown(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tune that added 6 tokens to the tokenizer and 6 embedding rows."""
    import torch
    from transformers import AutoTokenizer

    folder = variant(tiny_model_dir, tmp_path_factory.mktemp("grown") / "m", lambda n, t: t + 0.01)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([f"<extra{i}>" for i in range(6)])
    tokenizer.save_pretrained(folder)
    weights = read_weights(folder)
    rows = weights["model.embed_tokens.weight"]
    weights["model.embed_tokens.weight"] = torch.cat([rows, torch.full((6, rows.shape[1]), 0.5)])
    write_weights(folder, weights)
    edit_config(folder, vocab_size=len(tokenizer))
    return folder


def test_vocabulary_sizes_are_aligned_to_the_tokenizer_source(
    tiny_model_dir: Path, grown: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = {"method": "task_arithmetic", "base_model": str(tiny_model_dir),
              "models": [{"model": str(grown), "parameters": {"weight": 1.0}}], "dtype": "float32"}
    base_rows = read_weights(tiny_model_dir)["model.embed_tokens.weight"]
    small = merge(config | {"output": str(tmp_path / "small")})
    assert torch.allclose(read_weights(small)["model.embed_tokens.weight"], base_rows + 0.01, atol=1e-6)
    large = merge(config | {"output": str(tmp_path / "large"), "tokenizer_source": str(grown)})
    rows = read_weights(large)["model.embed_tokens.weight"]
    assert rows.shape[0] == base_rows.shape[0] + 6 and torch.equal(rows[-6:], torch.full((6, rows.shape[1]), 0.5))
    assert json.loads((large / "config.json").read_text())["vocab_size"] == rows.shape[0]
    assert len(AutoTokenizer.from_pretrained(large)) == rows.shape[0]
    assert AutoModelForCausalLM.from_pretrained(large).get_input_embeddings().weight.shape[0] == rows.shape[0]


def test_vocabularies_that_disagree_are_refused_naming_models_and_sizes(
    tiny_model_dir: Path, grown: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(grown, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = [token for token, i in vocab.items() if i in (40, 41)]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = {"method": "task_arithmetic", "base_model": str(tiny_model_dir),
              "models": [{"model": str(other), "parameters": {"weight": 1.0}}], "output": str(tmp_path / "out")}
    with pytest.raises(ConfigError) as caught:
        merge(config)
    message = str(caught.value)
    assert "vocabulary sizes differ" in message and "token id 40" in message
    assert "[384, 64]" in message and "[390, 64]" in message and str(other) in message
    (other / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"has no tokenizer\.json"):
        merge(config)


@pytest.mark.parametrize("problem", ["shape", "architecture", "missing tensor", "layers"])
def test_incompatible_models_are_refused_up_front(tiny_model_dir: Path, tmp_path: Path, problem: str) -> None:
    import torch

    other = variant(tiny_model_dir, tmp_path / "other", lambda n, t: t)
    weights = read_weights(other)
    needle = {"shape": "has different shapes", "architecture": "different architectures",
              "missing tensor": "but not in", "layers": "different numbers of layers"}[problem]
    if problem == "shape":
        weights["model.layers.0.mlp.up_proj.weight"] = torch.zeros(96, 64)
    elif problem == "missing tensor":
        del weights["model.norm.weight"]
    elif problem == "layers":
        weights = {n: t for n, t in weights.items() if ".layers.1." not in n}
    else:
        edit_config(other, architectures=["MistralForCausalLM"])
    write_weights(other, weights)
    with pytest.raises(ConfigError, match=needle) as caught:
        merge(linear([(tiny_model_dir, 1), (other, 1)], tmp_path / "out"))
    assert "models[1]" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_failure_midway_leaves_nothing_at_the_output(
    tiny_model_dir: Path, shifted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftsdk_plugins.mergers.linear import LinearMerger

    calls = []
    original = LinearMerger.merge_tensor

    def failing(self: LinearMerger, job: Any) -> Any:
        calls.append(job.name)
        if len(calls) == 5:
            raise RuntimeError("disk on fire")
        return original(self, job)

    monkeypatch.setattr(LinearMerger, "merge_tensor", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        merge(linear([(tiny_model_dir, 1), (shifted, 1)], tmp_path / "out", max_shard_size="50KB"))
    assert len(calls) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_manifest_records_method_inputs_hashes_and_versions(
    tiny_model_dir: Path, shifted: Path, tmp_path: Path
) -> None:
    unsharded = variant(shifted, tmp_path / "unsharded", lambda n, t: t)
    config = {"merge_method": "ties", "base_model": str(tiny_model_dir), "dtype": "float32",
              "models": [{"model": str(shifted), "parameters": {"weight": 0.7, "density": [1, 0.5]}},
                         {"model": str(unsharded), "parameters": {"weight": 0.3}}],
              "parameters": {"density": 0.9, "lambda": 1.5}}
    folder = merge(config | {"output": str(tmp_path / "out")})
    manifest = read_manifest(folder)
    assert manifest["kind"] == "model" and manifest["merger"]["name"] == "ties"
    assert manifest["merger"]["config"] == {"normalize": True, "lambda": 1.5, "int8_mask": False, "rescale": False}
    roles = [(i["role"], Path(i["reference"]).name) for i in manifest["inputs"]]
    assert roles == [("model", "m"), ("model", "unsharded"), ("base", tiny_model_dir.name)]
    assert manifest["inputs"][0]["parameters"] == {"weight": 0.7, "density": [1.0, 0.5]}
    digests = [i["weights_sha256"] for i in manifest["inputs"]]
    assert digests[0] == digests[1] != digests[2] and all(len(d) == 64 for d in digests)  # not sharding-dependent
    assert {"torch", "safetensors", "ftsdk"} <= set(manifest["libraries"])
    assert manifest["merge_config"]["parameters"] == {"density": 0.9, "lambda": 1.5}
    assert set(manifest["files"]) == {p.name for p in folder.glob("*.safetensors")}
    assert "ties" in (folder / "README.md").read_text()


def test_settings_follow_mergekit_gradients_and_filters() -> None:
    pytest.importorskip("mergekit")
    from mergekit.config import ConditionalParameter, evaluate_setting

    settings: list[Any] = [0.3, [0, 1], [1, 0.2, 0.6, 0.0], [{"filter": "mlp", "value": [1, 0]}, {"value": 0.5}]]
    names = ["model.layers.3.mlp.up_proj.weight", "model.layers.3.self_attn.q_proj.weight", "model.norm.weight"]
    for setting in settings:
        filtered = isinstance(setting, list) and isinstance(setting[0], dict)
        ours = [Filtered(**e) for e in setting] if filtered else setting
        theirs = [ConditionalParameter(**e) for e in setting] if filtered else setting
        for name in names:
            t = layer_position(name, 7)
            assert evaluate(ours, name, t) == pytest.approx(evaluate_setting(name, theirs, t, validate=float))
    assert layer_position("model.layers.6.mlp.up_proj.weight", 7) == 1.0
    assert layer_position("lm_head.weight", 7) == 0.0


def test_safetensors_reader_and_writer_round_trip(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {"b": torch.randn(3, 5).to(torch.bfloat16), "a": torch.arange(7), "flag": torch.tensor([True, False]),
               "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4), "h": torch.randn(2, 2).half()}
    save_file(tensors, tmp_path / "model.safetensors")
    checkpoint = Checkpoint(tmp_path)
    for name, tensor in tensors.items():
        assert torch.equal(checkpoint.read(name), tensor)
    checkpoint.close()
    out = tmp_path / "out"
    out.mkdir()
    codes = {torch.bfloat16: "BF16", torch.int64: "I64", torch.bool: "BOOL", torch.float32: "F32", torch.float16: "F16"}
    plan = [PlannedTensor(n, codes[t.dtype], tuple(t.shape)) for n, t in sorted(tensors.items())]
    writer = ShardedWriter(out, plan, max_shard_size=16)
    for name, tensor in sorted(tensors.items()):
        writer.write(name, tensor)
    files = writer.close()
    assert INDEX_NAME in files
    loaded = {}
    for file in out.glob("*.safetensors"):
        loaded |= load_file(file)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[n], t) for n, t in tensors.items())


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak RSS")
def test_peak_memory_stays_near_a_few_tensors(tmp_path: Path) -> None:
    """Three 384 MB models merge with a peak RSS rise under half a model's size (a few tensors of 8 MB)."""
    import torch

    for index in range(3):
        folder = tmp_path / f"m{index}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architectures": ["Probe"], "model_type": "probe"}))
        write_weights(folder, {f"model.layers.{i}.w": torch.full((1024, 2048), float(index)) for i in range(48)}, 2)
    script = textwrap.dedent(f"""
        import torch, ftsdk.merging, ftsdk_plugins.mergers.linear
        from ftsdk.merging import merge
        def kilobytes(key):
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
        open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
        before = kilobytes("VmRSS:")
        merge({{"method": "linear", "output": r"{tmp_path / 'out'}", "max_shard_size": "100MB",
               "models": [{{"model": r"{tmp_path}/m%d" % i, "parameters": {{"weight": 1}}}} for i in range(3)]}})
        print((kilobytes("VmHWM:") - before) / 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rise_mb = float(done.stdout.strip().splitlines()[-1])
    assert 8 < rise_mb < 192, f"peak RSS rose by {rise_mb:.0f} MB while merging three 384 MB models"
    merged = read_weights(tmp_path / "out")
    assert len(merged) == 48 and float(merged["model.layers.5.w"][0, 0]) == 1.0


@pytest.mark.parametrize("damage", ["huge length", "not json", "not an object", "entry without offsets",
                                    "offsets past the end", "short file"])
def test_a_damaged_safetensors_header_is_one_clear_error(tmp_path, damage):
    import json
    import struct

    from ftsdk.merging.safetensors_io import read_header
    from ftsdk.plugin.errors import ModelLoadError

    good = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    header = {
        "not json": b"{not json",
        "not an object": b"[1, 2]",
        "entry without offsets": json.dumps({"w": {"dtype": "F32", "shape": [2]}}).encode(),
        "offsets past the end": json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 10**12]}}).encode(),
    }.get(damage, json.dumps(good).encode())
    length = {"huge length": 2**63}.get(damage, len(header))
    body = struct.pack("<Q", length) + header + bytes(8)
    path = tmp_path / "model.safetensors"
    path.write_bytes(body[:5] if damage == "short file" else body)
    with pytest.raises(ModelLoadError, match="cannot read the safetensors header"):
        read_header(path)
