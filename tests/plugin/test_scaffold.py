"""``ftsdk plugin new``: one package per kind, whose generated tests (the conformance kit and the plugin's own
behaviour) pass as generated; bad names fail clearly; a built wheel installs and is found by its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from ftsdk import ConfigError, OutputExistsError
from ftsdk.cli import main
from ftsdk.scaffold import new_plugin, plugin_names

KINDS = {"adapter": "norms", "objective": "smooth-sft", "quantizer": "half", "merger": "average"}


def _env(*paths: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FTSDK_PLUGINS", "FTSDK_DISABLE_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


def test_names_are_derived_from_the_plugin_name():
    names = plugin_names("smooth-sft", "objective")
    assert (names.dist, names.module, names.cls) == ("ftsdk-smooth-sft", "ftsdk_smooth_sft", "SmoothSftObjective")
    assert plugin_names("my_adapter", "adapter").cls == "MyAdapter"


def test_every_kind_is_a_package_with_an_entry_point(tmp_path):
    for kind, name in KINDS.items():
        folder = new_plugin(name, kind, tmp_path)
        names = plugin_names(name, kind)
        project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        assert project["name"] == names.dist and project["entry-points"]["ftsdk"] == {name: names.module}
        module = (folder / names.module / "__init__.py").read_text(encoding="utf-8")
        assert f"@hookimpl\ndef register_{kind}s(register):" in module and f"class {names.cls}Config(PluginConfig)" in module
        assert "conformance.check_" in (folder / "tests" / f"test_{names.module}.py").read_text(encoding="utf-8")
        assert f"ftsdk plugin check {kind} {name}" in (folder / "README.md").read_text(encoding="utf-8")


def test_generated_test_suites_pass(tmp_path):
    """All four packages' tests in one pytest run (one torch import, one tiny model), registered in-process."""
    folders = [new_plugin(name, kind, tmp_path) for kind, name in KINDS.items()]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull,
         "--import-mode=importlib", "-W", "ignore::DeprecationWarning", *[str(f / "tests") for f in folders]],
        check=False, capture_output=True, text=True, env=_env(*folders), cwd=tmp_path, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout and "skipped" not in done.stdout


@pytest.mark.parametrize(
    ("name", "kind", "error", "message"),
    [
        ("My-Adapter", "adapter", ConfigError, "'My-Adapter' is not a valid plugin name"),
        ("my adapter", "adapter", ConfigError, "'my adapter' is not a valid plugin name"),
        ("2fast", "merger", ConfigError, "'2fast' is not a valid plugin name"),
        ("ftsdk-norms", "adapter", ConfigError, "starts with 'ftsdk'"),
        ("norms", "tokenizer", ConfigError, "unknown plugin kind 'tokenizer'"),
        ("lora", "adapter", ConfigError, "adapter 'lora' already exists (from ftsdk)"),
    ],
)
def test_bad_names_and_kinds_fail_clearly(name, kind, error, message, tmp_path):
    with pytest.raises(error) as caught:
        new_plugin(name, kind, tmp_path)
    assert message in str(caught.value) and caught.value.hint
    assert not list(tmp_path.iterdir())


def test_an_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "ftsdk-norms").mkdir()
    (tmp_path / "ftsdk-norms" / "mine.txt").write_text("keep", encoding="utf-8")
    with pytest.raises(OutputExistsError, match="ftsdk-norms already exists"):
        new_plugin("norms", "adapter", tmp_path)
    assert [p.name for p in (tmp_path / "ftsdk-norms").iterdir()] == ["mine.txt"]


def test_cli_new_and_its_errors(tmp_path, capsys):
    assert main(["plugin", "new", "norms", "--kind", "adapter", "--dir", str(tmp_path)]) == 0
    assert "created" in capsys.readouterr().out and (tmp_path / "ftsdk-norms" / "ftsdk_norms").is_dir()
    assert main(["plugin", "new", "norms", "--kind", "adapter", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plugin", "new", "norms", "--kind", "tokenizer"])


def test_cli_check_runs_the_kit(capsys):
    assert main(["plugin", "check", "merger", "slerp", "--config", '{"t": 0.5}']) == 0
    out = capsys.readouterr().out
    assert all(f"ok    {check}" in out for check in ("config", "registration", "typed errors", "light import"))
    assert main(["plugin", "check", "merger", "slerp"]) == 0  # t is required: its field's example fills it
    assert "ok    config" in capsys.readouterr().out


@pytest.mark.slow
def test_a_built_wheel_installs_and_is_found_through_its_entry_point(tmp_path):
    folder = new_plugin("half", "quantizer", tmp_path)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(folder)],
                   check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("ftsdk_half-0.1.0-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   timeout=300)
    listed = subprocess.run([sys.executable, "-m", "ftsdk.cli", "plugins", "--json"], check=False,
                            capture_output=True, text=True, env=_env(tmp_path / "site"), cwd=tmp_path, timeout=300)
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["half"] == {"kind": "quantizer", "name": "half", "distribution": "ftsdk-half", "version": "0.1.0",
                            "available": True, "summary": rows["half"]["summary"]}
    checked = subprocess.run([sys.executable, "-m", "ftsdk.cli", "plugin", "check", "quantizer", "half", "--full"],
                             check=False, capture_output=True, text=True, env=_env(tmp_path / "site"), cwd=tmp_path,
                             timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("ok    ") == 5
