"""LoRA SFT through ftsdk vs. hand-written TRL + PEFT: same model, data, hyperparameters and steps.

Each trial runs in a fresh process (so peak RSS is its own), alternating ftsdk and the baseline,
and the script prints tokens/s of the training loop, whole-run wall time and peak RSS of each, and
the ftsdk/baseline ratios (medians over the rounds)::

    python benchmarks/lora_sft.py --steps 10 --rounds 3 [--gradient-checkpointing]

TRL's SFTConfig turns gradient checkpointing on by default and ftsdk leaves it off (speed first);
the baseline is told the same setting as ftsdk, so both run the same computation.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
TRAINING = {"learning_rate": 5e-4, "batch_size": 8, "max_length": 256, "warmup_ratio": 0.0, "seed": 0,
            "logging_steps": 1}


def run_ftsdk(data: Path, steps: int, out: Path, checkpointing: bool) -> dict[str, float]:
    from ftsdk import Tuner

    tuner = Tuner(MODEL, adapter="lora", objective="sft", adapter_config=LORA,
                  training=TRAINING | {"max_steps": steps, "gradient_checkpointing": checkpointing})
    result = tuner.fit(data, output_dir=out)
    return {"num_tokens": result.metrics["num_tokens"], "train_runtime": result.metrics["train_runtime"]}


def run_baseline(data: Path, steps: int, out: Path, checkpointing: bool) -> dict[str, float]:
    """What a user writes by hand with TRL and PEFT (the model folder is ftsdk's converted GGUF)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ftsdk.models.loading import resolve

    folder = resolve(MODEL).source
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    args = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=5e-4,
                     lr_scheduler_type="cosine", max_length=256, logging_steps=1, save_strategy="no",
                     report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True,
                     gradient_checkpointing=checkpointing)
    trainer = SFTTrainer(model=model, args=args, train_dataset=load_dataset("json", data_files=str(data))["train"],
                         processing_class=tokenizer)
    trainer.train()
    model.save_pretrained(out)
    history = trainer.state.log_history
    return {"num_tokens": max(e.get("num_tokens", 0) for e in history), "train_runtime": history[-1]["train_runtime"]}


def child(which: str, data: Path, steps: int, checkpointing: bool) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runner = run_ftsdk if which == "ftsdk" else run_baseline
        figures = runner(data, steps, Path(tmp) / "out", checkpointing)
    figures["wall_seconds"] = time.perf_counter() - started
    figures["tokens_per_second"] = figures["num_tokens"] / figures["train_runtime"]
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures))


def trial(which: str, data: Path, steps: int, checkpointing: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", which, "--data", str(data), "--steps", str(steps)]
    command += ["--gradient-checkpointing"] if checkpointing else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{which} trial failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="chat JSONL (default: the quickstart's train split)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint activations in both")
    parser.add_argument("--child", choices=["ftsdk", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data is None:
        from ftsdk.quickstart.run import data_file

        args.data = data_file("train")
    if args.child:
        child(args.child, args.data, args.steps, args.gradient_checkpointing)
        return
    results: dict[str, list[dict[str, float]]] = {"ftsdk": [], "baseline": []}
    for round_number in range(args.rounds):
        for which in ("ftsdk", "baseline") if round_number % 2 == 0 else ("baseline", "ftsdk"):
            figures = trial(which, args.data, args.steps, args.gradient_checkpointing)
            results[which].append(figures)
            print(f"round {round_number + 1} {which:8s} {figures['tokens_per_second']:7.1f} tok/s  "
                  f"{figures['wall_seconds']:6.1f} s  {figures['peak_rss_mb']:7.0f} MB", flush=True)
    mode = "with" if args.gradient_checkpointing else "without"
    print(f"\nLoRA SFT, {MODEL}, {args.steps} steps x batch 8, {mode} gradient checkpointing, "
          f"medians of {args.rounds} alternating rounds")
    print(f"{'':22s}{'ftsdk':>10s}{'baseline':>10s}{'ratio':>8s}")
    for key, label in (("tokens_per_second", "train tokens/s"), ("wall_seconds", "whole run (s)"),
                       ("peak_rss_mb", "peak RSS (MB)")):
        ours = statistics.median(r[key] for r in results["ftsdk"])
        theirs = statistics.median(r[key] for r in results["baseline"])
        print(f"{label:22s}{ours:10.1f}{theirs:10.1f}{ours / theirs:8.3f}")


if __name__ == "__main__":
    main()
