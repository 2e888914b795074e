"""Texts a quantizer calibrates on, or a model is scored on: from a data file, or ftsdk's built-in passages.

A data file may be in any format ftsdk reads (``.jsonl``, ``.json``, ``.csv``; ``.txt`` with passages separated
by blank lines). Rows with a ``text`` field are taken as they are; chat, alpaca and prompt/completion rows are
rendered with the model's chat template, so the model is calibrated on what it sees when it serves.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ftsdk.artifacts import sha256_file
from ftsdk.plugin.errors import DataError
from ftsdk.plugin.settings import StrictModel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: the value of ``data`` that names the passages shipped with ftsdk
BUILTIN = "builtin"


class TextsConfig(StrictModel):
    """Which texts, how many and how long."""

    data: Path | Literal["builtin"] = Field(
        BUILTIN,
        description="A data file (.jsonl/.json/.csv rows with `text`, or chat/alpaca/prompt-completion rows "
        "rendered with the model's chat template; or .txt passages separated by blank lines), or 'builtin': "
        "ftsdk's varied English prose, code and dialogue.",
    )
    samples: int = Field(128, ge=1, le=100_000, description="Texts to use at most, drawn at random with `seed`.")
    max_length: int = Field(512, ge=8, le=131_072, description="Tokens per text at most; longer texts are cut.")
    seed: int = Field(0, ge=0, description="Seed of the random draw of `samples` texts.")

    def check(self) -> None:
        """Raise DataError now if ``data`` names a file that is missing or of a type ftsdk cannot read."""
        if self.data == BUILTIN:
            return
        path = Path(self.data)
        if not path.is_file():
            raise DataError(f"text file not found: {path}", hint="give a data file, or 'builtin' for ftsdk's own texts")
        if path.suffix.lower() not in (".jsonl", ".json", ".csv", ".txt"):
            raise DataError(f"{path}: unsupported file type '{path.suffix}'", hint="use .jsonl, .json, .csv or .txt")

    def record(self) -> dict[str, Any]:
        """What a manifest keeps: the source (and its hash) and the options."""
        source = builtin_path() if self.data == BUILTIN else Path(self.data)
        return {
            "data": str(self.data),
            "sha256": sha256_file(source),
            "samples": self.samples,
            "max_length": self.max_length,
            "seed": self.seed,
        }


def builtin_path() -> Path:
    """The file of ftsdk's built-in passages."""
    return Path(str(resources.files("ftsdk.texts") / "passages.jsonl"))


def read_texts(path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
    """Every text of a data file (chat-like rows rendered with ``tokenizer``'s chat template)."""
    path = Path(path)
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise DataError(f"text file not found: {path}")
        texts = [part.strip() for part in path.read_text(encoding="utf-8").split("\n\n")]
        return _non_empty(path, [t for t in texts if t])
    from ftsdk.data.reading import read_rows

    rows, problems = read_rows(path)
    if problems:
        raise DataError(f"{path}: {len(problems)} unreadable row(s)", problems=problems[:20])
    if rows and all(isinstance(row, dict) and isinstance(row.get("text"), str) for _, row in rows):
        return _non_empty(path, [row["text"] for _, row in rows if row["text"].strip()])
    from ftsdk.data.loading import load_dataset

    conversations = load_dataset(path, "sft").examples
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{path} holds chat rows, but the model's tokenizer has no chat template to render them",
                        hint="give rows with a 'text' field, or a .txt file")
    return _non_empty(path, [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations])


def _non_empty(path: Path, texts: list[str]) -> list[str]:
    if not texts:
        raise DataError(f"{path} holds no text")
    return texts


def builtin_texts() -> list[str]:
    """ftsdk's built-in passages."""
    lines = builtin_path().read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def select_texts(config: TextsConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> list[str]:
    """``config.samples`` texts drawn with ``config.seed``, each cut to ``config.max_length`` tokens of ``tokenizer``."""
    config.check()
    texts = builtin_texts() if config.data == BUILTIN else read_texts(config.data, tokenizer)
    if len(texts) > config.samples:
        texts = random.Random(config.seed).sample(texts, config.samples)
    if tokenizer is None:
        return texts
    cut = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        cut.append(text if len(ids) <= config.max_length else tokenizer.decode(ids[: config.max_length]))
    return cut
