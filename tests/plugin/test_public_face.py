"""The public face for plugin authors: scaffolds and examples import only ``ftsdk``'s top-level names (and the
conformance kit ``ftsdk.testing``), and every name ``ftsdk.__all__`` promises resolves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ftsdk

ROOT = Path(__file__).resolve().parents[2]
#: modules a plugin author may import: the public face and the testing kit
PUBLIC = {"ftsdk", "ftsdk.testing", "ftsdk.testing.conformance", "ftsdk.testing.fixtures"}
TEMPLATES = ROOT / "ftsdk" / "scaffold" / "templates"
SOURCES = sorted([*TEMPLATES.rglob("*.py.tmpl"), *TEMPLATES.rglob("*.md.tmpl"), *(ROOT / "examples").rglob("*.py"),
                  *(ROOT / "examples").rglob("*.md")])
_FENCE = re.compile(r"```python\n(.*?)```", re.S)


def _code(path: Path) -> list[str]:
    """The Python in a file: the whole file, or a Markdown file's python blocks; template fields made names."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"\$\{?(\w+)\}?", r"\1", text)
    if path.suffix == ".md" or path.name.endswith(".md.tmpl"):
        return _FENCE.findall(text)
    return [text]


def private_imports(code: str) -> list[str]:
    """The ftsdk modules ``code`` imports from that are not public, with the names it takes."""
    found = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ftsdk":
            if node.module not in PUBLIC:
                found.append(f"from {node.module} import {', '.join(a.name for a in node.names)}")
            elif node.module == "ftsdk":
                found += [f"ftsdk.{a.name} (not in ftsdk.__all__)" for a in node.names if a.name not in ftsdk.__all__]
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.startswith("ftsdk.") and a.name not in PUBLIC]
    return found


def test_sources_are_found():
    names = {p.name for p in SOURCES}
    assert {"plugin.py.tmpl", "test_plugin.py.tmpl", "__init__.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_the_public_face(path):
    found = [line for code in _code(path) for line in private_imports(code)]
    assert not found, f"{path.relative_to(ROOT)} reaches into ftsdk's internals: {found}"


def test_the_check_catches_private_imports():
    assert private_imports("from ftsdk.merging.engine import TensorMerger") == [
        "from ftsdk.merging.engine import TensorMerger"
    ]
    assert private_imports("import ftsdk.training.trainer") == ["import ftsdk.training.trainer"]
    assert private_imports("from ftsdk import NotThere") == ["ftsdk.NotThere (not in ftsdk.__all__)"]
    assert private_imports("from ftsdk import TensorMerger, hookimpl\nfrom ftsdk.testing import conformance") == []


@pytest.mark.parametrize("name", ftsdk.__all__)
def test_every_public_name_resolves(name):
    assert getattr(ftsdk, name) is not None
