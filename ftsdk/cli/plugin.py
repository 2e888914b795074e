"""``ftsdk plugin new`` (scaffold a plugin package) and ``ftsdk plugin check`` (run the conformance kit on one)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ftsdk.plugin.hookspecs import HOOK_OF_KIND

#: the kinds ``ftsdk plugin new`` scaffolds and the conformance kit checks at work (``--full``)
BEHAVIOUR_CHECKS = ("adapter", "objective", "quantizer", "merger")


def add_commands(commands: argparse._SubParsersAction) -> None:
    plugin = commands.add_parser("plugin", help="write a new plugin package, or check one against the contract")
    actions = plugin.add_subparsers(dest="action", required=True, metavar="ACTION")

    new = actions.add_parser("new", help="scaffold an installable plugin package ftsdk-NAME/ that works as generated")
    new.add_argument("name", help="the plugin's name, e.g. my-adapter (lowercase, words joined by - or _)")
    new.add_argument("--kind", required=True, choices=BEHAVIOUR_CHECKS, help="what the plugin does")
    new.add_argument("--dir", default=".", help="where to write the package folder (default: here)")
    new.set_defaults(run=_cmd_new)

    check = actions.add_parser("check", help="run the conformance kit's checks on an installed plugin")
    check.add_argument("kind", choices=list(HOOK_OF_KIND))
    check.add_argument("name")
    check.add_argument("--config", default="{}", help="a valid config as JSON, for plugins with required options")
    check.add_argument("--full", action="store_true",
                       help="also train / quantize / merge on a tiny random model (seconds to a minute)")
    check.set_defaults(run=_cmd_check)


def _cmd_new(args: argparse.Namespace) -> int:
    from ftsdk.scaffold import new_plugin

    folder = new_plugin(args.name, args.kind, args.dir)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        print(f"created {file}")
    print(f"\nnext: cd {folder} && pip install -e '.[test]' && pytest -q")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ftsdk import plugins
    from ftsdk.plugin.errors import ConfigError, FtsdkError
    from ftsdk.testing import conformance

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config is not JSON: {exc}", hint='e.g. --config \'{"t": 0.5}\'') from None
    info = plugins.get(args.kind, args.name)
    example = config
    if args.kind == "merger":  # the merge's parameters: the method's options and per-input defaults
        options = {field.alias or key for key, field in info.cls.Config.model_fields.items()}
        example = {key: value for key, value in config.items() if key in options}
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("config", lambda: conformance.check_config(info.cls, example)),
        ("registration", lambda: conformance.check_registration(args.name, args.kind)),
        ("typed errors", lambda: conformance.check_typed_errors(info.cls, example)),
        ("light import", lambda: conformance.check_light_import(info.cls.__module__)),
    ]
    work = tempfile.TemporaryDirectory(prefix="ftsdk-check-")
    if args.full:
        if args.kind not in BEHAVIOUR_CHECKS:
            print(f"no behaviour check for {args.kind}s: a launcher's run is tested in your own cluster")
        elif info.missing:
            print(f"skipped behaviour: needs {', '.join(info.missing)}")
        else:
            checks.append(("behaviour", lambda: _behaviour(args.kind, args.name, config, Path(work.name))))
    failed = 0
    with work:
        for label, check in checks:
            try:
                check()
            except (conformance.ConformanceError, FtsdkError) as exc:
                failed += 1
                print(f"FAIL  {label}: {exc}")
            else:
                print(f"ok    {label}")
    print(f"{args.kind} '{args.name}': {len(checks) - failed} of {len(checks)} checks passed", file=sys.stderr)
    return 1 if failed else 0


def _behaviour(kind: str, name: str, config: dict[str, Any], folder: Any) -> None:
    from ftsdk.testing import conformance

    if kind == "adapter":
        conformance.check_adapter_trains(name, config, folder)
    elif kind == "objective":
        conformance.check_objective_trains(name, config, folder)
    elif kind == "quantizer":
        conformance.check_quantizer_output_loads(name, config, folder)
    else:
        conformance.check_merger(name, folder, parameters=config)
