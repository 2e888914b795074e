"""Peak memory of one-pass data handling on a generated JSONL file, against its size.

Writes ``--mb`` megabytes of chat rows (about ``--row-kb`` KB each) to a scratch file, then measures, each in a
fresh process, the peak resident memory (``ru_maxrss``) of:

- ``check --stream``: ``ftsdk data check --stream`` (validation and per-row findings, one pass);
- ``tokenize``: :func:`ftsdk.data.stream.tokenize_source` with the tiny test tokenizer (validation and
  tokenization in one pass, tokens to a memory-mapped Arrow file);
- ``check`` (only with ``--whole``): the in-memory ``ftsdk data check``, for comparison.

    python benchmarks/data_stream.py --mb 2048 --steps check-stream
    python benchmarks/data_stream.py --mb 200 --steps tokenize check --whole
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "the sky grass snow coal blue green white black order parcel refund card tablet charge update".split()


def generate(path: Path, megabytes: int, row_kb: float, seed: int = 0) -> int:
    """Write chat rows until the file holds ``megabytes`` MB (a pool of texts, each row numbered); return rows."""
    rng = random.Random(seed)
    words = int(row_kb * 1024 / 12)
    pool = [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(64)]
    target, rows, written = megabytes * 2**20, 0, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            line = json.dumps({"messages": [{"role": "user", "content": f"{rows} {pool[rows % 64]}"},
                                            {"role": "assistant", "content": pool[(rows * 7) % 64] + "."}]}) + "\n"
            written += handle.write(line)
            rows += 1
    return rows


CHILD = {
    "check-stream": "from ftsdk.cli import main\nimport sys\nsys.exit(main(['data', 'check', PATH, '--stream', '--json']))",
    "check": "from ftsdk.cli import main\nimport sys\nsys.exit(main(['data', 'check', PATH, '--json']))",
    "tokenize": ("from ftsdk.data.stream import tokenize_source\nfrom ftsdk.testing import build_tokenizer\n"
                 "import tempfile\nwith tempfile.TemporaryDirectory() as work:\n"
                 "    done = tokenize_source(PATH, work, build_tokenizer(), 2048)\n"
                 "    print(done.rows, done.sequences, done.arrow_file.stat().st_size)"),
}


def measure(step: str, path: Path) -> dict[str, float]:
    """Seconds and peak resident memory of ``step`` in a fresh process (its own rusage, from wait4)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen([sys.executable, "-c", CHILD[step].replace("PATH", repr(str(path)))],
                                 stdout=output, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"})
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            output.seek(0)
            raise SystemExit(f"{step} failed:\n{output.read()[-2000:]}")
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=2048, help="file size in MB")
    parser.add_argument("--row-kb", type=float, default=4.0, help="approximate row size in KB")
    parser.add_argument("--steps", nargs="+", default=["check-stream"], choices=sorted(CHILD))
    parser.add_argument("--whole", action="store_true", help="allow the in-memory check (it holds the whole file)")
    parser.add_argument("--keep", type=Path, help="reuse or keep the generated file at this path")
    args = parser.parse_args()
    if "check" in args.steps and not args.whole:
        parser.error("the in-memory check holds the whole file: pass --whole to measure it")
    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep or Path(scratch) / "big.jsonl"
        if not path.exists():
            rows = generate(path, args.mb, args.row_kb)
            print(f"generated {path.stat().st_size / 2**20:.0f} MB, {rows} rows", flush=True)
        for step in args.steps:
            print(step, json.dumps(measure(step, path)), flush=True)


if __name__ == "__main__":
    main()
