"""Running a GGUF in-process with llama-cpp-python: loading (quietly) and scoring given token ids."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsdk.plugin.errors import ModelLoadError, PluginUnavailableError

if TYPE_CHECKING:
    import llama_cpp

#: the logger llama-cpp-python prints llama.cpp's own messages through (to stderr, at or above its level)
LLAMA_LOGGER = "llama-cpp-python"


def import_llama_cpp() -> Any:
    """``llama_cpp``, or PluginUnavailableError saying how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise PluginUnavailableError(
            "llama-cpp-python is not installed: GGUF quantization and running need it",
            hint='pip install "ftsdk[gguf]" (it compiles llama.cpp; set CMAKE_ARGS="-DGGML_NATIVE=OFF" for portable builds)',
        ) from exc
    return llama_cpp


@contextlib.contextmanager
def llama_log_level(level: int = logging.CRITICAL) -> Iterator[None]:
    """Show only llama.cpp messages at ``level`` and above while the block runs (unless our logger is at DEBUG).

    llama-cpp-python maps ggml's log levels to logging's with an older numbering (ggml's WARN reads as ERROR),
    hence CRITICAL by default: failures come back as return codes and ftsdk reports what matters itself.
    """
    logger = logging.getLogger(LLAMA_LOGGER)
    previous = logger.level
    if not logging.getLogger("ftsdk").isEnabledFor(logging.DEBUG):
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextlib.contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines while the block runs (the list fills on exit), still passing them on.

    Installs a callback with ``llama_log_set`` that records each message and forwards it to the callback set
    before (llama-cpp-python's, so :func:`llama_log_level` still decides what is shown), and puts that one back
    afterwards. llama.cpp's log is process-wide: run one llama.cpp call at a time inside the block.
    """
    import ctypes

    llama_cpp = import_llama_cpp()
    previous, previous_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(previous), ctypes.byref(previous_data))
    chunks: list[bytes] = []

    def record(level: int, text: bytes | None, user_data: Any) -> None:
        chunks.append(text or b"")
        if previous:
            previous(level, text, user_data)

    callback = llama_cpp.llama_log_callback(record)  # referenced until restored: ctypes must not free it
    lines: list[str] = []
    llama_cpp.llama_log_set(callback, previous_data)
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(previous, previous_data)
        lines += b"".join(chunks).decode("utf-8", errors="replace").splitlines()


def _file(path: str | Path) -> Path:
    from ftsdk.gguf import gguf_file

    path = Path(path)
    if path.is_dir():
        return gguf_file(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist", hint="pass a .gguf file or a folder holding one")
    return path


def load_gguf(path: str | Path, *, lora: str | Path | None = None, n_ctx: int = 2048, **kwargs: Any) -> llama_cpp.Llama:
    """A quiet ``llama_cpp.Llama`` on the GGUF ``path`` (a file or a folder holding one), with an optional GGUF LoRA.

    Keeps the logits of every position (``logits_all=True``, needed by :func:`gguf_sequence_nll`) unless told
    otherwise; other keyword arguments go to ``llama_cpp.Llama``.
    """
    llama_cpp = import_llama_cpp()
    kwargs.setdefault("verbose", False)
    kwargs.setdefault("logits_all", True)
    lora_path = str(_file(lora)) if lora is not None else None
    # verbose=False also sets llama-cpp-python's logger to ERROR for what follows (its own choice, process-wide)
    return llama_cpp.Llama(model_path=str(_file(path)), lora_path=lora_path, n_ctx=n_ctx, **kwargs)


def sequence_log_probs(llm: llama_cpp.Llama, tokens: list[int]) -> Any:
    """Log-softmax of the logits at every position of ``tokens`` (float64 numpy, ``len(tokens) x n_vocab``)."""
    import numpy as np

    if not getattr(llm, "_logits_all", True):  # llama-cpp-python keeps the flag only privately
        raise ValueError("the Llama keeps only the last logits: load it with logits_all=True (load_gguf does)")
    if len(tokens) > llm.n_ctx():
        raise ValueError(f"a sequence of {len(tokens)} tokens does not fit n_ctx={llm.n_ctx()}: load with a larger n_ctx")
    llm.reset()
    llm.eval(tokens)
    logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
    peak = logits.max(axis=-1, keepdims=True)
    return logits - peak - np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True))


def gguf_sequence_nll(llm: llama_cpp.Llama, sequences: list[list[int]]) -> tuple[float, int]:
    """Summed next-token negative log-likelihood of ``sequences`` and the number of predicted tokens.

    The llama.cpp twin of :func:`ftsdk.models.perplexity.sequence_nll`: pair it with
    :func:`ftsdk.models.perplexity.perplexity_from_nll` on the same token ids.
    """
    total, count = 0.0, 0
    for tokens in sequences:
        if len(tokens) < 2:
            continue
        log_probs = sequence_log_probs(llm, tokens)
        total -= float(sum(log_probs[i, tokens[i + 1]] for i in range(len(tokens) - 1)))
        count += len(tokens) - 1
    return total, count
