"""Throughput and latency of ``ftsdk serve``, batched and one request at a time, against plain generation.

Prepares a base model and two LoRA adapters, then starts two ``ftsdk serve`` subprocesses on
127.0.0.1: ``batched`` (dynamic batching, ``--max-batch-size 8``) and ``sequential``
(``--max-batch-size 1``). Each round (``--rounds``, the order of the variants alternating) measures:

- ``direct``: the same greedy chat replies generated one after another in-process with
  transformers+peft, no server (the "plain sequential generation" baseline);
- each server with 1 and with ``--clients`` concurrent clients (the official ``openai`` client, in
  another process), each client sending ``--requests`` chat completions, rotating over the base and
  the adapters and over prompts of different lengths, greedy, at most ``--max-tokens`` tokens each.

Prints one JSON line per measurement (completion tokens/s, requests/s, p50/p95 latency), then per model
the medians over rounds and the ratio of each to ``direct``::

    python benchmarks/serve.py                          # the tiny random model, then smollm2-135m
    python benchmarks/serve.py --models smollm2-135m --threads 1 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

QUESTIONS = [
    "What is the color of the sky? Answer in one sentence.",
    "Name a fruit.",
    "Explain in two sentences why leaves change color in autumn, for a ten-year-old reader.",
]
MODELS = ["base", "alpha", "beta"]
VARIANTS = {"batched": 8, "sequential": 1}  # server variant -> --max-batch-size


def messages(index: int) -> list[dict[str, str]]:
    """The chat of request ``index`` (prompts of different lengths, rotating)."""
    return [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}]


def prepare(model: str, folder: Path) -> tuple[str, dict[str, str]]:
    """The base model's path and two LoRA adapters (random, different) for it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if model == "tiny":
        from ftsdk.testing.tiny import build_tiny_model

        base = str(build_tiny_model(folder / "tiny"))
    else:
        from ftsdk.models.loading import resolve

        base = resolve(model).source
    adapters = {}
    for name, seed in (("alpha", 1), ("beta", 2)):
        torch.manual_seed(seed)
        wrapped = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                                 LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        for parameter_name, parameter in wrapped.named_parameters():
            if "lora_B" in parameter_name:  # PEFT starts B at zero; give the adapters an effect
                torch.nn.init.normal_(parameter, std=0.01)
        wrapped.save_pretrained(folder / name)
        adapters[name] = str(folder / name)
    return base, adapters


class Direct:
    """The baseline: greedy chat replies one after another with transformers+peft in-process."""

    def __init__(self, base: str, adapters: dict[str, str], threads: int | None) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        names = list(adapters)
        self.model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0]).eval()
        for name in names[1:]:
            self.model.load_adapter(adapters[name], adapter_name=name)
        self.choices = [None, *names]
        self.run(len(self.choices), 2)  # warm-up, as the load generator's first request

    def run(self, count: int, max_tokens: int) -> dict[str, Any]:
        import torch

        latencies, tokens = [], 0
        start = time.perf_counter()
        for index in range(count):
            began = time.perf_counter()
            chosen = self.choices[index % len(self.choices)]
            text = self.tokenizer.apply_chat_template(messages(index), tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            if chosen is not None:
                self.model.set_adapter(chosen)
            with self.model.disable_adapter() if chosen is None else contextlib.nullcontext(), torch.inference_mode():
                output = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                             pad_token_id=self.tokenizer.pad_token_id)
            tokens += output.shape[1] - ids.shape[1]
            latencies.append(time.perf_counter() - began)
        return summary(latencies, tokens, time.perf_counter() - start, 1)


def summary(latencies: list[float], tokens: int, wall: float, clients: int) -> dict[str, Any]:
    """Throughput and latency percentiles of one measurement."""
    latencies = sorted(latencies)
    return {
        "requests": len(latencies), "clients": clients, "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 3), "completion_tokens_per_s": round(tokens / wall, 2),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p95_latency_s": round(latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)], 3),
    }


def drive(url: str, clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """The load: ``clients`` threads x ``requests`` chat completions each; latencies and token counts."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)

    def one(index: int) -> tuple[float, int]:
        start = time.perf_counter()
        reply = client.chat.completions.create(model=MODELS[index % len(MODELS)], messages=messages(index),
                                               max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - start, reply.usage.completion_tokens

    one(0)  # warm-up, not counted
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients * requests)))
    wall = time.perf_counter() - start
    return summary([r[0] for r in results], sum(r[1] for r in results), wall, clients)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, deadline_s: float = 300) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not start in time")


@contextlib.contextmanager
def server(base: str, adapters: dict[str, str], max_batch: int, threads: int | None) -> Iterator[str]:
    """A running ``ftsdk serve`` subprocess; yields its URL."""
    port = _free_port()
    command = [sys.executable, "-m", "ftsdk.cli", "serve", base, "--served-name", "base", "--port", str(port),
               "--max-batch-size", str(max_batch)]
    command += ["--threads", str(threads)] if threads else []
    for name, path in adapters.items():
        command += ["--adapter", f"{name}={path}"]
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def load(url: str, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    """Drive ``url`` from another process (its threads and the GIL apart from the server's)."""
    command = [sys.executable, __file__, "--drive", url, "--clients", str(clients), "--requests",
               str(args.requests), "--max-tokens", str(args.max_tokens)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench(model: str, args: argparse.Namespace, folder: Path) -> None:
    """Every round: direct, then each server with 1 and ``--clients`` clients, in alternating order."""
    base, adapters = prepare(model, folder)
    direct = Direct(base, adapters, args.threads)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(server(base, adapters, size, args.threads))
                for name, size in VARIANTS.items()}
        for round_ in range(args.rounds):
            order = ["direct", *urls] if round_ % 2 == 0 else [*reversed(urls), "direct"]
            for variant in order:
                for clients in ([args.clients] if variant == "direct" else [1, args.clients]):
                    if variant == "direct":
                        figures = direct.run(args.clients * args.requests, args.max_tokens)
                    else:
                        figures = load(urls[variant], clients, args)
                    row = {"model": model, "round": round_, "variant": variant, **figures}
                    if variant == "direct":
                        row["clients"] = 1
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(json.dumps(medians(model, rows)), flush=True)


def medians(model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant and client count: the median over rounds, and tokens/s as a multiple of ``direct``."""
    out: dict[str, Any] = {"model": model, "summary": "median over rounds", "rounds": max(r["round"] for r in rows) + 1}
    keys = sorted({(r["variant"], r["clients"]) for r in rows})
    for variant, clients in keys:
        picked = [r for r in rows if r["variant"] == variant and r["clients"] == clients]
        out[f"{variant}@{clients}"] = {
            field: round(statistics.median(r[field] for r in picked), 3)
            for field in ("completion_tokens_per_s", "p50_latency_s", "p95_latency_s")
        }
    reference = out["direct@1"]["completion_tokens_per_s"]
    for key in out:
        if isinstance(out[key], dict):
            out[key]["x_direct"] = round(out[key]["completion_tokens_per_s"] / reference, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, help="CPU threads of the servers and of the direct baseline")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the order of the variants alternating")
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # the load generator's own process
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(drive(args.drive, args.clients, args.requests, args.max_tokens)))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="ftsdk-bench-serve-") as tmp:
        for model in args.models:
            bench(model, args, Path(tmp) / model.replace("/", "_"))


if __name__ == "__main__":
    main()
