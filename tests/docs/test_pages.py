"""Every code block in docs/ runs, page by page, and the site builds in strict mode.

How a page runs (docs/contributing.md is the author's version of this):

- in a fresh scratch folder holding ``model/`` (a tiny random Llama with a trained BPE tokenizer and a ChatML
  template, from ``ftsdk.testing``), ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (chat rows of a small label
  task: name the color of a thing) and ``prefs.jsonl`` (DPO rows ``prompt``/``chosen``/``rejected``);
- ```python blocks run in order, in one namespace per page;
- ```console blocks: each ``$ ftsdk ...`` line runs with the CLI (``ftsdk.cli.main``, in this process) and must
  exit 0; leading ``NAME=value`` assignments set environment variables for that line (the plugin registry is
  rebuilt around it); the other lines are the expected output and are not compared;
- ```yaml blocks whose first line is ``# file: NAME`` are written to ``NAME`` for later blocks to use;
- a block preceded by the line ``<!-- not-run: REASON -->`` is skipped (tests/plugin/test_meta.py lists and limits them);
- other languages (text, json, jsonl, bash for install commands, toml) are shown, not run.

A failure names the page and line of the block (``docs/guide.md:42``).

Every run checks every page cheaply (python compiles, yaml parses, each ``$ ftsdk`` line parses with the CLI's
own parser), builds the site with ``mkdocs build --strict``, and runs the pages in ``FAST_PAGES``; the other
pages run with the slow tests (``pytest -m slow tests/docs/test_pages.py``; CI runs both).

On the real default model instead of the tiny one::

    FTSDK_DOCS_MODEL=smollm2-135m pytest -m "slow or not slow" tests/docs/test_pages.py

makes ``model/`` that model (any name ``ftsdk.models.loading.resolve`` accepts: an alias, a folder, a .gguf file).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from ftsdk import plugins
from ftsdk.testing.tiny import preference_rows, task_rows, write_jsonl
from tests.docpages import DOCS, ROOT, Block, blocks, console_commands, pages

#: pages quick enough (a few seconds) to run in every test run; every other page runs with -m slow
FAST_PAGES = frozenset({"index.md", "concepts.md", "troubleshooting.md", "data.md",
                        "reference/cli.md", "reference/api.md", "contributing.md"})
MODEL_VARIABLE = "FTSDK_DOCS_MODEL"
PAGE_MODULE = "ftsdk_docs_page"


def _page_params() -> list:
    return [pytest.param(p, id=p, marks=() if p in FAST_PAGES else pytest.mark.slow) for p in pages()]


# -- the scratch folder ------------------------------------------------------------------------------------


def make_scratch(folder: Path, tiny_model: Path) -> Path:
    """Fill ``folder`` as every page expects it: model/ and the data files."""
    folder.mkdir(parents=True, exist_ok=True)
    real = os.environ.get(MODEL_VARIABLE)
    if real:
        from ftsdk.models.loading import resolve

        (folder / "model").symlink_to(Path(resolve(real).source).resolve(), target_is_directory=True)
    else:
        shutil.copytree(tiny_model, folder / "model")
    write_jsonl(folder / "train.jsonl", task_rows(64, seed=1))
    write_jsonl(folder / "val.jsonl", task_rows(16, seed=2))
    write_jsonl(folder / "test.jsonl", task_rows(16, seed=3))
    write_jsonl(folder / "prefs.jsonl", preference_rows(32, seed=4))
    return folder


# -- running blocks ----------------------------------------------------------------------------------------


def run_python(block: Block, namespace: dict) -> None:
    # leading newlines put the block's first line at its line in the page, so tracebacks point into the page
    code = compile("\n" * block.line + block.code, str(DOCS / block.page), "exec")
    try:
        exec(code, namespace)  # noqa: S102 -- running the documentation is the point
    except BaseException as exc:
        exc.add_note(f"in the python block at {block.where}")
        raise


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Run ``ftsdk ARGV`` in this process; return the exit status and what it printed."""
    from ftsdk.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: --help, or bad arguments
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return status, out.getvalue()


def ftsdk_argv(command: str, where: str) -> tuple[dict[str, str], list[str]]:
    """The environment assignments that lead a `$` line (``FTSDK_PLUGINS=a ftsdk plugins``) and ftsdk's arguments."""
    argv = shlex.split(command, comments=True)
    env: dict[str, str] = {}
    while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
        name, value = argv.pop(0).split("=", 1)
        env[name] = value
    if not argv or argv[0] != "ftsdk":
        pytest.fail(f"{where}: console blocks run `$ ftsdk ...` lines only, not `{command}`; show other commands "
                    "in a ```bash block, or mark the block <!-- not-run: REASON -->")
    return env, argv[1:]


def run_console(block: Block) -> None:
    for line, command in console_commands(block):
        where = f"docs/{block.page}:{line}"
        env, argv = ftsdk_argv(command, where)
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        if env:
            plugins.reload()  # FTSDK_PLUGINS / FTSDK_DISABLE_PLUGINS are read when the registry is built
        try:
            status, output = run_cli(argv)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if env:
                plugins.reload()
        if status != 0:
            pytest.fail(f"{where}: `{command}` exited {status}:\n{output[-3000:]}")


def write_file(block: Block, folder: Path) -> None:
    target = folder / block.file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.code, encoding="utf-8")


@contextlib.contextmanager
def isolated(folder: Path):
    """Run in ``folder``; restore the working directory, the environment and in-process plugins afterwards."""
    cwd, environ = Path.cwd(), dict(os.environ)
    before = {name for name, _ in plugins._manager_with_entry_points().list_name_plugin()}
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        for name, _ in plugins._manager_with_entry_points().list_name_plugin():
            if name not in before:
                plugins.unregister(name=name)


def run_page(page: str, folder: Path) -> None:
    # the page's blocks share one real module, so `sys.modules[__name__]` and pickling work as in a script
    module = types.ModuleType(PAGE_MODULE)
    sys.modules[PAGE_MODULE] = module
    try:
        with isolated(folder):
            for block in blocks(page):
                if not block.runs:
                    continue
                if block.lang == "python":
                    run_python(block, module.__dict__)
                elif block.lang == "console":
                    run_console(block)
                else:
                    write_file(block, folder)
    finally:
        del sys.modules[PAGE_MODULE]


# -- the tests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", pages())
def test_page_blocks_are_well_formed(page):
    """Cheap checks of every block of every page: python compiles, yaml parses, `$ ftsdk` lines parse."""
    from ftsdk.cli import build_parser

    for block in blocks(page):
        if block.not_run is not None:
            assert block.not_run, f"{block.where}: give the reason: <!-- not-run: REASON -->"
            continue
        if block.lang == "python":
            compile("\n" * block.line + block.code, str(DOCS / page), "exec")
        elif block.lang == "yaml":
            try:
                yaml.safe_load(block.code)
            except yaml.YAMLError as exc:
                pytest.fail(f"{block.where}: invalid YAML: {exc}")
        elif block.lang == "console":
            for line, command in console_commands(block):
                where = f"docs/{page}:{line}"
                out = io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                    try:
                        build_parser().parse_args(ftsdk_argv(command, where)[1])
                    except SystemExit as exc:
                        if exc.code not in (0, None):
                            pytest.fail(f"{where}: `{command}` does not parse:\n{out.getvalue()}")


@pytest.mark.parametrize("page", _page_params())
def test_page_runs(page, tiny_model_dir, tmp_path):
    """Every runnable block of the page, in order, in a fresh scratch folder."""
    run_page(page, make_scratch(tmp_path / "scratch", tiny_model_dir))


def test_site_builds_in_strict_mode(tmp_path):
    """mkdocs-material builds the site with every warning (broken link or anchor, missing page) an error."""
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=600, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert done.returncode == 0, done.stderr[-5000:]
    lora = (site / "adapters" / "lora" / "index.html").read_text(encoding="utf-8")
    assert "use_rslora" in lora and "4096" in lora  # the options table generated from LoraConfig
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "ftsdk merge-adapter" in cli and "--overwrite" in cli  # the CLI reference generated from the parser


def test_runner_reports_the_page_and_line_of_a_failing_block(tmp_path):
    block = Block("guide.md", 41, "python", "x = 1\nraise ValueError('boom')\n", None, None)
    with pytest.raises(ValueError) as caught:
        run_python(block, {})
    assert "docs/guide.md:41" in caught.value.__notes__[0]
    assert caught.traceback[-1].lineno + 1 == 43  # pytest counts from 0: the raise is on the page's line 43
    status, output = run_cli(["schema", "adapter", "no-such"])
    assert status == 2 and "no adapter plugin named 'no-such'" in output
