"""Throughput and latency of ``ftsdk serve`` under a bounded concurrent load, driven from a second process.

Starts ``ftsdk serve`` on 127.0.0.1 (a subprocess) with a base model and two LoRA adapters, then runs
the load generator in another process: ``--clients`` threads, each sending ``--requests`` chat
completions with the official ``openai`` client, rotating over the base and the adapters, greedy, at most
``--max-tokens`` tokens each. Reports requests/s, completion tokens/s and p50/p95 latency, beside the
requests/s of the same generations done one after another in-process with transformers+peft (no server)::

    python benchmarks/serve.py                          # the tiny random model, then smollm2-135m
    python benchmarks/serve.py --models tiny --clients 8 --requests 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

QUESTION = [{"role": "user", "content": "What is the color of the sky? Answer in one sentence."}]


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


def direct(base: str, adapters: dict[str, str], count: int, max_tokens: int, threads: int | None) -> dict[str, Any]:
    """The baseline: the same greedy chat replies one after another with transformers+peft in-process."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    names = list(adapters)
    model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    text = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    choices = [None, *names]
    start = time.perf_counter()
    for index in range(count):
        chosen = choices[index % len(choices)]
        if chosen is not None:
            model.set_adapter(chosen)
        with model.disable_adapter() if chosen is None else contextlib.nullcontext(), torch.inference_mode():
            model.generate(ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    wall = time.perf_counter() - start
    return {"direct_requests_per_s": round(count / wall, 2)}


def drive(url: str, models: list[str], clients: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """The load: ``clients`` threads x ``requests`` chat completions each; latencies and token counts."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)

    def one(index: int) -> tuple[float, int]:
        start = time.perf_counter()
        reply = client.chat.completions.create(model=models[index % len(models)], messages=QUESTION,
                                               max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - start, reply.usage.completion_tokens

    one(0)  # warm-up, not counted
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients * requests)))
    wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "requests": len(results), "clients": clients, "wall_s": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 2), "completion_tokens_per_s": round(tokens / wall, 1),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p95_latency_s": round(latencies[max(0, round(0.95 * len(latencies)) - 1)], 3),
    }


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


def bench(model: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    base, adapters = prepare(model, folder)
    baseline = direct(base, adapters, args.clients * args.requests, args.max_tokens, args.threads)
    port = _free_port()
    command = [sys.executable, "-m", "ftsdk.cli", "serve", base, "--served-name", "base", "--port", str(port)]
    command += ["--threads", str(args.threads)] if args.threads else []
    for name, path in adapters.items():
        command += ["--adapter", f"{name}={path}"]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(url, server)
        load = [sys.executable, __file__, "--drive", url, "--clients", str(args.clients), "--requests",
                str(args.requests), "--max-tokens", str(args.max_tokens)]
        result = subprocess.run(load, capture_output=True, text=True, check=True, timeout=3600)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    served = json.loads(result.stdout.strip().splitlines()[-1])
    return {"model": model, "max_tokens": args.max_tokens, **served, **baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, help="the server's CPU threads")
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # the load generator's own process
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(drive(args.drive, ["base", "alpha", "beta"], args.clients, args.requests, args.max_tokens)))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="ftsdk-bench-serve-") as tmp:
        for model in args.models:
            print(json.dumps(bench(model, args, Path(tmp) / model.replace("/", "_"))), flush=True)


if __name__ == "__main__":
    main()
