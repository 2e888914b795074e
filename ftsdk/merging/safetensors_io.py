"""Safetensors checkpoints read and written one tensor at a time.

Reading parses the shard headers (names, dtypes, shapes, offsets) and copies one tensor's bytes with
``os.preadv`` into a fresh buffer. ``safetensors.safe_open`` memory-maps the file instead: every page a
merge touches then stays counted in the process's resident memory until the file is closed, so a merge
reading 4 GB of inputs would show 4 GB resident. Writing plans every shard's header up front (names,
dtypes and shapes are known before any tensor is merged) and streams each tensor to disk as it is made,
so no shard is ever buffered in memory.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ftsdk.plugin.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

#: safetensors dtype codes and the torch dtype names they stand for
DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
CODE_OF_NAME = {name: code for code, name in DTYPE_NAMES.items()}
ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
             "I8": 1, "U8": 1, "BOOL": 1}
FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its file, dtype code, shape and byte range in the file."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one safetensors file, from its header alone; a corrupt header is a ModelLoadError."""

    def corrupt(why: str) -> ModelLoadError:
        return ModelLoadError(f"cannot read the safetensors header of {path}: {why}",
                              hint="the file is damaged or not safetensors; write or download it again")

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > size - 8:  # read no more than the file holds (a damaged length asks for exabytes)
                raise corrupt(f"its header claims {length:,} bytes of a {size:,}-byte file")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError, RecursionError) as exc:
        raise corrupt(str(exc)) from None
    if not isinstance(header, dict):
        raise corrupt("the header is not a JSON object")
    header.pop("__metadata__", None)
    tensors = {}
    for name, entry in header.items():
        try:
            dtype, shape, (first, last) = entry["dtype"], tuple(int(n) for n in entry["shape"]), entry["data_offsets"]
            begin, end = 8 + length + int(first), 8 + length + int(last)
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(f"tensor {name!r} has a malformed entry ({type(exc).__name__}: {exc})") from None
        if dtype not in DTYPE_NAMES:
            raise ModelLoadError(f"{path}: tensor {name} has dtype {dtype}, which ftsdk cannot merge")
        if not 8 + length <= begin <= end <= size:
            raise corrupt(f"tensor {name!r} lies outside the file (bytes {begin:,} to {end:,} of {size:,})")
        tensors[name] = TensorInfo(name, path, dtype, shape, begin, end)
    return tensors


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder (through its index when sharded)."""
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelLoadError(f"{folder}: shards named in {INDEX_NAME} are missing: {', '.join(missing)}")
        return files
    if (folder / SINGLE_NAME).is_file():
        return [folder / SINGLE_NAME]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    hint = "save it with save_pretrained(..., safe_serialization=True)"
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise ModelLoadError(f"{folder} holds PyTorch pickles, not safetensors", hint=hint)
    raise ModelLoadError(f"{folder} holds no safetensors weights", hint=hint)


class Checkpoint:
    """The weights of one model folder, read on demand one tensor at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = checkpoint_files(folder)
        self.tensors: dict[str, TensorInfo] = {}
        for path in self.files:
            self.tensors.update(read_header(path))
        self._descriptors: dict[Path, int] = {}

    def read(self, name: str) -> torch.Tensor:
        """A fresh tensor holding ``name``'s bytes (no memory map stays behind)."""
        import torch

        info = self.tensors[name]
        tensor = torch.empty(info.shape, dtype=getattr(torch, DTYPE_NAMES[info.dtype]))
        if info.nbytes:
            buffer = tensor.reshape(-1).view(torch.uint8).numpy().data
            descriptor = self._descriptor(info.file)
            done = 0
            while done < info.nbytes:
                count = os.preadv(descriptor, [buffer[done:]], info.start + done)
                if count <= 0:
                    raise ModelLoadError(f"{info.file} ends before tensor {name} does (truncated file?)")
                done += count
        return tensor

    def _descriptor(self, path: Path) -> int:
        if path not in self._descriptors:
            self._descriptors[path] = os.open(path, os.O_RDONLY)
        return self._descriptors[path]

    def close(self) -> None:
        for descriptor in self._descriptors.values():
            os.close(descriptor)
        self._descriptors.clear()


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor as planned before merging: name, dtype code and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = ITEM_SIZE[self.dtype]
        for size in self.shape:
            count *= size
        return count


def plan_shards(tensors: Iterable[PlannedTensor], max_shard_size: int) -> list[list[PlannedTensor]]:
    """Cut the ordered tensors into shards of at most ``max_shard_size`` bytes (a bigger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards if shards[0] else []


def _header(shard: list[PlannedTensor]) -> bytes:
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in shard:
        entries[tensor.name] = {"dtype": tensor.dtype, "shape": list(tensor.shape),
                                "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text


class ShardedWriter:
    """Writes the planned tensors, in order, into safetensors shards; the index is written on close."""

    def __init__(self, folder: Path, tensors: list[PlannedTensor], max_shard_size: int) -> None:
        self.folder = folder
        self.shards = plan_shards(tensors, max_shard_size)
        count = len(self.shards)
        self.names = [SINGLE_NAME] if count == 1 else [
            f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)
        ]
        self._queue = [(shard_index, tensor) for shard_index, shard in enumerate(self.shards) for tensor in shard]
        self._position = 0
        self._handle: BinaryIO | None = None
        self._open_shard = -1

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next planned tensor; its name, dtype and shape must be the planned ones."""
        import torch

        shard_index, planned = self._queue[self._position]
        got = (name, CODE_OF_NAME.get(str(tensor.dtype).removeprefix("torch.")), tuple(tensor.shape))
        if got != (planned.name, planned.dtype, planned.shape):
            expected = (planned.name, planned.dtype, planned.shape)
            raise RuntimeError(f"merge produced {got}, but the plan expected {expected}")
        if shard_index != self._open_shard:
            self._finish_shard()
            self._handle = open(self.folder / self.names[shard_index], "wb")  # noqa: SIM115 (spans writes)
            self._handle.write(_header(self.shards[shard_index]))
            self._open_shard = shard_index
        if planned.nbytes and self._handle is not None:
            self._handle.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self._position += 1

    def _finish_shard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> list[str]:
        """Finish the last shard and write the index (when there are several shards); return the file names."""
        if self._position != len(self._queue):
            raise RuntimeError(f"{len(self._queue) - self._position} planned tensors were never written")
        self._finish_shard()
        if len(self.shards) > 1:
            weight_map = {t.name: self.names[i] for i, shard in enumerate(self.shards) for t in shard}
            total = sum(t.nbytes for shard in self.shards for t in shard)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
            return [*self.names, INDEX_NAME]
        return list(self.names)

    def abort(self) -> None:
        """Close the open shard after a failure (the caller discards the folder)."""
        self._finish_shard()
