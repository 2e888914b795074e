"""``ftsdk chain``: run a chain of steps (train, merge, quantize, evaluate, export) from a YAML file."""

from __future__ import annotations

import argparse

from ftsdk.plugin.errors import ConfigError


def add_commands(commands: argparse._SubParsersAction) -> None:
    chain = commands.add_parser(
        "chain", help="run a chain (train, merge-adapter, merge, quantize, evaluate, export) from YAML; up-to-date "
        "steps are skipped"
    )
    chain.add_argument("file", help="the chain's YAML file (see examples/chains/)")
    chain.add_argument("--workdir", help="folder of the step outputs (overrides the file's workdir)")
    chain.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                       help="set or override one of the chain's inputs (paths relative to the current folder)")
    chain.add_argument("--dry-run", "--validate", dest="dry_run", action="store_true",
                       help="validate every step and show what would run or be skipped; run nothing")
    chain.add_argument("--resume", action="store_true",
                       help="continue the failed run recorded in the workdir, from the step that failed")
    chain.add_argument("--force", nargs="*", metavar="STEP", default=None,
                       help="rebuild these steps (all, if none is named) even if up to date")
    chain.set_defaults(run=_cmd_chain)


def _inputs(pairs: list[str]) -> dict[str, str]:
    inputs = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--input {pair!r} is not of the form NAME=PATH", hint="e.g. --input adapter=runs/x")
        inputs[name.strip()] = path.strip()
    return inputs


def _cmd_chain(args: argparse.Namespace) -> int:
    from ftsdk.chain import Chain

    chain = Chain.from_yaml(args.file, inputs=_inputs(args.input), workdir=args.workdir)
    force = True if args.force == [] else (args.force or False)
    if args.dry_run:
        print(chain.plan(force=force).describe())
        return 0
    chain.run(force=force, resume=args.resume)
    return 0
