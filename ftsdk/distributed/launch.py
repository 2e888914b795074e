"""``ftsdk train --nproc N``: run the same command again as N processes under torchrun, in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence


def torchrun_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The torchrun (``torch.distributed.run``) command line that runs ``ftsdk ARGV`` as ``nproc`` processes.

    ``--standalone`` picks a free local port for the rendezvous, so runs side by side do not collide.
    torchrun parses abbreviations of its own options even among the script's arguments: an argument such as
    ``--nproc`` (a prefix of ``--nproc-per-node``) must not be forwarded.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "ftsdk.cli", *argv]


def relaunch(argv: Sequence[str], nproc: int, env: Mapping[str, str] | None = None) -> int:
    """Run ``ftsdk ARGV`` under torchrun with ``nproc`` processes (extra ``env``) and wait; return its exit status."""
    command = torchrun_command(argv, nproc)
    return subprocess.run(command, check=False, env={**os.environ, **(env or {})}).returncode
