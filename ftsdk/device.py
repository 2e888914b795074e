"""Pick the device and dtype to run on: CUDA with bf16 where supported, else CPU in float32.

Whether the hardware computes in bf16 natively (recent GPUs; CPUs with AVX512-BF16 or AMX) is
recorded too: training then uses bf16 autocast over float32 weights (see TrainingConfig.mixed_precision).
On CPUs without it, bf16 is emulated and several times slower than float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ftsdk.errors import ConfigError

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
