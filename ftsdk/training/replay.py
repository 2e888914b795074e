"""Replay against forgetting: general rows mixed into supervised training at a ratio, optionally with a KL pull
toward the base model's next-token distributions on them (``objective_config.replay`` of ``sft``).

The shipped general set is ``ftsdk/texts/passages.jsonl`` (prose, code and dialogue written for ftsdk), never the
forgetting check's prompts (``ftsdk/evaluation/data/forgetting.jsonl``): training on those would leak the check.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ftsdk.plugin.settings import StrictModel

if TYPE_CHECKING:
    from ftsdk.data.tokenize import TokenizedExample

#: the per-row flag that marks replay rows in the training dataset and in each collated batch
REPLAY_COLUMN = "replay"
#: the ``data:`` value that names ftsdk's shipped general passages
SHIPPED = "general"


class ReplayOptions(StrictModel):
    """General data replayed during SFT so the tuned model keeps what the base could do."""

    data: Literal["general"] | Path = Field(
        SHIPPED, description="'general': ftsdk's shipped general passages (ftsdk/texts/passages.jsonl: 137 texts of "
        "prose, code and dialogue; not the forgetting check's prompts); or a data file of SFT rows (chat, alpaca, "
        "prompt/completion or text) such as general instructions and the base model's own replies to them."
    )
    ratio: float = Field(
        0.2, gt=0, lt=1, description="Share of the training rows that are replay rows: 0.2 adds one replay row per four "
        "task rows (the replay set is cycled when it is smaller)."
    )
    kl_weight: float = Field(
        0.0, ge=0, le=100, description="Weight of KL(base || tuned) of the next-token distributions on the replay rows' "
        "trained tokens, added to the loss. 0: plain replay. Costs one more forward and backward pass of the tuned "
        "model and one forward pass of the base on the replay rows of each batch; the base is the same model with "
        "the adapter disabled (no copy), except for full fine-tuning, which keeps a frozen copy (twice the weights)."
    )
    seed: int = Field(0, ge=0, description="Seed of which replay rows are drawn and in what order.")

    @field_validator("data")
    @classmethod
    def _exists(cls, value: Any) -> Any:
        if isinstance(value, Path) and not value.exists():
            raise ValueError(f"replay data {value} does not exist (give a data file, or 'general' for the shipped set)")
        return value

    def source(self) -> Path:
        """The replay data file."""
        from ftsdk.quantizing.calibration import builtin_path

        return builtin_path() if self.data == SHIPPED else Path(self.data)


def replay_rows(options: ReplayOptions, tokenizer: Any, max_length: int, assistant_only: bool,
                turns: Literal["all", "last"] = "all") -> list[TokenizedExample]:
    """The replay data tokenized one row each (text rows cut to ``max_length``, never packed); rows without a trained
    token are dropped."""
    from ftsdk.data.loading import load_dataset
    from ftsdk.data.tokenize import IGNORE_INDEX, check_template, tokenize_example
    from ftsdk.plugin.errors import DataError

    examples = load_dataset(options.source()).examples
    check_template(tokenizer, examples)
    rows = [tokenize_example(tokenizer, e, max_length, assistant_only, turns) for e in examples]
    rows = [r for r in rows if any(label != IGNORE_INDEX for label in r.labels)]
    if not rows:
        raise DataError(f"no replay row of {options.source()} keeps a trained token within max_length={max_length}",
                        hint="raise training.max_length or give other replay data")
    return rows


def replay_count(task_rows: int, ratio: float) -> int:
    """How many replay rows make ``ratio`` of the mixed rows (at least one)."""
    return max(1, round(task_rows * ratio / (1 - ratio)))


def mix(task: list[TokenizedExample], replay: list[TokenizedExample], ratio: float,
        seed: int) -> dict[str, list[Any]]:
    """Columns ``input_ids``, ``labels`` and ``replay`` of the task rows followed by :func:`replay_count` replay rows,
    drawn in a seeded order and cycled when the replay set is smaller (the trainer's sampler shuffles them)."""
    count = replay_count(len(task), ratio)
    order: list[int] = []
    generator = random.Random(seed)
    while len(order) < count:
        shuffled = list(range(len(replay)))
        generator.shuffle(shuffled)
        order += shuffled
    drawn = [replay[i] for i in order[:count]]
    rows = task + drawn
    return {"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows],
            REPLAY_COLUMN: [False] * len(task) + [True] * len(drawn)}


class ReplayCollator:
    """Wraps a collator: takes each row's replay flag out before it, and adds them to the batch as a bool tensor."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        flags = [bool(e.get(REPLAY_COLUMN, False)) for e in examples]
        batch = self.inner([{k: v for k, v in e.items() if k != REPLAY_COLUMN} for e in examples])
        batch[REPLAY_COLUMN] = torch.tensor(flags, dtype=torch.bool)
        return batch


def kl_to_base(logits: Any, base_logits: Any, labels: Any) -> Any:
    """Mean over the trained positions of KL(base || tuned) between next-token distributions.

    Position ``t`` predicts token ``t + 1``, so it counts when ``labels[:, t + 1]`` is trained. Zero when the
    tuned model still equals the base.
    """
    import torch

    scored = labels[:, 1:] != -100
    if not scored.any():
        return logits.sum() * 0.0
    tuned = torch.log_softmax(logits[:, :-1][scored].float(), dim=-1)
    base = torch.log_softmax(base_logits[:, :-1][scored].float(), dim=-1)
    return torch.nn.functional.kl_div(tuned, base, log_target=True, reduction="batchmean")
