"""Meta-tests, as datasette has: nothing ships undocumented or untested.

- every hook specification is documented (the plugin author's guide or the concepts page names it) and tested;
- every built-in plugin (an entry point of the ``ftsdk`` distribution) has a page in its kind's folder,
  ``docs/<kind>s/*.md``, holding its generated options marker ``<!-- options: KIND NAME -->``, and its name
  appears as a string literal in a test module;
- the documentation's escape hatches stay small: not-run blocks are listed and capped, and no ``bash`` block
  hides an ``ftsdk`` command that a ``console`` block would run.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from ftsdk import plugins
from ftsdk.docs import options_markers
from ftsdk.plugin import hookspecs
from tests.docpages import DOCS, ROOT, blocks, pages

TESTS = ROOT / "tests"
#: test modules that prove nothing about a plugin by naming it (they read the docs or this list)
NOT_PLUGIN_TESTS = {"plugin/test_meta.py", "docs/test_pages.py", "docs/test_examples.py"}
#: pages where the hook specifications must be documented
HOOK_PAGES = ("plugin-guide.md", "concepts.md")
#: the most blocks the docs may leave unrun (each with its reason)
MAX_NOT_RUN = 12


def test_modules() -> dict[str, Path]:
    """Every test module but those in NOT_PLUGIN_TESTS, by its path under tests/."""
    found = {p.relative_to(TESTS).as_posix(): p for p in sorted(TESTS.rglob("test_*.py"))}
    return {name: path for name, path in found.items() if name not in NOT_PLUGIN_TESTS}


def hook_names() -> list[str]:
    return sorted(name for name in dir(hookspecs)
                  if getattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec", None) is not None)


def built_in() -> list[plugins.PluginInfo]:
    return [info for info in plugins.list_plugins() if info.distribution == "ftsdk"]


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@functools.cache
def _test_literals() -> dict[str, set[str]]:
    return {name: _string_literals(path) for name, path in test_modules().items()}


def _marker_pages() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for page in pages():
        for key in options_markers((DOCS / page).read_text(encoding="utf-8")):
            found.setdefault(key, []).append(page)
    return found


def test_the_hook_specifications_are_found():
    assert hook_names() == sorted(hookspecs.HOOK_OF_KIND.values())


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_specification_is_documented(hook):
    texts = {page: (DOCS / page).read_text(encoding="utf-8") for page in HOOK_PAGES if (DOCS / page).is_file()}
    assert any(hook in text for text in texts.values()), f"document {hook} in docs/{' or docs/'.join(HOOK_PAGES)}"


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_specification_is_tested(hook):
    users = [name for name, path in test_modules().items() if re.search(rf"\b{hook}\b", path.read_text(encoding="utf-8"))]
    assert users, f"no test implements or calls the hook {hook}"


def test_built_in_plugins_are_found():
    kinds = {info.kind for info in built_in()}
    assert {"adapter", "objective", "merger"} <= kinds and len(built_in()) >= 20


@pytest.mark.parametrize("info", built_in(), ids=lambda info: f"{info.kind}-{info.name}")
def test_every_built_in_plugin_has_a_documentation_page(info):
    found = _marker_pages().get((info.kind, info.name), [])
    folder = f"{info.kind}s/"
    assert found, f"no page shows `<!-- options: {info.kind} {info.name} -->`: add docs/{folder}{info.name}.md"
    assert len(found) == 1 and found[0].startswith(folder), (
        f"the options of {info.kind} {info.name} belong on one page under docs/{folder}, not {found}")


@pytest.mark.parametrize("info", built_in(), ids=lambda info: f"{info.kind}-{info.name}")
def test_every_built_in_plugin_has_a_test(info):
    users = [name for name, literals in _test_literals().items() if info.name in literals]
    assert users, f'no test module names {info.kind} "{info.name}": test it (tests/<package>/test_*.py)'


def test_every_options_marker_names_a_plugin():
    known = {(info.kind, info.name) for info in plugins.list_plugins()}
    unknown = {key: where for key, where in _marker_pages().items() if key not in known}
    assert not unknown, f"options markers of plugins that do not exist: {unknown}"


def test_not_run_blocks_are_few_and_explained(capsys):
    skipped = [block for page in pages() for block in blocks(page) if block.not_run is not None]
    with capsys.disabled():
        for block in skipped:
            print(f"\nnot run: {block.where}: {block.not_run}")
    assert all(len(block.not_run) >= 10 for block in skipped), "say why the block cannot run"
    assert len(skipped) <= MAX_NOT_RUN, f"{len(skipped)} blocks are not run (at most {MAX_NOT_RUN})"


def test_no_ftsdk_command_hides_in_a_block_that_does_not_run():
    hidden = [block.where for page in pages() for block in blocks(page) if block.lang in ("bash", "sh", "shell")
              and block.not_run is None and re.search(r"(^|[;&|]\s*)(\w+=\S*\s+)*ftsdk\s", block.code, flags=re.MULTILINE)]
    assert not hidden, f"run these ftsdk commands in ```console blocks (or mark them not-run): {hidden}"
