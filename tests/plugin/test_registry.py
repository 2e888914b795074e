"""The plugin manager's success and failure modes, with real entry points written on the fly."""

from __future__ import annotations

import importlib
import json

import pytest

from ftsdk import ConfigError, plugins
from ftsdk.plugin.errors import PluginConflictError, PluginError, PluginUnavailableError, UnknownPluginError
from tests.helpers import make_distribution, run_python

GOOD = """
from ftsdk import Adapter, PluginConfig, hookimpl

class Options(PluginConfig):
    size: int = 1

class EchoAdapter(Adapter):
    name = "echo"
    summary = "returns the model unchanged"
    Config = Options
    def wrap(self, model):
        return model

@hookimpl
def register_adapters(register):
    register(EchoAdapter)
"""
CLAIMS_LORA = """
from ftsdk import Adapter, hookimpl

class OtherLora(Adapter):
    name = "lora"
    summary = "a second lora"
    def wrap(self, model):
        return model

@hookimpl
def register_adapters(register):
    register(OtherLora)
"""
NEEDS_MISSING = """
from ftsdk import Quantizer, hookimpl

class Ghost(Quantizer):
    name = "ghost"
    summary = "needs a package that is not installed"
    requires = ("no_such_package_ftsdk_test",)
    install_hint = "pip install ghost-backend"
    def quantize(self, source, output, calibration=None):
        raise AssertionError("never called")

@hookimpl
def register_quantizers(register):
    register(Ghost)
"""
AN_OBJECTIVE = """
from ftsdk import Objective, PluginConfig, hookimpl

class Options(PluginConfig):
    margin: float = 0.5

class HingeObjective(Objective):
    name = "hinge"
    summary = "a preference objective"
    data_task = "preference"
    Config = Options
    def train(self, job):
        raise AssertionError("never called")

@hookimpl
def register_objectives(register):
    register(HingeObjective)
"""
NOT_A_PLUGIN = """
from ftsdk import hookimpl

class Plain:
    name = "plain"

@hookimpl
def register_mergers(register):
    register(Plain)
"""


@pytest.fixture
def third_party(tmp_path, monkeypatch):
    """Install fake distributions (real dist-info on sys.path) and rebuild the registry around the test."""

    def install(name: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
        make_distribution(tmp_path / name, name, "1.2.3", entry_points, modules)
        monkeypatch.syspath_prepend(str(tmp_path / name))
        importlib.invalidate_caches()
        plugins.reload()

    yield install
    monkeypatch.undo()
    importlib.invalidate_caches()
    plugins.reload()


def test_builtin_plugins_come_from_entry_points():
    lora = plugins.get("adapter", "lora")
    assert (lora.distribution, lora.source) == ("ftsdk", "lora")
    assert plugins.get("objective", "sft").available


def test_third_party_plugin_is_discovered(third_party):
    third_party("echo-dist", {"echo_plugin": GOOD}, {"echo": "echo_plugin"})
    info = plugins.get("adapter", "echo")
    assert (info.distribution, info.version, info.summary) == ("echo-dist", "1.2.3", "returns the model unchanged")
    assert plugins.create("adapter", "echo", {"size": 3}).config.size == 3


def test_third_party_objective_is_discovered_through_register_objectives(third_party):
    third_party("hinge-dist", {"hinge_plugin": AN_OBJECTIVE}, {"hinge": "hinge_plugin"})
    info = plugins.get("objective", "hinge")
    assert (info.kind, info.distribution, info.cls.data_task) == ("objective", "hinge-dist", "preference")
    assert plugins.create("objective", "hinge", {"margin": 1.0}).config.margin == 1.0


def test_broken_import_is_reported_and_others_keep_working(third_party):
    third_party("bad-dist", {"bad_plugin": "raise ImportError('backend exploded')"}, {"bad": "bad_plugin"})
    failures = {b.source: b for b in plugins.broken()}
    assert failures["bad"].distribution == "bad-dist"
    assert "backend exploded" in failures["bad"].error
    assert plugins.get("adapter", "lora").name == "lora"


def test_registering_a_non_plugin_class_is_reported(third_party):
    third_party("plain-dist", {"plain_plugin": NOT_A_PLUGIN}, {"plain": "plain_plugin"})
    [failure] = [b for b in plugins.broken() if b.source == "plain"]
    assert "not a subclass of ftsdk.plugin.kinds.Merger" in failure.error
    assert failure.kind == "merger"


def test_two_plugins_claiming_one_name_is_an_error_naming_both(third_party):
    third_party("lora-clone", {"clone_plugin": CLAIMS_LORA}, {"clone": "clone_plugin"})
    with pytest.raises(PluginConflictError) as caught:
        plugins.get("adapter", "lora")
    assert "'ftsdk'" in str(caught.value) and "'lora-clone'" in str(caught.value)
    assert any("registered by both" in b.error for b in plugins.broken())


def test_unavailable_backend_is_listed_and_refused_with_hint(third_party):
    third_party("ghost-dist", {"ghost_plugin": NEEDS_MISSING}, {"ghost": "ghost_plugin"})
    info = plugins.get("quantizer", "ghost")
    assert not info.available and info.missing == ["no_such_package_ftsdk_test"]
    with pytest.raises(PluginUnavailableError, match="pip install ghost-backend"):
        plugins.create("quantizer", "ghost")


def test_unknown_name_lists_known_names_and_closest_match():
    with pytest.raises(UnknownPluginError) as caught:
        plugins.get("adapter", "loar")
    message = str(caught.value)
    assert "did you mean 'lora'?" in message and "known adapters: " in message and "lora" in message
    with pytest.raises(PluginError, match="unknown plugin kind"):
        plugins.get("adapters", "lora")


def test_config_is_validated_with_the_field_named():
    with pytest.raises(ConfigError) as caught:
        plugins.create("adapter", "lora", {"r": 0, "droput": 0.1})
    message = str(caught.value)
    assert "adapter_config.r" in message and "adapter_config.droput" in message


def test_in_process_registration_and_removal():
    import types

    module = types.ModuleType("echo_in_process")
    exec(GOOD, module.__dict__)
    plugins.register(module, name="echo-in-process")
    try:
        assert plugins.get("adapter", "echo").distribution == "(in-process)"
    finally:
        plugins.unregister(name="echo-in-process")
    with pytest.raises(UnknownPluginError):
        plugins.get("adapter", "echo")


def _listed(env: dict[str, str], tmp_path) -> list[dict]:
    root = make_distribution(tmp_path / "env-dist", "env-dist", "0.1", {"echo": "echo_plugin"}, {"echo_plugin": GOOD})
    result = run_python("from ftsdk.cli import main; main(['plugins', '--json'])", env=env, path=[root])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_allow_and_block_lists_from_the_environment(tmp_path):
    names = lambda rows: {r["name"] for r in rows}  # noqa: E731
    everything = names(_listed({}, tmp_path))
    assert {"echo", "lora", "sft"} <= everything
    assert names(_listed({"FTSDK_DISABLE_PLUGINS": "echo,sft"}, tmp_path / "b")) == everything - {"echo", "sft"}
    assert names(_listed({"FTSDK_PLUGINS": "echo,lora"}, tmp_path / "c")) == {"echo", "lora"}
    assert names(_listed({"FTSDK_PLUGINS": ""}, tmp_path / "d")) == set()


def test_json_listing_has_exactly_the_documented_keys(tmp_path):
    root = make_distribution(tmp_path / "x", "bad-dist", "0.1", {"bad": "bad_plugin"}, {"bad_plugin": "1/0"})
    result = run_python("from ftsdk.cli import main; main(['plugins', '--json'])", path=[root])
    rows = json.loads(result.stdout)
    keys = {"kind", "name", "distribution", "version", "available", "summary"}
    assert all(set(row) == keys for row in rows if row["name"] != "bad")
    [bad] = [row for row in rows if row["name"] == "bad"]
    assert set(bad) == keys | {"error"} and "ZeroDivisionError" in bad["error"]
