"""The mergekit merger: mergekit YAML that ftsdk's engine does not run goes to mergekit itself, wrapped in ftsdk's
checks, atomic output, manifest and model card; its output equals mergekit's own run and loads in transformers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftsdk import ConfigError, ModelLoadError, PluginUnavailableError
from ftsdk.artifacts import read_manifest
from ftsdk.cli import main
from ftsdk.merging import load_merge_config, merge
from ftsdk.merging.mergekit_config import MERGEKIT_ONLY_METHODS, mergekit_reason
from ftsdk.merging.testing import make_finetunes, read_weights

pytest.importorskip("mergekit")


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny random Llama (2 layers) and three fine-tunes of it."""
    return {"base": tiny_model_dir, **make_finetunes(tiny_model_dir, tmp_path_factory.mktemp("mergekit-inputs"))}


def mergekit_run(document: dict[str, Any], output: Path, seed: int | None = None) -> Path:
    """mergekit's own Python API on a document, as `mergekit-yaml --random-seed` runs it."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(MergeConfiguration.model_validate(document), str(output),
              MergeOptions(random_seed=seed, quiet=True, write_model_card=False))
    return output


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    left, right = read_weights(a), read_weights(b)
    assert sorted(left) == sorted(right)
    for name, tensor in left.items():
        assert tensor.dtype == right[name].dtype and torch.equal(tensor, right[name]), name


def frankenmerge(models: dict[str, Path]) -> dict[str, Any]:
    """A passthrough frankenmerge: all 2 layers of the base, then layer 1 of a fine-tune again (3 layers)."""
    return {"slices": [{"sources": [{"model": str(models["base"]), "layer_range": [0, 2]}]},
                       {"sources": [{"model": str(models["dense"]), "layer_range": [1, 2]}]}],
            "merge_method": "passthrough", "dtype": "float32"}


def test_a_frankenmerge_yaml_runs_through_mergekit_from_the_cli(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    document = frankenmerge(models)
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(document | {"output": "merged"}))
    assert main(["merge", str(path)]) == 0
    out = Path(json.loads(capsys.readouterr().out)["output"])
    assert out == tmp_path / "merged"
    assert_same_weights(out, mergekit_run(document, tmp_path / "mergekit"))
    rerun = yaml.safe_load((out / "mergekit_config.yml").read_text())  # the card's recipe, rerun by mergekit
    assert_same_weights(out, mergekit_run(rerun, tmp_path / "rerun"))

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.config.num_hidden_layers == 3
    weights = read_weights(models["dense"])
    assert torch.equal(model.model.layers[2].mlp.up_proj.weight, weights["model.layers.1.mlp.up_proj.weight"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer("the apple is", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 3

    manifest = read_manifest(out)
    assert manifest["merger"]["name"] == "mergekit"
    assert manifest["mergekit"] == {"version": "0.1.5", "license": "LGPL-3.0-only", "merge_method": "passthrough"}
    assert manifest["merger"]["config"]["config"]["merge_method"] == "passthrough"
    assert [Path(i["reference"]).name for i in manifest["inputs"]] == [models["base"].name, "dense"]
    assert manifest["files"] == ["model.safetensors"]
    card = (out / "README.md").read_text()
    assert "mergekit" in card and "LGPL-3.0-only" in card and "passthrough" in card


def test_input_hashes_are_the_engines(models: dict[str, Path], tmp_path: Path) -> None:
    ours = merge({"method": "linear", "models": [{"model": str(models["base"]), "parameters": {"weight": 1}}],
                  "output": str(tmp_path / "engine")})
    theirs = merge(frankenmerge(models) | {"output": str(tmp_path / "mergekit")})
    assert read_manifest(ours)["inputs"][0]["weights_sha256"] == read_manifest(theirs)["inputs"][0]["weights_sha256"]


METHODS: dict[str, dict[str, Any]] = {
    "model_stock": {"base_model": "base", "models": [{"model": n} for n in ("dense", "sparse", "conflict")]},
    "nuslerp": {"models": [{"model": "dense", "parameters": {"weight": 0.6}},
                           {"model": "sparse", "parameters": {"weight": 0.4}}]},
    "sce": {"base_model": "base", "models": [{"model": n} for n in ("dense", "sparse", "conflict")],
            "parameters": {"select_topk": 0.5}},
    "multislerp": {"base_model": "base", "models": [{"model": n, "parameters": {"weight": w}}
                                                    for n, w in (("dense", 0.5), ("sparse", 0.3), ("conflict", 0.2))]},
    "karcher": {"models": [{"model": n} for n in ("dense", "sparse", "conflict")]},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_mergekit_only_methods_equal_mergekit_and_load(
    method: str, models: dict[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    document = json.loads(json.dumps(METHODS[method]))
    if "base_model" in document:
        document["base_model"] = str(models[document["base_model"]])
    for entry in document["models"]:
        entry["model"] = str(models[entry["model"]])
    document |= {"merge_method": method, "dtype": "float32"}
    config = load_merge_config(document | {"output": str(tmp_path / "ftsdk")})
    assert config.method == "mergekit" and config.backend == "mergekit"
    out = merge(config)
    assert_same_weights(out, mergekit_run(document, tmp_path / "mergekit"))
    AutoModelForCausalLM.from_pretrained(out)


def test_a_union_tokenizer_goes_to_mergekit(models: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from ftsdk.merging.testing import variant, write_weights

    grown = variant(models["dense"], tmp_path / "grown", lambda n, t: t)  # a fine-tune that added two tokens
    tokenizer = AutoTokenizer.from_pretrained(grown)
    tokenizer.add_tokens(["<tool>", "</tool>"])
    tokenizer.save_pretrained(grown)
    weights = read_weights(grown)
    rows = weights["model.embed_tokens.weight"]
    weights["model.embed_tokens.weight"] = torch.cat([rows, torch.full((2, rows.shape[1]), 0.5)])
    write_weights(grown, weights)
    config = json.loads((grown / "config.json").read_text())
    (grown / "config.json").write_text(json.dumps(config | {"vocab_size": len(tokenizer)}))
    document = {"merge_method": "linear", "tokenizer_source": "union", "dtype": "float32",
                "models": [{"model": str(models["base"]), "parameters": {"weight": 0.5}},
                           {"model": str(grown), "parameters": {"weight": 0.5}}]}
    out = merge(document | {"output": str(tmp_path / "ftsdk")})
    assert read_manifest(out)["merger"]["name"] == "mergekit"
    assert_same_weights(out, mergekit_run(document, tmp_path / "mergekit"))
    merged = AutoTokenizer.from_pretrained(out)
    assert len(merged) == len(tokenizer) and merged.convert_tokens_to_ids("<tool>") == len(tokenizer) - 2
    embeddings = read_weights(out)["model.embed_tokens.weight"]
    assert embeddings.shape[0] == len(tokenizer)


def test_random_methods_take_the_seed_and_leave_the_callers_generators_alone(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """`backend: mergekit` sends even a method ftsdk runs to mergekit; with one seed both draw the same numbers."""
    import torch

    config = {"merge_method": "dare_ties", "base_model": str(models["base"]), "dtype": "float32",
              "models": [{"model": str(models[n]), "parameters": {"weight": 0.5, "density": 0.4}}
                         for n in ("dense", "sparse")], "parameters": {"seed": 7}}
    torch.manual_seed(123)
    random.seed(123)
    expected = (torch.rand(1), random.random())
    torch.manual_seed(123)
    random.seed(123)
    through = merge(config | {"backend": "mergekit", "output": str(tmp_path / "mergekit")})
    assert (torch.rand(1), random.random()) == expected
    assert read_manifest(through)["seed"] == 7 and read_manifest(through)["merger"]["name"] == "mergekit"
    own = merge(config | {"output": str(tmp_path / "ftsdk")})
    assert read_manifest(own)["merger"]["name"] == "dare_ties"
    assert_same_weights(through, own)
    drawn = merge(config | {"backend": "mergekit", "parameters": {}, "output": str(tmp_path / "drawn")})
    assert isinstance(read_manifest(drawn)["seed"], int)


def test_the_engine_stays_the_default_and_the_routing_is_explained(models: dict[str, Path]) -> None:
    from mergekit.merge_methods.registry import registered_methods

    from ftsdk import plugins

    ours = {info.name for info in plugins.list_plugins() if info.kind == "merger"}
    assert sorted(MERGEKIT_ONLY_METHODS) == sorted({m.spec.name for m in registered_methods()} - ours)
    whole = {"merge_method": "slerp", "base_model": str(models["base"]), "parameters": {"t": 0.5},
             "slices": [{"sources": [{"model": str(models[n]), "layer_range": [0, 2]} for n in ("base", "dense")]}]}
    assert mergekit_reason(whole) is None and load_merge_config(whole).method == "slerp"
    part = json.loads(json.dumps(whole))
    part["slices"][0]["sources"][1]["layer_range"] = [0, 1]
    assert "layer_range [0, 1]" in (mergekit_reason(part) or "")
    assert "union" in (mergekit_reason({"merge_method": "ties", "tokenizer": {"source": "union"}}) or "")
    assert "chat_template" in (mergekit_reason({"merge_method": "ties", "chat_template": "chatml"}) or "")
    assert "modules" in (mergekit_reason({"merge_method": "linear", "modules": {"text": {}}}) or "")
    with pytest.raises(ConfigError, match=r"needs mergekit, and backend is 'ftsdk'; remove 'backend: ftsdk'"):
        load_merge_config(part | {"backend": "ftsdk"})


def test_the_explicit_form_and_relative_paths(models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    for name in ("base", "dense"):
        shutil.copytree(models[name], tmp_path / name)
    document = {"slices": [{"sources": [{"model": "base", "layer_range": [0, 2]}]},
                           {"sources": [{"model": "dense", "layer_range": [0, 1]}]}],
                "merge_method": "passthrough", "dtype": "float32"}
    path = tmp_path / "explicit.yaml"
    path.write_text(yaml.safe_dump({"method": "mergekit", "parameters": {"config": document}, "output": "out"}))
    config = load_merge_config(path)
    assert [m.model for m in config.models] == [str(tmp_path / "base"), str(tmp_path / "dense")]
    out = merge(config)
    absolute = json.loads(json.dumps(document).replace('"base"', json.dumps(str(tmp_path / "base")))
                          .replace('"dense"', json.dumps(str(tmp_path / "dense"))))
    assert_same_weights(out, mergekit_run(absolute, tmp_path / "mergekit"))


def test_ftsdk_models_with_a_mergekit_method(models: dict[str, Path], tmp_path: Path) -> None:
    """`method: mergekit` whose document names no models takes the config's models (their parameters are
    mergekit's) and base_model."""
    config = {"method": "mergekit", "base_model": str(models["base"]),
              "models": [{"model": str(models[n]), "parameters": {"weight": w}} for n, w in (("dense", 0.6),
                                                                                          ("sparse", 0.4))],
              "parameters": {"config": {"merge_method": "nuslerp", "dtype": "float32"}}}
    out = merge(config | {"output": str(tmp_path / "ftsdk")})
    document = {"merge_method": "nuslerp", "dtype": "float32", "base_model": str(models["base"]),
                "models": config["models"]}
    assert_same_weights(out, mergekit_run(document, tmp_path / "mergekit"))
    assert [i["role"] for i in read_manifest(out)["inputs"]] == ["base", "model", "model"]


def _refused(config: dict[str, Any], error: type[Exception], *needles: str, output: Path) -> None:
    with pytest.raises(error) as caught:
        merge(config | {"output": str(output)})
    for needle in needles:
        assert needle in str(caught.value), str(caught.value)
    assert not output.exists() and not list(output.parent.glob(f".{output.name}*"))


def test_bad_documents_fail_before_any_work(models: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mergekit.merge

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mergekit ran")

    monkeypatch.setattr(mergekit.merge, "run_merge", never)
    out = tmp_path / "out"
    wide = frankenmerge(models)
    wide["slices"][1]["sources"][0]["layer_range"] = [1, 5]
    _refused(wide, ConfigError, "slices[1]: layer_range [1, 5]", "outside its 2 layers", output=out)
    missing = frankenmerge(models)
    missing["slices"][1]["sources"][0]["model"] = str(tmp_path / "nowhere")
    _refused(missing, ModelLoadError, "no such model folder", output=out)
    nuslerp = {"merge_method": "nuslerp", "models": [{"model": str(models[n])} for n in ("dense", "sparse")]}
    _refused(nuslerp, ConfigError, "mergekit cannot plan this merge", "Missing required parameter weight", output=out)
    unknown = {"method": "mergekit", "parameters": {"config": {"merge_method": "passthru",
                                                               "models": [{"model": str(models["base"])}]}}}
    _refused(unknown, ConfigError, "mergekit has no merge method 'passthru'", "passthrough", output=out)
    both = {"method": "mergekit", "models": [{"model": str(models["base"])}],
            "parameters": {"config": frankenmerge(models) | {"models": [{"model": str(models["base"])}]}}}
    _refused(both, ConfigError, "not a valid mergekit config", output=out)
    mistral = tmp_path / "mistral"
    import shutil

    shutil.copytree(models["dense"], mistral)
    config = json.loads((mistral / "config.json").read_text())
    (mistral / "config.json").write_text(json.dumps(config | {"architectures": ["MistralForCausalLM"],
                                                              "model_type": "mistral"}))
    crime = {"merge_method": "model_stock", "base_model": str(models["base"]),
             "models": [{"model": str(models["sparse"])}, {"model": str(mistral)}]}
    _refused(crime, ConfigError, "mergekit refuses the inputs", "allow_crimes", output=out)
    from ftsdk.merging.testing import variant

    narrow = variant(models["dense"], tmp_path / "narrow", lambda n, t: t[..., :-1] if t.dim() == 2 else t)
    franken = frankenmerge(models)
    franken["slices"][1]["sources"][0]["model"] = str(narrow)
    _refused(franken, ConfigError, "differ at model.embed_tokens.weight: (64,) vs (63,)", output=out)


def test_without_mergekit_installed_the_error_says_how(models: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ftsdk_plugins.mergers.mergekit_backend import MergekitMerger

    monkeypatch.setattr(MergekitMerger, "requires", ("mergekit_is_not_installed",))
    _refused(frankenmerge(models), PluginUnavailableError, 'pip install "ftsdk[mergekit]"', output=tmp_path / "o")


def test_a_failure_inside_mergekit_leaves_nothing(models: dict[str, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import mergekit.merge

    def half(config: Any, out_path: str, options: Any) -> None:
        (Path(out_path) / "model-00001-of-00002.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mergekit.merge, "run_merge", half)
    with pytest.raises(RuntimeError, match="disk on fire"):
        merge(frankenmerge(models) | {"output": str(tmp_path / "out")})
    assert sorted(p.name for p in tmp_path.iterdir()) == []
