"""pytest fixtures: a tiny model folder and data files. Use ``pytest_plugins = ["ftsdk.testing.fixtures"]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftsdk.testing.tiny import build_tiny_model, task_rows, write_jsonl


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny Llama and its tokenizer, saved once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train and eval JSONL files of a tiny learnable chat task."""
    folder = tmp_path_factory.mktemp("chat-data")
    return write_jsonl(folder / "train.jsonl", task_rows(64, seed=1)), write_jsonl(
        folder / "eval.jsonl", task_rows(16, seed=2)
    )
