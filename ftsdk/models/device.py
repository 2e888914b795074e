"""Pick the device and dtype to run on: CUDA with bf16 where supported, else CPU in float32.

Whether the hardware computes in bf16 natively (recent GPUs; CPUs with AVX512-BF16 or AMX) is
recorded too: training then uses bf16 autocast over float32 weights (see TrainingConfig.mixed_precision).
On CPUs without it, bf16 is emulated and several times slower than float32.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ftsdk.plugin.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Placement:
    """Where a model runs and in which floating-point type."""

    device: str
    dtype: torch.dtype
    #: the device computes bfloat16 natively
    native_bf16: bool = False

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def choose_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """Resolve ``auto`` choices against the hardware; refuse impossible ones."""
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible", hint="use device: auto or cpu")
    chosen = "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"
    if dtype == "auto":
        # bf16 on CPUs without native bf16 instructions trains 3-4x slower than fp32
        wanted = torch.bfloat16 if chosen == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        wanted = getattr(torch, dtype)
    if chosen == "cuda" and wanted == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bfloat16", hint="use dtype: float16 or float32")
    native = torch.cuda.is_bf16_supported() if chosen == "cuda" else _cpu_has_bf16(torch)
    return Placement(chosen, wanted, native)


def _cpu_has_bf16(torch: object) -> bool:
    cpu = torch.cpu  # type: ignore[attr-defined]
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, check, lambda: False)() for check in checks)


@dataclass(frozen=True)
class ThreadChoice:
    """How many CPU threads torch computes with, and why: recorded in the manifest and shown in the report."""

    threads: int
    #: cores this process may run on
    cores: int
    #: cores that were idle when the run started (None where the system does not tell)
    idle_cores: float | None
    #: "set" (the user's training.threads) or "auto" (the idle cores)
    source: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        idle = f", {self.idle_cores:.1f} idle at the start" if self.idle_cores is not None else ""
        return f"{self.threads} of {self.cores} cores ({self.source}{idle})"


def choose_threads(requested: int | None, *, processes: int = 1, sample_seconds: float = 0.3) -> ThreadChoice:
    """``requested`` threads, or as many as there are idle cores (at least one, at most torch's default), shared
    among the ``processes`` of a distributed run on this machine.

    Two torch threads on a machine where another process keeps one of two cores busy wait on each other and run
    3-9x slower than one thread; counting idle cores over a short sample avoids that oversubscription.
    """
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if requested is not None:
        return ThreadChoice(requested, cores, None, "set")
    idle = idle_cores(sample_seconds)
    default = torch.get_num_threads()
    if idle is None:
        return ThreadChoice(default, cores, None, "auto")
    # a core counts as free when at least 3/4 of it was idle (a busy neighbour often leaves a sliver)
    return ThreadChoice(max(1, min(default, int(idle + 0.25) // processes)), cores, idle, "auto")


def idle_cores(sample_seconds: float) -> float | None:
    """Idle CPU time per second over a short sample, read from ``/proc/stat``; None where it does not exist."""

    def read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                fields = [int(value) for value in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields[:8])

    first = read()
    if first is None:
        return None
    time.sleep(sample_seconds)
    second = read()
    if second is None or second[1] <= first[1]:
        return None
    fraction = (second[0] - first[0]) / (second[1] - first[1])
    return fraction * (os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` CPU threads for torch (None: leave torch's setting), then restore it."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
