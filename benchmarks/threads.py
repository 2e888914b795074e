"""Training speed on a busy machine: torch's default threads vs. ftsdk's choice (the idle cores).

Each trial trains LoRA SFT on SmolLM2-135M for a few steps in a fresh process, float32, while a neighbour process
keeps one core busy (``--busy 0`` for a quiet machine). Variants alternate over the rounds::

    python benchmarks/threads.py --steps 4 --rounds 3 --busy 1

``torch default`` sets training.threads to torch's own default (all cores); ``ftsdk auto`` leaves it unset, so ftsdk
counts the idle cores when training starts. The seconds per optimizer step of each are printed, with the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("torch default", "ftsdk auto")
BUSY_LOOP = "import time\nwhile True:\n    sum(range(10_000))\n"


def child(variant: str, steps: int) -> None:
    import torch

    from ftsdk import Tuner
    from ftsdk.quickstart.run import PRESET, data_file

    threads = torch.get_num_threads() if variant == "torch default" else None
    training = PRESET["training"] | {"max_steps": steps, "logging_steps": 1, "threads": threads}
    tuner = Tuner("smollm2-135m", adapter="lora", objective="sft", adapter_config=PRESET["adapter_config"],
                  training=training)
    with tempfile.TemporaryDirectory() as tmp:
        result = tuner.fit(data_file("train"), output_dir=Path(tmp) / "out")
    chosen = result.manifest["placement"]["threads"]
    print("RESULT " + json.dumps({"seconds_per_step": result.metrics["train_runtime"] / steps,
                                  "threads": chosen["threads"]}))


def trial(variant: str, steps: int, busy: int) -> dict[str, float]:
    neighbours = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        time.sleep(1.0)  # let the neighbours take their cores before ftsdk looks
        command = [sys.executable, __file__, "--child", variant, "--steps", str(steps)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        for process in neighbours:
            process.kill()
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{variant} trial failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=1, help="neighbour processes that each keep a core busy")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for round_number in range(args.rounds):
        for variant in VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]:
            figures = trial(variant, args.steps, args.busy)
            results[variant].append(figures)
            print(f"round {round_number + 1} {variant:14s} {figures['seconds_per_step']:6.2f} s/step "
                  f"({figures['threads']} threads)", flush=True)
    medians = {variant: statistics.median(r["seconds_per_step"] for r in runs) for variant, runs in results.items()}
    print(f"\nLoRA SFT, SmolLM2-135M, float32, {args.steps} steps, {args.busy} busy neighbour(s), "
          f"medians of {args.rounds} alternating rounds")
    for variant, seconds in medians.items():
        print(f"{variant:14s} {seconds:6.2f} s/step")
    print(f"speed-up of ftsdk auto: {medians['torch default'] / medians['ftsdk auto']:.2f}x")


if __name__ == "__main__":
    main()
