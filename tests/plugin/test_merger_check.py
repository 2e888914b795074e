"""Every built-in merger passes ``ftsdk plugin check merger NAME --full`` with no options given, and every
numeric option of the engine's mergers takes a per-layer gradient and filtered entries, as docs/merging.md says."""

from __future__ import annotations

import pytest

from ftsdk import plugins
from ftsdk.cli import main
from ftsdk.testing.check_merger import example_parameters
from ftsdk.testing.conformance import required_examples

BUILT_IN = [i for i in plugins.list_plugins("merger") if i.cls.__module__.startswith("ftsdk_plugins.")]
#: PEFT's add_weighted_adapter takes one density and svd_clamp per merge; peft_adapters' weight varies by layer
#: with cat and svd only (tests/plugin/test_peft_per_layer.py)
SCALAR_ONLY = {"peft_adapters"}


def test_the_built_in_mergers_are_found():
    assert {"linear", "ties", "slerp", "peft_adapters"} <= {i.name for i in BUILT_IN}


@pytest.mark.parametrize("info", BUILT_IN, ids=lambda i: i.name)
def test_plugin_check_full_passes_without_options(info, capsys):
    if info.missing:
        pytest.skip(f"needs {', '.join(info.missing)}")
    status = main(["plugin", "check", "merger", info.name, "--full"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "ok    behaviour" in out


def test_options_a_merge_needs_come_from_the_fields_examples():
    by_name = {i.name: i.cls for i in BUILT_IN}
    assert example_parameters(by_name["ties"]) == {"weight": 1.0}
    assert example_parameters(by_name["dare_ties"]) == {"weight": 1.0, "seed": 0}
    assert example_parameters(by_name["slerp"]) == {"t": 0.5}
    assert required_examples(by_name["slerp"]) == {"t": 0.5}


def _numeric_options(info: plugins.PluginInfo) -> list[tuple[type, str, dict]]:
    """(options model, option, a valid rest of the config) for each option that takes a number like 0.5."""
    found = []
    for model, rest in ((info.cls.Config, required_examples(info.cls)), (info.cls.InputParams, {})):
        for name, field in model.model_fields.items():
            key = field.alias or name
            try:
                model.model_validate(rest | {key: 0.5})
            except ValueError:
                continue
            found.append((model, key, rest))
    return found


@pytest.mark.parametrize("info", [i for i in BUILT_IN if i.name not in SCALAR_ONLY], ids=lambda i: i.name)
def test_every_numeric_option_takes_a_gradient_and_filters(info):
    options = _numeric_options(info)
    assert options or info.name == "mergekit"
    for model, key, rest in options:
        model.model_validate(rest | {key: [0.5, 1.0]})
        model.model_validate(rest | {key: [{"filter": "mlp", "value": [0.5, 1.0]}, {"value": 0.5}]})


def test_a_required_option_without_an_example_fails_the_config_check():
    from pydantic import Field

    from ftsdk import PluginConfig, TensorMerger
    from ftsdk.testing.conformance import ConformanceError, check_config

    class NeedsT(PluginConfig):
        """Options of a merger whose required option declares no example."""

        t: float = Field(description="Required, with no example.")

    class NoExample(TensorMerger):
        name = "no-example"
        summary = "a test double"
        Config = NeedsT

        def merge_tensor(self, job):
            return job.inputs[0]

    assert required_examples(NoExample) == {}
    with pytest.raises(ConformanceError, match="does not validate"):
        check_config(NoExample)
    check_config(NoExample, {"t": 0.5})
