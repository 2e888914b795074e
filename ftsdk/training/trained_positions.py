"""Compute the LM head and the loss only at the positions that are trained, on every device.

TRL's fused LM head (SFT, GRPO, RLOO) projects through the head only the positions whose next-token label is
kept, but only where its Triton kernel runs (CUDA, XPU): elsewhere it scores every position and masks the result,
to keep tile shapes fixed for compilers such as Neuron's. On the CPU, in eager mode, nothing recompiles, and a chat
batch trains a few percent of its positions (the replies, not the prompts or the padding), so scoring every
position spends most of the head's time and memory on numbers that are thrown away. Within
:func:`trained_positions_only`, TRL's head scores the trained positions on the CPU too: the same per-token
log-probabilities, entropy and accuracy, so the same loss and gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: the module whose ``_use_triton`` decides between scoring kept positions and scoring every position
TRL_HEAD_MODULE = "trl.trainer.utils"


@contextmanager
def trained_positions_only(enabled: bool = True) -> Iterator[bool]:
    """Within the block, TRL's fused LM head scores only trained positions on the CPU; yields whether it does.

    The kernel choice (Triton or PyTorch tiles) is left to TRL: only the choice of positions changes.
    """
    import importlib

    module = importlib.import_module(TRL_HEAD_MODULE)
    original: Callable[[Any], bool] | None = getattr(module, "_use_triton", None)
    if not enabled or original is None:
        yield False
        return

    def compact(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    module._use_triton = compact
    try:
        yield True
    finally:
        module._use_triton = original
