"""LoRA adapters combined with PEFT's add_weighted_adapter through the merger API: exactness claims, errors first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ftsdk import ConfigError
from ftsdk.artifacts import read_manifest
from ftsdk.merging import merge

WEIGHTS = (0.7, -0.4)


def make_adapter(base: Path, folder: Path, rank: int, seed: int, **options: Any) -> Path:
    """A LoRA adapter on q_proj and v_proj with random A and B (as if trained)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        **options)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def deltas(base: Path, adapter: Path) -> dict[str, Any]:
    """Each adapted layer's update (scaling x B @ A) as PEFT applies it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    return {name: module.get_delta_weight("default") for name, module in model.named_modules()
            if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {})}


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "r4": make_adapter(tiny_model_dir, root / "r4", 4, seed=1),
        "r8-rslora": make_adapter(tiny_model_dir, root / "r8", 8, seed=2, use_rslora=True),
        "r4-b": make_adapter(tiny_model_dir, root / "r4b", 4, seed=3),
    }


def config(adapters: list[Path], output: Path, **parameters: Any) -> dict[str, Any]:
    return {"method": "peft_adapters", "models": [{"model": str(a), "parameters": {"weight": w}}
                                                  for a, w in zip(adapters, WEIGHTS)],
            "parameters": parameters, "output": str(output)}


@pytest.mark.parametrize("combination", ["cat", "svd"])
def test_cat_and_full_rank_svd_give_the_weighted_sum_of_the_updates(
    combination: str, tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [adapters["r8-rslora"], adapters["r4"]]  # PEFT copies the first config: rsLoRA
    options = {"svd_rank": 12} if combination == "svd" else {}
    merged = merge(config(inputs, tmp_path / "out", combination_type=combination, **options))
    expected = [deltas(tiny_model_dir, a) for a in inputs]
    got = deltas(tiny_model_dir, merged)
    assert got.keys() == expected[0].keys() and len(got) == 4
    for name, update in got.items():
        target = sum(w * e[name] for w, e in zip(WEIGHTS, expected))
        assert float((update - target).abs().max()) <= 1e-6, name
    manifest = read_manifest(merged)
    assert manifest["kind"] == "adapter" and manifest["rank"] == 12
    assert [i["role"] for i in manifest["inputs"]] == ["adapter", "adapter", "base"]


def test_linear_mixes_a_and_b_separately_so_it_is_not_the_weighted_sum(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [adapters["r4"], adapters["r4-b"]]
    merged = merge(config(inputs, tmp_path / "out", combination_type="linear"))
    expected = [deltas(tiny_model_dir, a) for a in inputs]
    name, update = next(iter(deltas(tiny_model_dir, merged).items()))
    assert float((update - sum(w * e[name] for w, e in zip(WEIGHTS, expected))).abs().max()) > 1e-3


def test_merged_adapter_loads_on_its_base_and_generates(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seeded = config([adapters["r4"], adapters["r4-b"]], tmp_path / "a", combination_type="dare_ties", density=0.5,
                    seed=4)
    merged = merge(seeded)
    again = merge(seeded | {"output": str(tmp_path / "b")})
    assert all(torch.equal(x, y) for x, y in zip(deltas(tiny_model_dir, merged).values(),
                                                  deltas(tiny_model_dir, again).values()))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    prompt = tokenizer("the sky is", return_tensors="pt")
    assert model.generate(**prompt, max_new_tokens=3, do_sample=False).shape[1] == prompt["input_ids"].shape[1] + 3


@pytest.mark.parametrize(
    ("options", "inputs", "needle"),
    [
        ({"combination_type": "linear"}, ["r4", "r8-rslora"], r"equal rank: models\[0\] .* r=4, models\[1\] .* r=8"),
        ({"combination_type": "ties"}, ["r4", "r4-b"], "ties needs a density"),
        ({"combination_type": "magnitude_prune"}, ["r4", "r4-b"], "magnitude_prune needs a density"),
        ({"combination_type": "cat", "density": 0.5}, ["r4", "r4-b"], "density has no effect"),
        ({"combination_type": "cat", "svd_rank": 4}, ["r4", "r4-b"], "svd_rank and svd_clamp apply"),
    ],
)
def test_combinations_peft_would_reject_are_refused_before_loading(
    options: dict[str, Any], inputs: list[str], needle: str, adapters: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from transformers import AutoModelForCausalLM

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the base model was loaded before the config was checked")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_loading)
    with pytest.raises(ConfigError, match=needle):
        merge(config([adapters[name] for name in inputs], tmp_path / "out", **options))
    assert not (tmp_path / "out").exists()


def test_models_that_are_not_adapters_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not a PEFT adapter folder"):
        merge(config([tiny_model_dir], tmp_path / "out"))
