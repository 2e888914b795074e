"""mkdocs hooks of the ftsdk site: the options tables and the CLI reference, generated from the code.

The generation itself lives in :mod:`ftsdk.docs` (importable, tested, usable by third-party plugin docs);
this file only connects it to mkdocs. It sits under ``docs/`` beside the pages it serves and is excluded
from the site (``exclude_docs`` in mkdocs.yml).
"""

from __future__ import annotations

from typing import Any

from ftsdk.docs import expand_markers


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand_markers(markdown)
