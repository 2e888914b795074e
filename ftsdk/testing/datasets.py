"""Rows of the tiny color task in every data format ftsdk reads, for testing objectives and data code.

    rows_of_format("alpaca", 16)              # [{"instruction": ..., "output": ...}, ...]
    rows_of_task("preference", 16)            # the task's first format (what an objective's data_task takes)
"""

from __future__ import annotations

from typing import Any

from ftsdk.testing.tiny import preference_rows, prompt_rows, task_rows, unpaired_rows


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _question_answer(row: dict[str, Any]) -> tuple[str, str]:
    """The user question and the assistant answer of a :func:`task_rows` chat row."""
    by_role = {m["role"]: m["content"] for m in row["messages"]}
    return by_role["user"], by_role["assistant"]


def rows_of_format(name: str, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` rows of the color task in the format ``name`` (a key of :data:`ftsdk.data.formats.FORMATS`)."""
    if name == "chat":
        return task_rows(count, seed)
    if name in ("alpaca", "prompt_completion"):
        pairs = [_question_answer(row) for row in task_rows(count, seed, system=False)]
        if name == "alpaca":
            return [{"instruction": q, "output": a} for q, a in pairs]
        return [{"prompt": q, "completion": a} for q, a in pairs]
    if name == "text":  # raw text for continued pre-training: each question and its answer as one document
        return [{"text": f"{q} {a}."} for q, a in (_question_answer(row) for row in task_rows(count, seed))]
    if name == "preference":
        return preference_rows(count, seed)
    if name == "chat_preference":
        return preference_rows(count, seed, chat=True)
    if name == "unpaired":
        return unpaired_rows(count, seed)
    if name == "chat_unpaired":
        return [
            {"prompt": _user(r["prompt"]), "completion": _assistant(r["completion"]), "label": r["label"]}
            for r in unpaired_rows(count, seed)
        ]
    if name == "prompt":
        return prompt_rows(count, seed)
    if name == "chat_prompt":
        return [{"prompt": _user(r["prompt"]), "answer": r["answer"]} for r in prompt_rows(count, seed)]
    from ftsdk.data.formats import FORMATS

    raise ValueError(f"unknown data format '{name}'; formats: {', '.join(FORMATS)}")


def rows_of_task(task: str, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows for an objective's ``data_task`` (a key of :data:`ftsdk.data.formats.FORMATS_OF_TASK`)."""
    from ftsdk.data.formats import FORMATS_OF_TASK

    if task not in FORMATS_OF_TASK:
        raise ValueError(f"unknown data task '{task}'; tasks: {', '.join(FORMATS_OF_TASK)}")
    return rows_of_format(FORMATS_OF_TASK[task][0], count, seed)
