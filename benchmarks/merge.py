"""ftsdk vs mergekit on the same merges of the same random Llama models: wall time and peak RSS.

Builds a base and three fine-tunes (dense random task vectors) of a Llama of about 270M parameters in
float32 (about 1.1 GB per model, written in 400 MB shards), writes one mergekit-format YAML per method,
then runs ``mergekit-yaml CONFIG OUT`` and ``ftsdk merge CONFIG --output OUT`` on it, each in its own
process (peak RSS is that process's ``ru_maxrss``, from ``os.wait4``), and checks the two outputs agree.
The launcher itself never imports torch: Linux carries a parent's resident size at fork into the child's
``ru_maxrss``, so models are built and outputs compared in subprocesses of their own::

    python benchmarks/merge.py                       # linear and ties, about 5-10 minutes
    python benchmarks/merge.py --layers 4 --methods linear   # a quick smoke run
    python benchmarks/merge.py --layers 3 --methods slerp dare_ties --dtype bfloat16 --threads 2

``--threads N`` runs both tools with N torch threads (ftsdk's ``threads``, mergekit's ``--num-threads``):
their long sums split between threads, so bitwise agreement needs equal counts (docs/merging.md).
Random methods run with seed 7 in both (mergekit's ``--random-seed``, ftsdk's ``parameters.seed``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

#: per-input parameters of each method; linear averages all four models, the others merge three onto the base
PARAMETERS = {
    "linear": lambda i: {"weight": [0.4, 0.2, 0.2, 0.2][i]},
    "ties": lambda i: {"weight": [0.5, 0.3, 0.7][i], "density": [0.5, 0.4, 0.6][i]},
    "task_arithmetic": lambda i: {"weight": [0.5, 0.3, 0.7][i]},
    "dare_ties": lambda i: {"weight": [0.5, 0.3, 0.7][i], "density": [0.5, 0.4, 0.6][i]},
    "slerp": lambda i: {},
}
#: per-method options: SLERP with per-layer gradients and filters
OPTIONS = {"slerp": {"t": [{"filter": "self_attn", "value": [0, 0.5, 1]}, {"filter": "mlp", "value": [1, 0.3]},
                           {"value": 0.4}]}}
SEED = 7
RANDOM = {"dare_ties"}


def llama_shapes(hidden: int, intermediate: int, layers: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of an untied LlamaForCausalLM (full multi-head attention)."""
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden), "model.norm.weight": (hidden,)
    }
    for i in range(layers):
        prefix = f"model.layers.{i}."
        shapes |= {f"{prefix}{name}.weight": (hidden, hidden) for name in ("self_attn.q_proj", "self_attn.k_proj",
                                                                          "self_attn.v_proj", "self_attn.o_proj")}
        shapes |= {f"{prefix}mlp.gate_proj.weight": (intermediate, hidden), f"{prefix}mlp.up_proj.weight":
                   (intermediate, hidden), f"{prefix}mlp.down_proj.weight": (hidden, intermediate)}
        shapes |= {f"{prefix}input_layernorm.weight": (hidden,), f"{prefix}post_attention_layernorm.weight": (hidden,)}
    return shapes


def build_models(root: Path, args: argparse.Namespace) -> list[Path]:
    """A random base and three fine-tunes (base + dense noise), sharded like save_pretrained does."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from ftsdk.testing.tiny import build_tokenizer

    shapes = llama_shapes(args.hidden, args.intermediate, args.layers, args.vocab)
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=16, num_key_value_heads=16, vocab_size=args.vocab,
                         tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    tokenizer = build_tokenizer()
    folders = [root / name for name in ("base", "dense-a", "dense-b", "dense-c")]
    for index, folder in enumerate(folders):
        folder.mkdir(parents=True)
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        generator = torch.Generator().manual_seed(index)
        base_generator = torch.Generator().manual_seed(0)
        shards, current, size = [], {}, 0
        for name, shape in shapes.items():
            tensor = torch.randn(shape, generator=base_generator) * 0.02
            if index:
                tensor += torch.randn(shape, generator=generator) * 0.002
            tensor = tensor.to(getattr(torch, args.dtype))
            if current and size + tensor.numel() * tensor.element_size() > args.shard_mb * 1_000_000:
                shards.append(current)
                current, size = {}, 0
            current[name] = tensor
            size += tensor.numel() * tensor.element_size()
        shards.append(current)
        weight_map = {}
        for number, shard in enumerate(shards, 1):
            file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, folder / file, metadata={"format": "pt"})
            weight_map |= dict.fromkeys(shard, file)
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folders


def write_config(root: Path, method: str, folders: list[Path], dtype: str, tool: str) -> Path:
    """A mergekit-format YAML, the same for both tools but for ftsdk's spelling of the seed of random methods."""
    inputs = {"linear": folders, "slerp": folders[:2]}.get(method, folders[1:])
    config = {
        "merge_method": method,
        "models": [{"model": str(f), "parameters": PARAMETERS[method](i)} for i, f in enumerate(inputs)],
        "dtype": dtype,
    }
    parameters = dict(OPTIONS.get(method, {}))
    if method in RANDOM and tool == "ftsdk":
        parameters["seed"] = SEED
    if parameters:
        config["parameters"] = parameters
    if method != "linear":
        config["base_model"] = str(folders[0])
    path = root / f"{method}-{tool}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed(command: list[str]) -> tuple[float, float]:
    """Run a command; return its wall seconds and peak RSS in MB (its own ru_maxrss, via wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def difference(a: Path, b: Path) -> tuple[float, int, int]:
    """Largest absolute difference between two merged folders, how many entries differ by more than 1e-6,
    and how many entries there are."""
    from ftsdk.merging.safetensors_io import Checkpoint

    left, right = Checkpoint(a), Checkpoint(b)
    assert set(left.tensors) == set(right.tensors), set(left.tensors) ^ set(right.tensors)
    largest, differing, total = 0.0, 0, 0
    for name in left.tensors:
        gap = (left.read(name).double() - right.read(name).double()).abs()
        largest = max(largest, float(gap.max()))
        differing += int((gap > 1e-6).sum())
        total += gap.numel()
    return largest, differing, total


def run_json(*arguments: str) -> object:
    """Run this script in a subprocess (``--build`` or ``--compare``) and return what it prints as JSON."""
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{arguments[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["linear", "ties"], choices=sorted(PARAMETERS))
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-mb", type=int, default=400, help="input shard size")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype the models are stored in and merged in")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of both tools (default: theirs)")
    parser.add_argument("--workdir", type=Path, default=None, help="where models are built (default: a temp dir)")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # subprocess modes
    parser.add_argument("--compare", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps([str(folder) for folder in build_models(args.build, args)]))
        return
    if args.compare:
        print(json.dumps(difference(*args.compare)))
        return

    root = Path(tempfile.mkdtemp(prefix="ftsdk-merge-bench-", dir=args.workdir))
    bin_dir = Path(sys.executable).parent
    sizes = [f"--{name}={getattr(args, name)}" for name in ("hidden", "intermediate", "layers", "vocab", "dtype")]
    try:
        started = time.perf_counter()
        folders = [Path(f) for f in run_json("--build", str(root), f"--shard-mb={args.shard_mb}", *sizes)]
        size = sum(f.stat().st_size for f in folders[0].glob("*.safetensors")) / 1e9
        print(f"built base + 3 fine-tunes in {time.perf_counter() - started:.0f} s: {size:.2f} GB each, "
              f"{len(list(folders[0].glob('*.safetensors')))} shards")
        rows = []
        for method in args.methods:
            mk_config = write_config(root, method, folders, args.dtype, "mergekit")
            ft_config = write_config(root, method, folders, args.dtype, "ftsdk")
            if args.threads:
                ft_yaml = yaml.safe_load(ft_config.read_text())
                ft_config.write_text(yaml.safe_dump(ft_yaml | {"threads": args.threads}, sort_keys=False))
            mk_out, ft_out = root / f"out-mergekit-{method}", root / f"out-ftsdk-{method}"
            mk_flags = (["--random-seed", str(SEED)] if method in RANDOM else []) + (
                ["--num-threads", str(args.threads)] if args.threads else [])
            mk = timed([str(bin_dir / "mergekit-yaml"), str(mk_config), str(mk_out), *mk_flags])
            ft = timed([str(bin_dir / "ftsdk"), "merge", str(ft_config), "--output", str(ft_out)])
            rows.append((method, mk, ft, run_json("--compare", str(mk_out), str(ft_out))))
            shutil.rmtree(mk_out)
            shutil.rmtree(ft_out)
        print(f"\n{'method':8} {'tool':9} {'wall s':>7} {'peak RSS MB':>12}")
        for method, mk, ft, _ in rows:
            print(f"{method:8} {'mergekit':9} {mk[0]:7.1f} {mk[1]:12.0f}")
            print(f"{method:8} {'ftsdk':9} {ft[0]:7.1f} {ft[1]:12.0f}")
        print(f"\n{'method':8} {'speed-up (mk/ftsdk)':>20} {'RSS ratio (ftsdk/mk)':>21} {'max |diff|':>11} "
              f"{'entries differing > 1e-6':>25}")
        for method, mk, ft, (largest, differing, total) in rows:
            print(f"{method:8} {mk[0] / ft[0]:19.2f}x {ft[1] / mk[1]:21.2f} {largest:11.2e} "
                  f"{differing:>12,} of {total:,}")
        launcher = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n(launcher peak RSS: {launcher:.0f} MB; each tool ran in its own process)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
