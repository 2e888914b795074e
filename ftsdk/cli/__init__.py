"""The ``ftsdk`` command. Thin: it parses arguments and calls the API; heavy imports wait for the command.

Each module of this package adds one group of commands through its ``add_commands(commands)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ftsdk import __version__
from ftsdk.errors import FtsdkError

#: the modules of this package that add commands, in the order ``--help`` lists them
COMMAND_MODULES = ("plugins", "plugin", "train", "merge", "data", "serve", "quantize", "chain", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftsdk", description="Fine-tune, merge and quantize language models with plugins."
    )
    parser.add_argument("--version", action="version", version=f"ftsdk {__version__}")
    # the `deepspeed` launcher puts --local_rank=N before the command; ftsdk reads LOCAL_RANK from the environment
    parser.add_argument("--local_rank", "--local-rank", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FtsdkError as exc:
        print(f"ftsdk: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ftsdk plugins --json | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("ftsdk: interrupted", file=sys.stderr)
        return 130
