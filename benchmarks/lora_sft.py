"""SFT through ftsdk vs. hand-written TRL + PEFT: same model, data, trained tokens, precision and steps.

Each trial runs in a fresh process (so peak RSS is its own) with one torch thread, alternating ftsdk and the
baseline, and the script prints tokens/s of the training loop, the whole ``fit`` / script wall time, peak RSS,
the loss at step 1 and the largest loss gap over the run, then the ftsdk/baseline ratios (medians)::

    python benchmarks/lora_sft.py --data quickstart --precision fp32 --steps 10 --rounds 3
    python benchmarks/lora_sft.py --data long --adapter dora

The baseline trains what ftsdk trains: the same tokens of the replies (pre-tokenized rows with TRL's
completion mask; see ``trained_rows``),
at the same precision (``SFTConfig`` defaults to bf16: it is told fp32 or bf16 explicitly), without gradient
checkpointing (TRL's default is on, ftsdk's off). ``--data long`` is a multi-turn set with longer replies,
written by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m"
RANK, ALPHA, BATCH, MAX_LENGTH, LR = 16, 32, 8, 512, 5e-4
ADAPTERS = ("lora", "dora", "qlora", "full")


def run_ftsdk(data: Path, steps: int, out: Path, precision: str, adapter: str) -> dict[str, Any]:
    from ftsdk import Tuner

    config = {} if adapter == "full" else {"r": RANK, "alpha": ALPHA, "dropout": 0.0, "target_modules": "all-linear"}
    training = {"learning_rate": LR if adapter != "full" else 2e-5, "batch_size": BATCH, "max_length": MAX_LENGTH,
                "warmup_ratio": 0.0, "seed": 0, "logging_steps": 1, "threads": 1, "max_steps": steps,
                "mixed_precision": "no" if precision == "fp32" else "bf16"}
    tuner = Tuner(MODEL, adapter=adapter, objective="sft", adapter_config=config, training=training)
    result = tuner.fit(data, output_dir=out)
    return {"num_tokens": result.metrics["num_tokens"], "train_runtime": result.metrics["train_runtime"],
            "losses": [e["loss"] for e in result.log_history if "loss" in e]}


def trained_rows(tokenizer: Any, data: Path) -> list[dict[str, Any]]:
    """The rows tokenized as ftsdk tokenizes them, as TRL takes pre-tokenized rows: ``input_ids`` and a
    ``completion_mask`` marking the trained tokens (the assistant turns and their end-of-turn token).

    Written as prompt/completion rows, TRL would also train the newline after each end-of-turn token: one more
    token per reply, and a different loss. With these rows both sides train the same tokens.
    """
    from ftsdk.data.loading import load_dataset
    from ftsdk.data.tokenize import tokenize_all

    kept, _ = tokenize_all(tokenizer, load_dataset(data, "sft").examples, MAX_LENGTH, True)
    return [{"input_ids": e.input_ids, "completion_mask": [int(label != -100) for label in e.labels]} for e in kept]


def run_baseline(data: Path, steps: int, out: Path, precision: str, adapter: str) -> dict[str, Any]:
    """What a user writes by hand with TRL and PEFT (the model folder is ftsdk's converted GGUF)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from ftsdk.models.loading import resolve

    torch.set_num_threads(1)
    folder = resolve(MODEL).source
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32) if adapter == "qlora" else None
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, quantization_config=quantization)
    if adapter == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if adapter != "full":
        model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM",
                                                 use_dora=adapter == "dora"))
    rows = trained_rows(tokenizer, data)
    args = SFTConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH,
                     learning_rate=LR if adapter != "full" else 2e-5, lr_scheduler_type="cosine",
                     max_length=MAX_LENGTH, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     seed=0, data_seed=0, disable_tqdm=True, gradient_checkpointing=False,
                     bf16=precision == "bf16", warmup_steps=0, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    model.save_pretrained(out)
    history = trainer.state.log_history
    return {"num_tokens": max(e.get("num_tokens", 0) for e in history), "train_runtime": history[-1]["train_runtime"],
            "losses": [e["loss"] for e in history if "loss" in e]}


def long_data(path: Path, rows: int = 64, seed: int = 0) -> Path:
    """Multi-turn conversations with long replies (about 120-300 tokens each), written once."""
    if path.is_file():
        return path
    from ftsdk.testing.tiny import WORDS

    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."

    lines = []
    for _ in range(rows):
        messages = [{"role": "system", "content": "You are a careful assistant who explains in detail."}]
        for turn in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": " ".join(sentence() for _ in range(rng.randint(1, 3)))})
            messages.append({"role": "assistant", "content": " ".join(sentence() for _ in range(rng.randint(4, 12)))})
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def child(which: str, data: Path, steps: int, precision: str, adapter: str) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runner = run_ftsdk if which == "ftsdk" else run_baseline
        figures = runner(data, steps, Path(tmp) / "out", precision, adapter)
    figures["wall_seconds"] = time.perf_counter() - started
    figures["tokens_per_second"] = figures["num_tokens"] / figures["train_runtime"]
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures))


def trial(which: str, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", which, "--data", str(data), "--steps", str(args.steps),
               "--precision", args.precision, "--adapter", args.adapter]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ | env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{which} trial failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def data_path(name: str) -> Path:
    if name == "quickstart":
        from ftsdk.quickstart.run import data_file

        return Path(data_file("train"))
    if name == "long":
        return long_data(Path(tempfile.gettempdir()) / "ftsdk-bench-long.jsonl")
    return Path(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default="quickstart", help="quickstart, long, or a chat JSONL file")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--adapter", choices=ADAPTERS, default="lora")
    parser.add_argument("--child", choices=["ftsdk", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = data_path(args.data)
    if args.child:
        child(args.child, data, args.steps, args.precision, args.adapter)
        return
    results: dict[str, list[dict[str, Any]]] = {"ftsdk": [], "baseline": []}
    for round_number in range(args.rounds):
        for which in ("ftsdk", "baseline") if round_number % 2 == 0 else ("baseline", "ftsdk"):
            figures = trial(which, args, data)
            results[which].append(figures)
            print(f"round {round_number + 1} {which:8s} {figures['tokens_per_second']:7.1f} tok/s  "
                  f"{figures['wall_seconds']:6.1f} s  {figures['peak_rss_mb']:7.0f} MB  "
                  f"loss@1 {figures['losses'][0]:.6f}", flush=True)
    ours, theirs = results["ftsdk"][0]["losses"], results["baseline"][0]["losses"]
    print(f"\n{args.adapter} SFT, {MODEL}, {args.data} data, {args.precision}, {args.steps} steps x batch {BATCH}, "
          f"1 thread, medians of {args.rounds} alternating rounds")
    print(f"loss at step 1: ftsdk {ours[0]:.6f}, baseline {theirs[0]:.6f}, gap {abs(ours[0] - theirs[0]):.2e}; "
          f"largest gap over {len(ours)} steps {max(abs(a - b) for a, b in zip(ours, theirs)):.2e}")
    print(f"{'':22s}{'ftsdk':>10s}{'baseline':>10s}{'ratio':>8s}")
    for key, label in (("tokens_per_second", "train tokens/s"), ("wall_seconds", "whole run (s)"),
                       ("peak_rss_mb", "peak RSS (MB)")):
        mine = statistics.median(r[key] for r in results["ftsdk"])
        base = statistics.median(r[key] for r in results["baseline"])
        print(f"{label:22s}{mine:10.1f}{base:10.1f}{mine / base:8.3f}")


if __name__ == "__main__":
    main()
