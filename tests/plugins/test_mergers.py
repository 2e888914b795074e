"""The merger plugins against mergekit's own code, configs in both spellings, and errors raised before any work."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftsdk import ConfigError, ModelLoadError, OutputExistsError, UnknownPluginError
from ftsdk.artifacts import read_manifest
from ftsdk.cli import main
from ftsdk.merging import merge
from ftsdk.merging.testing import make_finetunes, read_weights

TIES_LIKE = {"dense": {"weight": 0.5, "density": 0.4}, "sparse": {"weight": 0.3, "density": 0.7},
             "conflict": {"weight": 0.7, "density": 0.5}}
#: method -> (per-model parameters by fine-tune name, top-level parameters, base_model used, seed)
CASES: dict[str, tuple[dict[str, dict[str, Any]], dict[str, Any], bool, int | None]] = {
    "linear": ({"base": {"weight": 0.2}, "dense": {"weight": 0.4}, "sparse": {"weight": 0.3},
                "conflict": {"weight": 0.1}}, {}, False, None),
    "linear-gradients": ({"dense": {"weight": [1, 0.2]}, "sparse": {"weight": [{"filter": "mlp", "value": 2},
                          {"value": 0.5}]}}, {"normalize": False}, False, None),
    "task_arithmetic": ({"dense": {"weight": 0.5}, "sparse": {"weight": 0.3}, "conflict": {"weight": 0.7}},
                        {"lambda": 0.8}, True, None),
    "ties": (TIES_LIKE, {"int8_mask": True}, True, None),
    "ties-gradients": ({"dense": {"weight": 1.0, "density": [1, 0.7, 0.1]},
                        "sparse": {"weight": [0, 0.3, 0.7, 1], "density": 0.5},
                        "conflict": {"weight": [{"filter": "mlp", "value": 0.5}, {"value": 0}], "density": 0.33}},
                       {"normalize": True, "lambda": 1.1}, True, None),
    "breadcrumbs": ({**TIES_LIKE, "dense": {"weight": 0.5, "density": 0.4, "gamma": 0.05}}, {}, True, None),
    "breadcrumbs_ties": (TIES_LIKE, {"normalize": True}, True, None),
    "slerp": ({"base": {}, "dense": {}}, {"t": [{"filter": "self_attn", "value": [0, 0.5, 1]},
                                               {"filter": "mlp", "value": [1, 0.3]}, {"value": 0.4}]}, True, None),
    "dare_ties": (TIES_LIKE, {}, True, 7),
    "dare_linear": (TIES_LIKE, {"rescale": False}, True, 3),
    "della": (TIES_LIKE, {}, True, 11),
    "della_linear": ({name: {**p, "epsilon": 0.1} for name, p in TIES_LIKE.items()}, {}, True, 5),
}


DTYPES = ("float32", "bfloat16", "float16")
#: methods whose magnitude cut sorts: among entries of exactly equal magnitude at the cut ftsdk keeps the lowest
#: indices, mergekit whatever torch's unstable sort puts first (its stable sort gives ftsdk's choice)
SORTED_AT_THE_CUT = {"ties", "breadcrumbs", "breadcrumbs_ties"}
#: largest |ftsdk - mergekit| allowed per (method, input dtype); every other pair must be bitwise equal. Measured
#: on the inputs below (docs/merging.md#agreement-with-mergekit): 16-bit magnitudes tie at the cut often enough
#: that mergekit's unstable sort keeps other entries than ftsdk (bf16 up to 0.048, fp16 up to 0.031)
TOLERANCE = {(method, dtype): 0.05 for method in SORTED_AT_THE_CUT for dtype in ("bfloat16", "float16")}


@pytest.fixture(scope="module")
def finetunes(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``finetunes(dtype)``: the tiny base and three fine-tunes (dense, sparse and sign-conflicting task vectors),
    every tensor of every folder stored in ``dtype``."""
    import torch

    from ftsdk.testing.inputs import cast_model

    made: dict[str, dict[str, Path]] = {}

    def of(dtype: str) -> dict[str, Path]:
        if dtype not in made:
            root = tmp_path_factory.mktemp(f"finetunes-{dtype}")
            base = tiny_model_dir if dtype == "float32" else cast_model(tiny_model_dir, root / "base", dtype)
            made[dtype] = {"base": base, **make_finetunes(base, root)}
            for name, folder in made[dtype].items():
                found = {n: t.dtype for n, t in read_weights(folder).items() if t.dtype != getattr(torch, dtype)}
                assert not found, f"{name} is not pure {dtype}: {found}"
        return made[dtype]

    return of


@pytest.fixture(scope="module")
def inputs(finetunes: Any) -> dict[str, Path]:
    """The float32 base and fine-tunes."""
    return finetunes("float32")


def config_for(case: str, inputs: dict[str, Path], dtype: str = "float32") -> tuple[dict[str, Any], int | None]:
    """A mergekit-format config (without output) for a case, and the case's seed."""
    models, parameters, with_base, seed = copy.deepcopy(CASES[case])
    config: dict[str, Any] = {
        "merge_method": case.split("-")[0],
        "models": [{"model": str(inputs[name]), "parameters": p} for name, p in models.items()],
        "parameters": parameters,
        "dtype": dtype,
    }
    if with_base:
        config["base_model"] = str(inputs["base"])
    return config, seed


def mergekit_merge(config: dict[str, Any], output: Path, seed: int | None, *, stable_sort: bool = False) -> Path:
    """The same merge through mergekit's Python API (what `mergekit-yaml --random-seed` runs); ``stable_sort``
    makes the sorts mergekit's magnitude cuts use stable for the call."""
    pytest.importorskip("mergekit")
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    with pytest.MonkeyPatch.context() as patch:
        if stable_sort:
            argsort, sort = torch.argsort, torch.sort
            patch.setattr(torch, "argsort", lambda x, *a, **k: argsort(x, *a, **{**k, "stable": True}))
            patch.setattr(torch, "sort", lambda x, *a, **k: sort(x, *a, **{**k, "stable": True}))
        run_merge(MergeConfiguration.model_validate(config), str(output),
                  MergeOptions(random_seed=seed, quiet=True, write_model_card=False))
    return output


def max_difference(a: Path, b: Path) -> float:
    left, right = read_weights(a), read_weights(b)
    assert set(left) == set(right)
    return max(float((left[n].double() - right[n].double()).abs().max()) for n in left)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_each_method_equals_mergekit(case: str, dtype: str, finetunes: Any, tmp_path: Path) -> None:
    import torch

    inputs = finetunes(dtype)
    config, seed = config_for(case, inputs, dtype)
    ours = config | {"output": str(tmp_path / "ftsdk")}
    if seed is not None:
        ours["parameters"] = {**config["parameters"], "seed": seed}
    merged = merge(ours)
    assert {t.dtype for t in read_weights(merged).values()} == {getattr(torch, dtype)}
    assert max_difference(merged, inputs["base"]) > 1e-3  # the merge did change the weights
    method = config["merge_method"]
    reference = mergekit_merge(config, tmp_path / "mergekit", seed)
    assert max_difference(merged, reference) <= TOLERANCE.get((method, dtype), 0)
    if method in SORTED_AT_THE_CUT:
        assert max_difference(merged, mergekit_merge(config, tmp_path / "stable", seed, stable_sort=True)) == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_dare_draws_in_mergekits_dtype(dtype: str) -> None:
    """mergekit draws DARE's mask in bfloat16 for bfloat16 inputs (the keep probability 0.3 becomes 0.30078),
    in float32 otherwise; ftsdk draws the same numbers, so its drop equals mergekit's."""
    import torch

    pytest.importorskip("mergekit")
    from mergekit.sparsify import RescaleNorm, bernoulli

    from ftsdk_plugins.mergers.sparsify import random

    delta = torch.randn(400, 300, generator=torch.Generator().manual_seed(0)).to(getattr(torch, dtype))
    torch.manual_seed(5)
    theirs = bernoulli(delta.clone(), 0.3, RescaleNorm.l1)
    ours = random(delta.clone(), {"density": 0.3}, True, torch.Generator().manual_seed(5))
    assert ours.dtype == delta.dtype and torch.equal(ours, theirs)
    ones = torch.ones(1 << 24, dtype=delta.dtype)
    kept = float(random(ones, {"density": 0.3}, False, torch.Generator().manual_seed(1)).float().mean())
    probability = float(torch.tensor(0.3, dtype=torch.bfloat16)) if dtype == "bfloat16" else 0.3
    assert abs(kept - probability) < 4e-4  # 0.30078 vs 0.3 is 7 standard deviations apart here


def test_merged_model_loads_and_generates(inputs: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config, _ = config_for("ties", inputs)
    folder = merge(config | {"output": str(tmp_path / "out")})
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt = tokenizer("the apple is", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 5
    weights = read_weights(folder)
    assert torch.equal(model.model.embed_tokens.weight, weights["model.embed_tokens.weight"])


def test_random_methods_reproduce_from_the_recorded_seed(inputs: dict[str, Path], tmp_path: Path) -> None:
    config, _ = config_for("dare_ties", inputs)
    first = merge(config | {"output": str(tmp_path / "a")})
    seed = read_manifest(first)["seed"]
    assert isinstance(seed, int)
    again = merge(config | {"output": str(tmp_path / "b"), "parameters": {"seed": seed}})
    other = merge(config | {"output": str(tmp_path / "c"), "parameters": {"seed": seed + 1}})
    assert max_difference(first, again) == 0
    assert max_difference(first, other) > 0


def test_dare_drop_rate_and_expected_value() -> None:
    import torch

    from ftsdk_plugins.mergers.sparsify import random

    delta = torch.randn(200, 500, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    kept = random(delta.clone(), {"density": 0.3}, False, generator)
    assert abs(float((kept != 0).float().mean()) - 0.3) < 0.01
    rescaled = random(delta.clone(), {"density": 0.3}, True, generator)
    assert torch.allclose(rescaled.abs().sum(), delta.abs().sum(), rtol=1e-5)
    mean = sum(random(delta[:10].clone(), {"density": 0.3}, False, generator) for _ in range(400)) / 400
    assert float((mean / 0.3 - delta[:10]).abs().mean()) < 0.1 * float(delta[:10].abs().mean())


def test_mergekit_yaml_with_a_full_range_slice_runs_through_the_cli(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layers = json.loads((inputs["base"] / "config.json").read_text())["num_hidden_layers"]
    text = {
        "slices": [{"sources": [{"model": str(inputs["base"]), "layer_range": [0, layers]},
                                {"model": str(inputs["dense"]), "layer_range": [0, layers]}]}],
        "merge_method": "slerp",
        "base_model": str(inputs["base"]),
        "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                             {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]},
        "dtype": "float32",
    }
    path = tmp_path / "slerp.yml"
    path.write_text(yaml.safe_dump(text))
    assert main(["merge", str(path), "--output", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == str(tmp_path / "out")
    reference = mergekit_merge(text, tmp_path / "mergekit", None)
    assert max_difference(tmp_path / "out", reference) == 0


def _refused(config: dict[str, Any], error: type[Exception], *needles: str) -> str:
    with pytest.raises(error) as caught:
        merge(config)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(
    ("change", "error", "needles"),
    [
        ({"merge_method": "tie"}, UnknownPluginError, ["did you mean 'ties'"]),
        ({"parameters": {"densty": 0.5}}, ConfigError, ["densty", "valid parameters"]),
        ({"models": "drop-weights"}, ConfigError, ["no weight for tensor", "models[0]"]),
        ({"models": "density-1.5"}, ConfigError, ["models[0].parameters.density", "at most 1"]),
        ({"base_model": None}, ConfigError, ["needs a base_model"]),
        ({"models": "normalize-per-model"}, ConfigError, ["apply to the whole merge"]),
        ({"slices": [{"sources": [{"model": "a", "layer_range": [0, 1]}]}, {"sources": []}], "backend": "ftsdk"},
         ConfigError, ["2 entries under 'slices'", "needs mergekit", "remove 'backend: ftsdk'"]),
        ({"tokenizer_source": "union", "backend": "ftsdk"}, ConfigError, ["union", "needs mergekit"]),
        ({"modules": {"text": {}}, "backend": "ftsdk"}, ConfigError, ["modules", "needs mergekit"]),
        ({"models": "missing-folder"}, ModelLoadError, ["models[0]", "no such model folder"]),
    ],
)
def test_bad_configs_fail_before_any_work(
    change: dict[str, Any], error: type[Exception], needles: list[str], inputs: dict[str, Path], tmp_path: Path
) -> None:
    config, _ = config_for("ties", inputs)
    models = config["models"]
    edits = {
        "drop-weights": [{**m, "parameters": {"density": 0.5}} for m in models],
        "density-1.5": [{**models[0], "parameters": {"weight": 1, "density": 1.5}}],
        "normalize-per-model": [{**models[0], "parameters": {"weight": 1, "normalize": True}}],
        "missing-folder": [{"model": str(tmp_path / "nowhere"), "parameters": {"weight": 1}}],
    }
    config |= {key: edits.get(value, value) if isinstance(value, str) else value for key, value in change.items()}
    if "slices" in change:
        config.pop("models")
    _refused(config | {"output": str(tmp_path / "out")}, error, *needles)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


@pytest.mark.parametrize(
    ("case", "parameters", "needles"),
    [
        ("slerp", {"t": 1.5}, ["parameters.t", "at most 1"]),
        ("slerp", {"t": [{"filter": "mlp", "value": [0, -0.2]}, {"value": 0.5}]}, ["parameters.t", "at least 0"]),
        ("dare_ties", {"density": 0}, ["parameters.density", "greater than 0"]),
        ("ties", {"density": [1, 0]}, ["parameters.density", "greater than 0"]),
        ("breadcrumbs", {"density": 0.0}, ["parameters.density", "greater than 0"]),
    ],
)
def test_out_of_range_options_are_refused(
    case: str, parameters: dict[str, Any], needles: list[str], inputs: dict[str, Path], tmp_path: Path
) -> None:
    """SLERP interpolates (t in [0, 1]); a density of 0 would silently drop a whole task vector (weight 0 says it)."""
    config, _ = config_for(case, inputs)
    config["parameters"] = {**config["parameters"], **parameters}
    _refused(config | {"output": str(tmp_path / "out")}, ConfigError, *needles)
    assert not (tmp_path / "out").exists()


def test_negative_linear_weights_extrapolate_as_in_mergekit(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Kept on purpose: weights 1.5 and -0.5 move past the first model, away from the second (model
    extrapolation, as in ExPO), and mergekit computes the same."""
    import torch

    config = {"merge_method": "linear", "dtype": "float32",
              "models": [{"model": str(inputs["dense"]), "parameters": {"weight": 1.5}},
                         {"model": str(inputs["base"]), "parameters": {"weight": -0.5}}]}
    merged = read_weights(merge(config | {"output": str(tmp_path / "ftsdk")}))
    dense, base = read_weights(inputs["dense"]), read_weights(inputs["base"])
    for name, tensor in merged.items():
        assert torch.allclose(tensor, dense[name] + 0.5 * (dense[name] - base[name]), atol=1e-6)
    assert max_difference(tmp_path / "ftsdk", mergekit_merge(config, tmp_path / "mergekit", None)) == 0


def test_method_shape_rules_are_checked(inputs: dict[str, Path], tmp_path: Path) -> None:
    slerp, _ = config_for("slerp", inputs)
    slerp["models"].append({"model": str(inputs["sparse"])})
    _refused(slerp | {"output": str(tmp_path / "s")}, ConfigError, "takes 1 models besides the base model, got 2")
    linear, _ = config_for("linear", inputs)
    linear["models"] = [{"model": str(inputs["dense"]), "parameters": {"weight": 1}},
                        {"model": str(inputs["sparse"]), "parameters": {"weight": -1}}]
    _refused(linear | {"output": str(tmp_path / "l")}, ConfigError, "weights sum to 0")
    della, _ = config_for("della", inputs)
    della["parameters"] = {"epsilon": 0.45}
    _refused(della | {"output": str(tmp_path / "d")}, ConfigError, "epsilon")


def test_partial_layer_ranges_and_adapters_are_refused_with_a_way_out(inputs: dict[str, Path], tmp_path: Path) -> None:
    """Without mergekit (backend: ftsdk), a partial layer range is refused; tests/plugins/test_merger_mergekit.py runs it."""
    text = {"merge_method": "slerp", "base_model": str(inputs["base"]), "parameters": {"t": 0.5}, "backend": "ftsdk",
            "slices": [{"sources": [{"model": str(inputs["base"]), "layer_range": [0, 1]},
                                    {"model": str(inputs["dense"]), "layer_range": [0, 1]}]}]}
    _refused(text | {"output": str(tmp_path / "o")}, ConfigError, "layer_range [0, 1]", "has 2 layers", "needs mergekit")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    config, _ = config_for("ties", inputs)
    config["models"][0]["model"] = str(adapter)
    _refused(config | {"output": str(tmp_path / "o")}, ConfigError, "is a PEFT adapter", "peft_adapters")


def test_existing_output_is_refused_and_cli_errors_exit_2(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    config, _ = config_for("ties", inputs)
    _refused(config | {"output": str(tmp_path / "out")}, OutputExistsError, "not empty")
    path = tmp_path / "ties.yaml"
    path.write_text(yaml.safe_dump(config | {"output": "out"}))
    assert main(["merge", str(path)]) == 2
    assert "output folder" in capsys.readouterr().err
    assert main(["merge", str(path), "--overwrite"]) == 0
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "ftsdk.json").is_file()


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[2] / "examples" / "merges").glob("*.yaml")))
def test_example_configs_validate(example: Path) -> None:
    from ftsdk.merging import load_merge_config
    from ftsdk.merging.request import build_request

    config = load_merge_config(example)
    merger, request = build_request(config)
    assert merger.name == config.method and request.inputs and config.output is not None


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("low_first", [True, False])
def test_magnitude_cut_keeps_exactly_k_and_breaks_ties_by_index(
    keep: bool, low_first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from ftsdk_plugins.mergers import sparsify

    monkeypatch.setattr(sparsify, "CHUNK", 7)  # ties spread over several chunks
    values = torch.tensor([0.5, -2.0, 0.0, 2.0, 1.0, -1.0, 2.0, 0.0, -0.5, 1.0, 3.0, -2.0, 1.0, 0.0, 2.0, -1.0, 0.5])
    if low_first:
        order = torch.argsort(values.abs(), descending=True, stable=True)
    else:
        order = torch.argsort(values.abs(), stable=True).flip(0)
    for k in range(len(values) + 1):
        expected = torch.zeros_like(values) if keep else values.clone()
        expected[order[:k]] = values[order[:k]] if keep else 0
        got = values.clone()
        sparsify.zero_outside_top(got, k, keep=keep, low_index_first=low_first)
        assert torch.equal(got, expected), k


@pytest.mark.parametrize("method", ["ties", "breadcrumbs_ties"])
def test_ties_at_the_cut_match_mergekit_with_a_stable_sort(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries of equal magnitude at the cut: ftsdk keeps the lowest indices, which is mergekit's choice once its
    (unstable) argsort is made stable; the rest of the arithmetic is identical."""
    import torch

    pytest.importorskip("mergekit")
    from mergekit import merge_methods
    from mergekit.merge_methods.base import TensorGroup

    from ftsdk.merging.engine import TensorJob
    from ftsdk_plugins.mergers.sparsify import SPARSIFIERS
    from ftsdk_plugins.mergers.task_arithmetic import merge_task_vectors

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(300, 200, generator=generator)
    models = [base + torch.randint(-20, 21, base.shape, generator=generator) / 1000 for _ in range(3)]  # many ties
    params = [{"weight": w, "density": d, "gamma": 0.02} for w, d in ((0.5, 0.4), (0.3, 0.7), (0.7, 0.5))]
    argsort, sort = torch.argsort, torch.sort
    monkeypatch.setattr(torch, "argsort", lambda x, *a, **k: argsort(x, *a, **{**k, "stable": True}))
    monkeypatch.setattr(torch, "sort", lambda x, *a, **k: sort(x, *a, **{**k, "stable": True}))
    group = TensorGroup.from_tensors([base, *models], ids=["base", 0, 1, 2], base_index=0)
    per_input = {key: {i: p[key] for i, p in enumerate(params)} for key in ("weight", "density", "gamma")}
    if method == "ties":
        del per_input["gamma"]
    (reference,) = merge_methods.get(method)((group,), parameters={**per_input, "normalize": True})
    job = TensorJob("t", base.clone(), [m.clone() for m in models], {"normalize": True, "lambda_": 1.0}, params, None)
    sparsifier = SPARSIFIERS["magnitude" if method == "ties" else "magnitude_outliers"]
    assert torch.equal(merge_task_vectors(job, sparsifier, consensus=True), reference)
