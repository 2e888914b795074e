"""The conformance kit (ftsdk.testing.conformance) run over every built-in plugin, and shown to catch broken ones.

Default run: config, schema, registration and typed errors of every plugin, every merger's merge, and one
adapter and one objective trained. ``-m slow``: every adapter, objective and quantizer run in full.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from ftsdk import ConfigError, PluginConfig, plugins
from ftsdk.data.formats import FORMATS, FORMATS_OF_TASK
from ftsdk.data.loading import load_dataset
from ftsdk.plugin.kinds import Quantizer
from ftsdk.testing import conformance
from ftsdk.testing.conformance import ConformanceError
from ftsdk.testing.datasets import rows_of_format, rows_of_task
from ftsdk.testing.tiny import write_jsonl
from ftsdk_plugins.adapters.full import FullAdapter
from ftsdk_plugins.mergers.linear import LinearMerger

REWARDS = Path(__file__).parents[2] / "examples" / "rewards.py"
#: valid configs of the plugins with required options
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("adapter", "peft"): {"method": "LORA", "options": {"r": 4}},
    ("objective", "grpo"): {"reward_functions": [f"{REWARDS}:letter_e"], "num_generations": 4,
                            "max_completion_length": 4},
    ("objective", "ppo"): {"reward_functions": [f"{REWARDS}:letter_e"], "max_new_tokens": 4, "ppo_epochs": 1},
    ("merger", "slerp"): {"t": 0.5},
    ("merger", "mergekit"): {"config": {"merge_method": "task_arithmetic", "parameters": {"weight": 0.5}}},
}
PLUGINS = plugins.list_plugins()
#: what the kit finds wrong in built-in plugins today, (kind, name) -> the finding; strict: a fix makes it fail
KNOWN_FINDINGS: dict[tuple[str, str], str] = {}


def _id(info: plugins.PluginInfo) -> str:
    return f"{info.kind}-{info.name}"


def _of(kind: str) -> list[plugins.PluginInfo]:
    return [info for info in PLUGINS if info.kind == kind]


# -- every built-in plugin passes the kit ------------------------------------------------------------


def test_every_kind_has_built_in_plugins():
    assert {info.kind for info in PLUGINS} >= {"adapter", "objective", "merger"}


def _with_findings(infos: list[plugins.PluginInfo]) -> list[Any]:
    return [pytest.param(info, id=_id(info), marks=pytest.mark.xfail(strict=True, reason=KNOWN_FINDINGS[key]))
            if (key := (info.kind, info.name)) in KNOWN_FINDINGS else pytest.param(info, id=_id(info)) for info in infos]


@pytest.mark.parametrize("info", _with_findings(PLUGINS))
def test_config_registration_and_typed_errors(info: plugins.PluginInfo, tiny_model_dir: Path) -> None:
    example = EXAMPLES.get((info.kind, info.name))
    conformance.check_config(info.cls, example)
    assert conformance.check_registration(info.name, info.kind).distribution == "ftsdk"
    conformance.check_typed_errors(info.cls, example, source=tiny_model_dir if info.kind == "quantizer" else None)


def _merge_parameters(info: plugins.PluginInfo) -> dict[str, Any]:
    """Every input weighs 0.5 where the method asks for weights; random methods get a seed."""
    fields = {**info.cls.Config.model_fields, **info.cls.InputParams.model_fields}  # type: ignore[attr-defined]
    parameters = dict(EXAMPLES.get(("merger", info.name), {}))
    if "weight" in fields:
        parameters["weight"] = 0.5
    if "seed" in fields:
        parameters["seed"] = 7
    return parameters


@pytest.mark.parametrize("info", _of("merger"), ids=_id)
def test_merger_merges_deterministically_keeping_shapes_and_dtypes(info, tiny_model_dir, tmp_path):
    if info.name == "peft_adapters":
        conformance.check_merger(info.name, tmp_path, inputs="adapters", base=tiny_model_dir,
                                 parameters={"combination_type": "cat"})
    else:
        conformance.check_merger(info.name, tmp_path, base=tiny_model_dir, parameters=_merge_parameters(info))


def test_lora_trains_and_its_output_reloads(tiny_model_dir, tmp_path):
    result = conformance.check_adapter_trains("lora", {"r": 4}, tmp_path, model_dir=tiny_model_dir)
    assert result.manifest["kind"] == "adapter"


def test_sft_trains_on_alpaca_rows(tiny_model_dir, tiny_data, tmp_path):
    result = conformance.check_objective_trains("sft", {}, tmp_path, model_dir=tiny_model_dir,
                                                data=tiny_data("alpaca", 16))
    assert result.manifest["data"]["train"]["format"] == "alpaca"


@pytest.mark.slow
@pytest.mark.parametrize("info", _of("adapter"), ids=_id)
def test_every_adapter_trains_and_reloads(info, tiny_model_dir, tmp_path):
    tolerance = 1e-2 if info.name == "qlora" else 1e-4  # 4-bit base: reloading re-quantizes (seen: 1.3e-3)
    conformance.check_adapter_trains(info.name, EXAMPLES.get(("adapter", info.name)), tmp_path,
                                     model_dir=tiny_model_dir, tolerance=tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("info", _of("objective"), ids=_id)
def test_every_objective_trains_and_reloads(info, tiny_model_dir, tmp_path):
    conformance.check_objective_trains(info.name, EXAMPLES.get(("objective", info.name)), tmp_path,
                                       model_dir=tiny_model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("info", _of("quantizer"), ids=_id)
def test_every_quantizer_output_loads_in_its_consumer(info, tmp_path):
    from ftsdk.testing.tiny import TinySpec, build_tiny_model

    source = build_tiny_model(tmp_path / "source", TinySpec(hidden_size=256, intermediate_size=512))  # k-quant rows
    conformance.check_quantizer_output_loads(info.name, None, tmp_path, source=source)


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted({info.cls.__module__ for info in PLUGINS}))
def test_every_plugin_module_imports_light(module):
    conformance.check_light_import(module)


# -- the data sets of every format -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FORMATS))
def test_rows_of_every_format_load_as_that_format(name, tmp_path):
    task = next(task for task, names in FORMATS_OF_TASK.items() if name in names)
    loaded = load_dataset(write_jsonl(tmp_path / "rows.jsonl", rows_of_format(name, 8)), task)
    assert loaded.format == name and len(loaded.examples) == 8
    assert rows_of_task(task, 4)[0].keys() == rows_of_format(FORMATS_OF_TASK[task][0], 4)[0].keys()


# -- the kit catches broken plugins --------------------------------------------------------------------


def _adapter(config: type[BaseModel]) -> type[FullAdapter]:
    return type("Broken", (FullAdapter,), {"name": "broken", "Config": config})


def test_a_config_that_is_not_a_plugin_config_is_caught():
    class Loose(BaseModel):
        r: int = Field(4, description="rank")

    with pytest.raises(ConformanceError, match="does not subclass ftsdk.PluginConfig"):
        conformance.check_config(_adapter(Loose))


def test_a_config_accepting_unknown_keys_is_caught():
    class Lenient(PluginConfig):
        model_config = ConfigDict(extra="ignore")
        r: int = Field(4, description="rank")

    with pytest.raises(ConformanceError, match="accepts unknown keys"):
        conformance.check_config(_adapter(Lenient))


def test_a_config_without_json_schema_is_caught():
    from collections.abc import Callable

    class Opaque(PluginConfig):
        score: Callable[[int], int] = Field(abs, description="a Python function")

    with pytest.raises(ConformanceError, match="has no JSON schema"):
        conformance.check_config(_adapter(Opaque))


def test_undocumented_options_and_unbuildable_defaults_are_caught():
    class Undocumented(PluginConfig):
        r: int = 4

    class Required(PluginConfig):
        r: int = Field(description="rank")

    with pytest.raises(ConformanceError, match="without a description: r"):
        conformance.check_config(_adapter(Undocumented))
    with pytest.raises(ConformanceError, match="with every option at its default does not validate"):
        conformance.check_config(_adapter(Required))
    conformance.check_config(_adapter(Required), {"r": 2})


class NormsForgotten(FullAdapter):
    """Trains everything but saves the norms' initial values: the output does not reload as trained."""

    name = "norms-forgotten"

    def save(self, model: Any, path: str) -> None:
        model.save_pretrained(path, state_dict={k: v for k, v in model.state_dict().items() if "norm" not in k})


def test_an_adapter_whose_output_does_not_reload_as_trained_is_caught(tiny_model_dir, tmp_path):
    with pytest.raises(ConformanceError, match="reloaded output computes differently"):
        conformance.check_adapter_trains(NormsForgotten, {}, tmp_path, model_dir=tiny_model_dir)
    assert ("adapter", "norms-forgotten") not in plugins.registry().plugins  # registered for the check only


class FrozenAdapter(FullAdapter):
    name = "frozen"

    def wrap(self, model: Any) -> Any:
        return model.requires_grad_(False)


def test_an_adapter_that_trains_nothing_is_caught(tiny_model_dir, tmp_path):
    with pytest.raises(ConformanceError, match="after wrap\\(\\) no parameter requires a gradient"):
        conformance.check_adapter_trains(FrozenAdapter, {}, tmp_path, model_dir=tiny_model_dir)
    assert not (tmp_path / "frozen-trained").exists()


class HalfLinear(LinearMerger):
    """A linear merge that writes float16 whatever the inputs are."""

    name = "half-linear"

    def prepare(self, request: Any) -> Any:
        prepared = super().prepare(request)
        run = prepared.run

        def run_and_halve(folder: Path) -> dict[str, Any]:
            from safetensors.torch import load_file, save_file

            facts = run(folder)
            for file in folder.glob("*.safetensors"):
                save_file({k: v.half() for k, v in load_file(file).items()}, file, metadata={"format": "pt"})
            return facts

        prepared.run = run_and_halve
        return prepared


def test_a_merger_that_changes_the_dtype_is_caught(tiny_model_dir, tmp_path):
    with pytest.raises(ConformanceError, match="is torch.float16 but the inputs are torch.float32"):
        conformance.check_merger(HalfLinear, tmp_path, base=tiny_model_dir, parameters={"weight": 1.0})


class NoisyLinear(LinearMerger):
    """A linear merge plus unseeded noise: not deterministic."""

    name = "noisy-linear"

    def merge_tensor(self, job: Any) -> Any:
        import torch

        merged = super().merge_tensor(job)
        return merged + 1e-3 * torch.randn(merged.shape)


def test_a_merger_that_does_not_repeat_itself_is_caught(tiny_model_dir, tmp_path):
    with pytest.raises(ConformanceError, match="merging the same inputs twice gave different tensors"):
        conformance.check_merger(NoisyLinear, tmp_path, base=tiny_model_dir, parameters={"weight": 1.0},
                                 dtypes=("float32",))
    conformance.check_merger(NoisyLinear, tmp_path / "again", base=tiny_model_dir, parameters={"weight": 1.0},
                             dtypes=("float32",), deterministic=False)


class CarelessQuantizer(Quantizer):
    """Reads config.json without looking: a missing file is a bare FileNotFoundError."""

    name = "careless"
    summary = "A quantizer with an untyped error"

    def check(self, source: Path, source_kind: str) -> None:
        json.loads((source / "config.json").read_text())

    def quantize(self, job: Any) -> dict[str, Any]:
        return {"files": [], "warnings": []}


def test_an_untyped_error_is_caught(tiny_model_dir, tmp_path):
    with pytest.raises(ConformanceError, match="raised FileNotFoundError") as caught:
        conformance.check_typed_errors(CarelessQuantizer, source=tiny_model_dir)
    assert "raise ftsdk.ConfigError" in str(caught.value)

    def value_error(plugin: Any) -> None:
        raise ValueError("r must be positive")

    with pytest.raises(ConformanceError, match="raised ValueError: r must be positive"):
        conformance.check_typed_errors(FullAdapter, calls=[("wrapping a bad model", value_error)])

    def typed(plugin: Any) -> None:
        raise ConfigError("r must be positive", hint="set r: 1 or more")

    conformance.check_typed_errors(FullAdapter, calls=[("wrapping a bad model", typed)])


def test_a_quantizer_output_nothing_loads_is_caught(tiny_model_dir, tmp_path):
    with pytest.raises(ConformanceError, match=r"facts\['files'\] is \[\]"):
        conformance.check_quantizer_output_loads(CarelessQuantizer, None, tmp_path, source=tiny_model_dir)


def test_registration_without_an_entry_point_is_caught(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "ftsdk-frozen"\n', encoding="utf-8")
    with conformance.active(FrozenAdapter):
        with pytest.raises(ConformanceError, match="declares no \\[project.entry-points.ftsdk\\] table"):
            conformance.check_registration("frozen", "adapter", pyproject=pyproject)
        with pytest.raises(ConformanceError, match="registered in-process only"):
            conformance.check_registration("frozen", "adapter")
    with pytest.raises(ConformanceError, match="ftsdk does not find it"):
        conformance.check_registration("frozen", "adapter")


def test_a_heavy_plugin_module_is_caught(tmp_path):
    (tmp_path / "heavy_plugin.py").write_text("import torch\n", encoding="utf-8")
    with pytest.raises(ConformanceError, match="imports torch"):
        conformance.check_light_import("heavy_plugin", path=[tmp_path])
    conformance.check_light_import("ftsdk_plugins.mergers.linear")
