"""Shared helpers for the test suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def make_distribution(root: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """Write modules and a minimal ``.dist-info`` under ``root`` so importlib.metadata finds their entry points."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ftsdk]\n{lines}", encoding="utf-8")
    return root


def run_python(code: str, *, env: dict[str, str] | None = None, path: list[Path] | None = None) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter, with extra sys.path entries and environment."""
    full_env = dict(os.environ, **(env or {}))
    if path:
        full_env["PYTHONPATH"] = os.pathsep.join([*map(str, path), full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
