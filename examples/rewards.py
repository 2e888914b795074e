"""Example reward functions for the grpo and ppo objectives.

Name them in a recipe as ``reward_functions: ["examples/rewards.py:exact_answer"]`` (a file path relative to
the working directory) or ``"my_package.rewards:exact_answer"`` (an importable module), or pass the functions
themselves from Python. Each receives the prompts and completions as text plus the data set's other columns
by name (one value per completion), and returns one float per completion. Accept ``**kwargs``: trainers
pass more (GRPO adds ``trainer_state``, ``completion_ids`` and logging hooks).
"""

from __future__ import annotations

from typing import Any


def exact_answer(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion is the ``answer`` column (case and surrounding space ignored), else 0.0."""
    return [float(c.strip().lower() == a.strip().lower()) for c, a in zip(completions, answer, strict=True)]


def contains_answer(prompts: list[str], completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the ``answer`` column appears as a word of the completion, else 0.0."""
    return [float(a.lower() in c.lower().split()) for c, a in zip(completions, answer, strict=True)]


def brevity(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """1 / (1 + number of words): favours short answers; add it to a correctness reward with a small weight."""
    return [1.0 / (1 + len(c.split())) for c in completions]


def letter_e(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """Share of the letter "e" among the completion's characters: a dense toy reward (ftsdk's PPO test)."""
    return [c.count("e") / max(len(c), 1) for c in completions]
