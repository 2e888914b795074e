"""``ftsdk plugins`` and ``ftsdk schema``: what is installed, and each plugin's options."""

from __future__ import annotations

import argparse
import json

from ftsdk.plugin.hookspecs import HOOK_OF_KIND


def add_commands(commands: argparse._SubParsersAction) -> None:
    listing = commands.add_parser("plugins", help="list the installed plugins")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    listing.set_defaults(run=_cmd_plugins)

    schema = commands.add_parser("schema", help="print a plugin config's JSON schema")
    schema.add_argument("kind", choices=list(HOOK_OF_KIND))
    schema.add_argument("name")
    schema.set_defaults(run=_cmd_schema)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from ftsdk import plugins

    rows = [info.as_dict() for info in plugins.list_plugins()] + [b.as_dict() for b in plugins.broken()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ("kind", "name", "distribution", "version", "available", "summary")
    table = [[str(row[h]) if h != "available" else ("yes" if row[h] else "NO") for h in headers] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row, original in zip(table, rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if "error" in original:
            print(f"    error: {original['error']}")
    for info in plugins.list_plugins():
        if not info.available:
            print(f"note: {info.kind} '{info.name}' needs {', '.join(info.missing)}: "
                  f"{info.cls.install_hint or 'pip install ' + ' '.join(info.missing)}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from ftsdk import plugins

    info = plugins.get(args.kind, args.name)
    print(json.dumps(info.cls.Config.model_json_schema(), indent=2))
    return 0
