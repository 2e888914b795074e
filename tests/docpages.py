"""The code blocks of the documentation pages, as tests/docs/test_pages.py runs them and tests/plugin/test_meta.py checks them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: languages whose blocks run; every other block is shown only (output, data, install commands)
RUN = ("python", "console", "yaml")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$")
_FILE = re.compile(r"^#\s*file:\s*(?P<name>\S+)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str  # path relative to docs/
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason given by a <!-- not-run: REASON --> line just before it
    file: str | None  # yaml blocks: the name on their first line `# file: NAME`

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        if self.not_run is not None or self.lang not in RUN:
            return False
        return self.lang != "yaml" or self.file is not None


def pages() -> list[str]:
    """Every Markdown page of the site, relative to docs/ (the hooks folder is not part of the site)."""
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of ``page`` in order, with their language, line and not-run reason."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[end]):
            body.append(lines[end][len(indent):] if lines[end].startswith(indent) else lines[end].lstrip())
            end += 1
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = _NOT_RUN.match(previous)
        lang = opening["lang"].lower()
        named = _FILE.match(body[0]) if body and lang == "yaml" else None
        found.append(Block(page, index + 1, lang, "\n".join(body) + "\n", marker["reason"] if marker else None,
                           named["name"] if named else None))
        index = end + 1
    return found


def console_commands(block: Block) -> list[tuple[int, str]]:
    """The ``$ `` lines of a console block (backslash continuations joined), with their page line numbers."""
    commands: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, line in enumerate(block.code.splitlines()):
        number = block.line + 1 + offset
        if pending is not None:
            text = pending[1] + " " + line.strip()
        elif line.startswith("$ "):
            pending, text = (number, ""), line[2:].strip()
        else:
            continue
        if text.endswith("\\"):
            pending = (pending[0], text[:-1].rstrip())
            continue
        commands.append((pending[0], text))
        pending = None
    return commands
