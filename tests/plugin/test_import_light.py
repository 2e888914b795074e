"""`import ftsdk`, plugin discovery and `ftsdk --help` must not import torch or the training stack."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import run_python

HEAVY = ["torch", "transformers", "peft", "trl", "datasets", "accelerate"]


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = run_python(probe)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_ftsdk_is_light():
    assert _loaded_after("import ftsdk; from ftsdk import Tuner, hookimpl, plugins") == []


def test_plugin_discovery_and_listing_are_light():
    code = "from ftsdk import plugins\nfor i in plugins.list_plugins(): i.available, i.cls.Config.model_json_schema()"
    assert _loaded_after(code) == []


def test_cli_help_and_plugins_are_light():
    code = (
        "import contextlib, io, sys\nfrom ftsdk.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['plugins'])\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
    )
    assert _loaded_after(code) == []


def test_cli_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "ftsdk.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("plugins", "schema", "train", "quickstart"):
        assert command in result.stdout
