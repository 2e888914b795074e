"""Documentation generated from the code, so the docs cannot drift from it.

Two markers in a Markdown page are replaced when the docs site builds (``docs/hooks/ftsdk_docs.py``):

- ``<!-- options: KIND NAME -->``: the options table of a plugin, from its pydantic ``Config`` JSON schema
  (name, type, default, range, description); for a merger also its per-input ``InputParams``.
- ``<!-- cli-reference -->``: every ``ftsdk`` command's ``--help``, from :func:`ftsdk.cli.build_parser`.

A third-party plugin can render its own table with :func:`config_table` (``config_table(MyAdapter.Config)``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

OPTIONS_MARKER = re.compile(r"<!--\s*options:\s*(?P<kind>[\w-]+)\s+(?P<name>[\w.-]+)\s*-->")
CLI_MARKER = re.compile(r"<!--\s*cli-reference\s*-->")
_JSON_TYPES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "null": "null", "object": "dict"}
_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
HELP_WIDTH = 100


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if ref else schema


def _alternatives(schema: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema, defs)
    if "anyOf" in schema or "oneOf" in schema:
        return [alt for sub in schema.get("anyOf", schema.get("oneOf")) for alt in _alternatives(sub, defs)]
    if isinstance(schema.get("type"), list):
        return [{**schema, "type": t} for t in schema["type"]]
    return [schema]


def type_name(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short, readable type of a JSON-schema property: ``int``, ``list[str]``, ``"none" or "all"``..."""
    names: list[str] = []
    for alt in _alternatives(schema, defs):
        if "const" in alt:
            name = json.dumps(alt["const"])
        elif "enum" in alt:
            name = " or ".join(json.dumps(v) for v in alt["enum"])
        elif alt.get("type") == "array":
            name = f"list[{type_name(alt['items'], defs)}]" if "items" in alt else "list"
        elif alt.get("type") == "object" and "properties" in alt:
            name = "{" + ", ".join(alt["properties"]) + "}"
        elif alt.get("type") == "object" and isinstance(alt.get("additionalProperties"), dict):
            name = f"dict[str, {type_name(alt['additionalProperties'], defs)}]"
        else:
            name = _JSON_TYPES.get(alt.get("type", ""), alt.get("title", "any"))
        if name not in names:
            names.append(name)
    return " or ".join(names) or "any"


def _range(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """Bounds of the first alternative that has any (``≥ 1, ≤ 4096``), or "non-empty"; empty when unbounded."""
    for alt in _alternatives(schema, defs):
        bounds = [f"{sign} {alt[key]}" for key, sign in _BOUNDS if key in alt]
        if bounds:
            return ", ".join(bounds)
        if alt.get("type") == "array" and isinstance(alt.get("items"), dict):
            inner = _range(alt["items"], defs)
            if inner:
                return f"each {inner}"
    if any(alt.get("minLength", 0) >= 1 for alt in _alternatives(schema, defs)):
        return "non-empty"
    return ""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _sentence(text: str) -> str:
    text = _cell(text)
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def config_table(config: type[BaseModel]) -> str:
    """A Markdown table of a pydantic config's fields: option, type, default, range, description."""
    schema = config.model_json_schema()
    defs = schema.get("$defs", {})
    fields = {field.alias or name: field for name, field in config.model_fields.items()}
    rows = ["| option | type | default | range | description |", "|---|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        field = fields[name]
        if field.is_required():
            default = "required"
        else:
            value = field.get_default(call_default_factory=True)
            default = f"`{json.dumps(value.model_dump(mode='json') if isinstance(value, BaseModel) else value, default=str)}`"
        kind = type_name(prop, defs)
        bounds = _range(prop, defs)
        rows.append(
            f"| `{name}` | `{_cell(kind)}` | {_cell(default)} | {_cell(bounds)} | {_cell(prop.get('description', ''))} |"
        )
    if len(rows) == 2:
        return "This plugin has no options."
    return "\n".join(rows)


def options_markdown(kind: str, name: str) -> str:
    """The options of a registered plugin as Markdown; a merger's per-input options follow its own."""
    from ftsdk import plugins

    cls = plugins.get(kind, name).cls
    text = config_table(cls.Config)
    if kind != "merger":
        return text
    inputs = config_table(cls.InputParams)  # type: ignore[attr-defined]
    return (
        f"Options of the method (under `parameters:`):\n\n{text}\n\n"
        f"Options of each input (under `models[].parameters:`; also settable for every input under "
        f"`parameters:`):\n\n{inputs}"
    )


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:  # argparse keeps sub-commands only here
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _help_text(parser: argparse.ArgumentParser) -> str:
    original = parser.formatter_class
    parser.formatter_class = lambda prog: original(prog, width=HELP_WIDTH)  # type: ignore[assignment]
    try:
        return parser.format_help().rstrip()
    finally:
        parser.formatter_class = original


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Every command's ``--help`` as Markdown, one section per command, sub-commands nested."""
    if parser is None:
        from ftsdk.cli import build_parser

        parser = build_parser()
    sections = [f"```text\n$ ftsdk --help\n{_help_text(parser)}\n```"]

    def walk(current: argparse.ArgumentParser, level: int) -> None:
        for _, helptext, sub in _subcommands(current):
            sections.append(f"{'#' * level} `{sub.prog}`\n\n{_sentence(helptext)}\n\n"
                            f"```text\n$ {sub.prog} --help\n{_help_text(sub)}\n```")
            walk(sub, level + 1)

    walk(parser, 2)
    return "\n\n".join(sections)


def _outside_fences(lines: list[str]) -> Iterator[tuple[int, str]]:
    """``(index, stripped line)`` of the lines that are not inside a fenced code block."""
    fence = ""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                fence = ""
            continue
        opening = re.match(r"(`{3,}|~{3,})", stripped)
        if opening:
            fence = opening.group(1)
            continue
        yield index, stripped


def options_markers(markdown: str) -> list[tuple[str, str]]:
    """The ``(kind, name)`` of every options marker of a page (alone on its line, outside code blocks)."""
    return [(m["kind"], m["name"]) for _, line in _outside_fences(markdown.split("\n"))
            if (m := OPTIONS_MARKER.fullmatch(line)) is not None]


def expand_markers(markdown: str) -> str:
    """Replace the options and CLI markers of a page with the generated Markdown.

    A marker is expanded where it stands alone on a line outside fenced code blocks, so pages can show it.
    """
    lines = markdown.split("\n")
    for index, line in list(_outside_fences(lines)):
        if (options := OPTIONS_MARKER.fullmatch(line)) is not None:
            lines[index] = options_markdown(options["kind"], options["name"])
        elif CLI_MARKER.fullmatch(line):
            lines[index] = cli_reference()
    return "\n".join(lines)
