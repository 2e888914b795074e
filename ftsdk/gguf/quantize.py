"""llama.cpp's quantization, in-process (``llama_cpp.llama_model_quantize``), and what it really wrote.

llama.cpp quietly keeps a tensor at another type when its rows do not fit the asked type's blocks (256 for
k-quants, 32 for legacy quants) and still returns success. :func:`quantize_gguf` reads what it did from
llama.cpp's own log (one line per tensor: name, shape, the type converted to); :func:`tensor_report` reads a
GGUF back with ``gguf.GGUFReader`` instead, which is slow on a large vocabulary (every token is parsed) and
serves when the log does not account for every tensor. Tests check both give the same report.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ftsdk.gguf.types import FLOAT_GGML, TYPES, GGUFType
from ftsdk.plugin.errors import ConfigError

log = logging.getLogger("ftsdk.gguf")
#: llama-quant.cpp's line per tensor: ``[   3/ 272] blk.0.attn_k.weight - [   576,    192,      1,      1],
#: type =    f32, converting to q5_0 .. size = ...`` (no "converting to" when the tensor is copied as it is)
_TENSOR_LINE = re.compile(r"^\[\s*\d+/\s*(\d+)\]\s+(\S+)\s+- \[([\d,\s]+)\], type =\s*(\w+), "
                          r"(?:converting to (\w+) \.\. )?size =")


def quantize_gguf(source: str | Path, out_file: str | Path, type_name: str, *,
                  threads: int | None = None) -> TensorReport:
    """Quantize the GGUF ``source`` (f32 or bf16) into ``out_file`` with llama.cpp's ``type_name`` mix.

    Returns what llama.cpp wrote, from its log; read back from ``out_file`` when the log does not list every
    tensor (another llama.cpp version's wording).
    """
    from ftsdk.gguf.runtime import captured_llama_log, import_llama_cpp

    llama_cpp = import_llama_cpp()
    gguf_type = TYPES[type_name]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, gguf_type.ftype)
    params.nthread = threads or os.cpu_count() or 1
    with captured_llama_log() as lines:
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(out_file).encode(), params)
    if code != 0:
        raise ConfigError(f"llama.cpp could not quantize {source} to {type_name} (llama_model_quantize returned {code})",
                          hint="run with logging at INFO to see llama.cpp's message; check the rows fit the type")
    logged = logged_tensors(lines)
    if logged is None:
        log.debug("llama.cpp's log did not list every tensor of %s: reading it back", out_file)
        return tensor_report(out_file, gguf_type)
    return build_report(logged, gguf_type)


@dataclass
class TensorReport:
    """The types of a GGUF's 2-D weights, and the ones left above the asked type because their rows do not fit."""

    types: dict[str, int]
    #: tensor name -> "TYPE (row N is not a multiple of B)"
    misfits: dict[str, str] = field(default_factory=dict)
    quantized: int = 0

    def warning(self, type_name: str) -> str | None:
        """One line naming the tensors llama.cpp left at another type, or None when every row fit.

        Tensors are grouped by type and by name with the block number dropped (``attn_q x30``); the full
        names are in :attr:`misfits`.
        """
        if not self.misfits:
            return None
        groups: dict[str, Counter[str]] = {}
        for name, why in self.misfits.items():
            family = re.sub(r"^blk\.\d+\.", "", name).removesuffix(".weight")
            groups.setdefault(why, Counter())[family] += 1
        listed = "; ".join(f"{why}: " + ", ".join(f"{family} x{n}" if n > 1 else family for family, n in counts.items())
                           for why, counts in groups.items())
        return (f"{len(self.misfits)} tensor(s) could not be stored as {type_name} because their rows do not fit its "
                f"blocks; llama.cpp kept them at another type: {listed}")


def logged_tensors(lines: Iterable[str]) -> list[tuple[str, tuple[int, ...], str]] | None:
    """(name, shape, GGML type) of each tensor llama.cpp's quantization log lists; None unless it lists them all.

    The shape drops trailing 1s, as ``ggml_n_dims`` does when llama.cpp decides what to quantize.
    """
    import gguf

    tensors: dict[str, tuple[tuple[int, ...], str]] = {}
    total = None
    for line in lines:
        match = _TENSOR_LINE.match(line)
        if match is None:
            continue
        count, name, dims, stored, converted = match.groups()
        ne = [int(d) for d in dims.split(",")]
        while len(ne) > 1 and ne[-1] == 1:
            ne.pop()
        type_name = (converted or stored).upper()
        if type_name not in gguf.GGMLQuantizationType.__members__:
            return None
        tensors[name] = (tuple(ne), type_name)
        total = int(count)
    if not tensors or len(tensors) != total:
        return None
    return [(name, shape, type_name) for name, (shape, type_name) in tensors.items()]


def build_report(tensors: Iterable[tuple[str, tuple[int, ...], str]], gguf_type: GGUFType) -> TensorReport:
    """The report of tensors given as (name, shape in GGML order, GGML type name), asked to be ``gguf_type``."""
    report = TensorReport(types={})
    counts: Counter[str] = Counter()
    for name, shape, actual in tensors:
        if len(shape) < 2:
            continue
        counts[actual] += 1
        if actual not in FLOAT_GGML:
            report.quantized += 1
        row = int(shape[0])
        if not gguf_type.is_float and row % gguf_type.block != 0:
            report.misfits[name] = f"{actual} (row {row} is not a multiple of {gguf_type.block})"
    report.types = dict(sorted(counts.items()))
    return report


def tensor_report(path: str | Path, gguf_type: GGUFType) -> TensorReport:
    """Read ``path`` back (``gguf.GGUFReader``) and compare each 2-D tensor's type with ``gguf_type``."""
    import gguf

    reader = gguf.GGUFReader(path)
    return build_report(((t.name, tuple(int(d) for d in t.shape), t.tensor_type.name) for t in reader.tensors),
                        gguf_type)
