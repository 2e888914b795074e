"""peft_adapters takes a per-layer weight (a gradient, or filtered entries) with cat and svd, exactly; the other
combinations refuse one before loading anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ftsdk import ConfigError, merge
from tests.plugins.test_merger_peft_adapters import deltas, make_adapter

GRADIENT = [0.0, 1.0]
FILTERED = [{"filter": "v_proj", "value": 2.0}, {"value": -0.5}]


def _expected_weights(name: str, layers: int) -> tuple[float, float]:
    """The two inputs' weights for one module, computed by hand: t = layer / (layers - 1)."""
    t = int(re.search(r"\.layers\.(\d+)\.", name).group(1)) / (layers - 1)
    return GRADIENT[0] + t * (GRADIENT[1] - GRADIENT[0]), 2.0 if "v_proj" in name else -0.5


@pytest.mark.parametrize("combination", ["cat", "svd"])
def test_per_layer_weights_give_the_per_layer_weighted_sum(combination, tiny_model_dir: Path, tmp_path: Path):
    inputs = [make_adapter(tiny_model_dir, tmp_path / f"a{i}", 4, seed=i + 1) for i in range(2)]
    layers = json.loads((tiny_model_dir / "config.json").read_text())["num_hidden_layers"]
    assert layers >= 2
    options = {"svd_rank": 8} if combination == "svd" else {}
    merged = merge({"method": "peft_adapters", "output": str(tmp_path / "out"),
                    "models": [{"model": str(inputs[0]), "parameters": {"weight": GRADIENT}},
                               {"model": str(inputs[1]), "parameters": {"weight": FILTERED}}],
                    "parameters": {"combination_type": combination, **options}})
    expected = [deltas(tiny_model_dir, a) for a in inputs]
    got = deltas(tiny_model_dir, merged)
    assert got.keys() == expected[0].keys() and got
    for name, update in got.items():
        first, second = _expected_weights(name, layers)
        target = first * expected[0][name] + second * expected[1][name]
        assert float((update - target).abs().max()) <= 1e-5, name


def test_a_per_layer_weight_with_linear_is_refused(tiny_model_dir: Path, tmp_path: Path):
    inputs = [make_adapter(tiny_model_dir, tmp_path / f"a{i}", 4, seed=i + 1) for i in range(2)]
    with pytest.raises(ConfigError, match="a per-layer weight needs combination_type cat or svd"):
        merge({"method": "peft_adapters", "output": str(tmp_path / "out"),
               "models": [{"model": str(inputs[0]), "parameters": {"weight": GRADIENT}}, {"model": str(inputs[1])}],
               "parameters": {"combination_type": "linear"}})
    assert not (tmp_path / "out").exists()
