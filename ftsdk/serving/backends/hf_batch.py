"""One batched ``generate`` for several requests: left-padded prompts, per-row stops, per-row adapters.

Rows are left-padded with an attention mask (transformers derives the position ids from it, so a
padded row sees the same positions as it would alone). Each row ends on its own: at EOS, at its own
``max_tokens``, at its own stop sequences, or when its request is cancelled; a row that has ended is
filled with padding until the batch ends, and its tokens are cut where it ended. With a PeftModel,
``adapter_names`` names each row's adapter (``__base__``: none), so one batch serves several adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftsdk.serving.backends.base import Generation, GenerationJob

#: PEFT's name for "no adapter" in ``adapter_names``
BASE_ROW = "__base__"


@dataclass(frozen=True)
class RowResult:
    """What one row generated (its own tokens only) and whether it ended before its ``max_tokens``."""

    ids: list[int]
    ended: bool


def sampling_options(job: GenerationJob) -> dict[str, Any]:
    """``generate``'s sampling arguments for a job (every job of a batch has the same ones)."""
    if job.temperature > 0:
        return {"do_sample": True, "temperature": job.temperature, "top_p": job.top_p, "top_k": 0}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def generate_rows(model: Any, tokenizer: Any, jobs: list[GenerationJob], generations: list[Generation],
                  adapter_names: list[str] | None, eos: set[int]) -> list[RowResult]:
    """Run ``jobs`` (same sampling options) as one left-padded batch; each row's own tokens and end."""
    import torch
    from transformers import StoppingCriteriaList

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos))
    width = max(len(job.prompt_ids) for job in jobs)
    ids = torch.full((len(jobs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(jobs), width), dtype=torch.long)
    for row, job in enumerate(jobs):
        ids[row, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids, dtype=torch.long)
        mask[row, width - len(job.prompt_ids) :] = 1
    rows_end = _RowsEnd(tokenizer, jobs, generations, width)
    extra = {} if adapter_names is None else {"adapter_names": adapter_names}
    if jobs[0].seed is not None:
        torch.manual_seed(jobs[0].seed)
    with torch.inference_mode():
        output = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max(job.max_tokens for job in jobs),
            stopping_criteria=StoppingCriteriaList([rows_end]),
            pad_token_id=pad,
            **sampling_options(jobs[0]),
            **extra,
        )
    results = []
    for row, job in enumerate(jobs):
        new = output[row, width:].tolist()[: rows_end.ended_at[row] or job.max_tokens]
        cut = next((i + 1 for i, token in enumerate(new) if token in eos), None)
        results.append(RowResult(new[:cut] if cut else new, cut is not None or rows_end.stopped[row]))
    return results


class _RowsEnd:
    """A stopping criterion, per row: the row's max_tokens reached, a stop sequence seen, or cancelled.

    Records how many tokens each row had when it ended; stop sequences are matched on the decoded tail
    (not transformers' ``stop_strings``, which embeds the whole vocabulary per new set of stops).
    """

    def __init__(self, tokenizer: Any, jobs: list[GenerationJob], generations: list[Generation], start: int) -> None:
        self.tokenizer, self.jobs, self.generations, self.start = tokenizer, jobs, generations, start
        self.ended_at: list[int | None] = [None] * len(jobs)
        self.stopped = [False] * len(jobs)
        # a token decodes to at least one byte and a character is at most four: this many tokens hold any stop
        self.windows = [4 * max((len(s) for s in job.stop), default=0) + 4 for job in jobs]

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        length = input_ids.shape[1] - self.start
        for row, job in enumerate(self.jobs):
            if self.ended_at[row] is not None:
                continue
            if self.generations[row].cancelled.is_set() or length >= job.max_tokens:
                self.ended_at[row] = length
            elif job.stop:
                tail = input_ids[row, max(self.start, input_ids.shape[1] - self.windows[row]) :]
                # U+FFFD at the ends is a character cut between tokens (the next token may complete it)
                text = self.tokenizer.decode(tail, skip_special_tokens=True).strip("\ufffd")
                if any(stop in text for stop in job.stop):
                    self.ended_at[row], self.stopped[row] = length, True
        return torch.tensor([end is not None for end in self.ended_at], device=input_ids.device)
