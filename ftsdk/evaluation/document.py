"""A tiny document model rendered twice: self-contained HTML (pictures inlined as base64) and Markdown."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.up{color:#1a7f37}td.down{color:#cf222e}img{max-width:100%;display:block}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}pre{background:#f6f8fa;padding:.8em;overflow:auto;
font-size:.85em}.flag{color:#cf222e;font-weight:600}.ok{color:#1a7f37}
"""


@dataclass
class Heading:
    text: str


@dataclass
class Paragraph:
    text: str
    css: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    #: per row, per cell: "up", "down" or "" (HTML colours good and bad changes)
    marks: list[list[str]] | None = None


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Code:
    text: str
    summary: str


Block = Heading | Paragraph | Table | Figure | Code


@dataclass
class Document:
    """Headings, paragraphs, tables, figures and folded preformatted text, in order."""

    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block | None) -> None:
        """Append blocks (None is skipped: a figure that was not drawn)."""
        self.blocks += [b for b in blocks if b is not None]

    def html(self) -> str:
        """One self-contained HTML page: no file or network access is needed to show it."""
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            if isinstance(block, Heading):
                out.append(f"<h2>{html.escape(block.text)}</h2>")
            elif isinstance(block, Paragraph):
                css = f' class="{block.css}"' if block.css else ""
                out.append(f"<p{css}>{html.escape(block.text)}</p>")
            elif isinstance(block, Table):
                out.append(_html_table(block))
            elif isinstance(block, Figure):
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                out.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            else:
                out.append(f"<details><summary>{html.escape(block.summary)}</summary>"
                           f"<pre>{html.escape(block.text)}</pre></details>")
        out.append("</body></html>")
        return "\n".join(out)

    def markdown(self, relative_to: Path) -> str:
        """Markdown for a model card; pictures are linked relative to ``relative_to``."""
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, Heading):
                out += [f"## {block.text}", ""]
            elif isinstance(block, Paragraph):
                out += [block.text, ""]
            elif isinstance(block, Table):
                out += ["| " + " | ".join(_md(c) for c in block.header) + " |", "|" + "---|" * len(block.header)]
                out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in block.rows] + [""]
            elif isinstance(block, Figure):
                out += [f"![{block.caption}]({block.path.relative_to(relative_to).as_posix()})", ""]
            else:
                out += [f"<details><summary>{block.summary}</summary>", "", "```json", block.text, "```", "",
                        "</details>", ""]
        return "\n".join(out)


def _md(cell: str) -> str:
    return " ".join(cell.replace("|", "\\|").split())


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.header)
    rows = []
    for i, row in enumerate(table.rows):
        marks = table.marks[i] if table.marks else [""] * len(row)
        cells = "".join(f'<td class="{m}">{html.escape(c)}</td>' if m else f"<td>{html.escape(c)}</td>"
                        for c, m in zip(row, marks))
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
