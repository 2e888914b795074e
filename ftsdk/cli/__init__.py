"""The ``ftsdk`` command. Thin: it parses arguments and calls the API; heavy imports wait for the command.

Each module of this package adds one group of commands through its ``add_commands(commands)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from ftsdk import __version__
from ftsdk.cli.failures import INTERRUPTED, USER_ERROR, describe

#: the modules of this package that add commands, in the order ``--help`` lists them
COMMAND_MODULES = ("plugins", "plugin", "train", "merge", "data", "serve", "quantize", "chain", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftsdk", description="Fine-tune, merge and quantize language models with plugins."
    )
    parser.add_argument("--version", action="version", version=f"ftsdk {__version__}")
    _add_output_options(parser, default=False)
    # the `deepspeed` launcher puts --local_rank=N before the command; ftsdk reads LOCAL_RANK from the environment
    parser.add_argument("--local_rank", "--local-rank", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_commands(commands)
    # `ftsdk quickstart --verbose` works as well as `ftsdk --verbose quickstart` (aliases share one parser)
    for command in {id(command): command for command in _subcommands(parser)}.values():
        _add_output_options(command, default=argparse.SUPPRESS)
    return parser


def _add_output_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="show the libraries' own progress bars and warnings (hidden by default)")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error (also FTSDK_DEBUG=1)")


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command and nested command below ``parser``."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                found += [command, *_subcommands(command)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("FTSDK_DEBUG", "") not in ("", "0")
    from ftsdk.console import library_output

    try:
        with library_output(verbose=args.verbose or debug):
            return args.run(args)
    except BrokenPipeError:  # `ftsdk plugins --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("ftsdk: error: interrupted; outputs are written atomically, so nothing half-written was kept",
              file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        message = describe(exc)
        if message is not None:
            print(f"ftsdk: error: {message}", file=sys.stderr)
            return USER_ERROR
        # not something the user did: a bug in ftsdk or a plugin
        print(f"ftsdk: error: unexpected {type(exc).__name__}: {exc}\n"
              "  hint: this is a bug; rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1
