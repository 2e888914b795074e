"""Dynamic batching in the transformers backend: batched greedy rows equal unbatched generation, token for token.

The unbatched reference is the same backend's streamed path (one request per ``generate``, no padding).
The batcher is given a long wait and a batch size equal to the number of requests, so they all run as
one batch; ``generate_rows`` is watched to prove it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ftsdk.serving.backends.base import Generation, GenerationJob
from ftsdk.serving.batching import Batcher, Pending, batch_key
from ftsdk.serving.config import ServeConfig

PROMPTS = ["the sky", "what is the color of the grass in the morning", "a", "one two three four five six seven"]


def _adapter(base: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules="all-linear",
                                     init_lora_weights=False)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ftsdk.serving.backends.hf import TransformersBackend

    folder = tmp_path_factory.mktemp("batching-adapters")
    config = ServeConfig(base=str(tiny_model_dir), device="cpu", dtype="float32", threads=1,
                         max_batch_size=len(PROMPTS), batch_wait_ms=1000)
    served = TransformersBackend(config)
    for name, seed in (("alpha", 1), ("beta", 2)):
        served.load_adapter(name, _adapter(tiny_model_dir, folder / name, seed))
    return served


def _finish(generation: Generation) -> tuple[str, int, str]:
    text = "".join(generation.pieces)
    return text, generation.completion_tokens, generation.finish_reason


def _batched(backend: Any, jobs: list[GenerationJob], monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, str]]:
    """Run ``jobs`` through the batcher, all at once; assert they ran as one batch."""
    from ftsdk.serving.backends import hf

    sizes: list[int] = []
    real = hf.generate_rows

    def watched(model: Any, tokenizer: Any, batch: list[GenerationJob], *args: Any) -> Any:
        sizes.append(len(batch))
        return real(model, tokenizer, batch, *args)

    monkeypatch.setattr(hf, "generate_rows", watched)
    generations = [backend.start(job) for job in jobs]
    results = [_finish(g) for g in generations]
    assert sizes == [len(jobs)]
    return results


def _alone(backend: Any, job: GenerationJob) -> tuple[str, int, str]:
    return _finish(backend.start(GenerationJob(**{**job.__dict__, "stream": True})))


def _ids(backend: Any, text: str) -> list[int]:
    return backend.text_prompt_ids(text)


@pytest.mark.parametrize("adapter", [None, "alpha"])
def test_batched_greedy_equals_unbatched_for_prompts_of_different_lengths(backend: Any, adapter: str | None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [GenerationJob(_ids(backend, p), adapter, 12, temperature=0.0) for p in PROMPTS]
    assert len({len(job.prompt_ids) for job in jobs}) == len(jobs)  # every row padded differently
    assert _batched(backend, jobs, monkeypatch) == [_alone(backend, job) for job in jobs]


def test_one_batch_serves_several_adapters_and_the_base(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    adapters = [None, "alpha", "beta", "alpha"]
    jobs = [GenerationJob(_ids(backend, p), a, 12, temperature=0.0) for p, a in zip(PROMPTS, adapters, strict=True)]
    batched = _batched(backend, jobs, monkeypatch)
    assert batched == [_alone(backend, job) for job in jobs]
    same_prompt = [GenerationJob(_ids(backend, PROMPTS[1]), a, 12, temperature=0.0) for a in (None, "alpha", "beta")]
    assert len({text for text, _, _ in (_alone(backend, job) for job in same_prompt)}) == 3  # adapters matter


def test_each_row_keeps_its_own_max_tokens_and_stops(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    long_text, _, _ = _alone(backend, GenerationJob(_ids(backend, PROMPTS[0]), "alpha", 12, temperature=0.0))
    stop = long_text[len(long_text) // 2 : len(long_text) // 2 + 2]
    assert stop.strip()
    jobs = [
        GenerationJob(_ids(backend, PROMPTS[0]), "alpha", 12, temperature=0.0, stop=[stop]),
        GenerationJob(_ids(backend, PROMPTS[1]), None, 3, temperature=0.0),
        GenerationJob(_ids(backend, PROMPTS[2]), "beta", 1, temperature=0.0),
        GenerationJob(_ids(backend, PROMPTS[3]), "beta", 12, temperature=0.0),
    ]
    batched = _batched(backend, jobs, monkeypatch)
    assert batched == [_alone(backend, job) for job in jobs]
    assert batched[0][2] == "stop" and stop not in batched[0][0] and batched[0][1] < 12
    assert batched[1][1:] == (3, "length") and batched[2][1:] == (1, "length")


def test_an_unloaded_adapter_fails_only_its_own_request(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftsdk.serving.backends.base import UnknownAdapterError

    jobs = [GenerationJob(_ids(backend, p), a, 4, temperature=0.0) for p, a in zip(PROMPTS, [None, "gone", "alpha",
                                                                                             None], strict=True)]
    monkeypatch.setattr(backend._batcher, "max_batch", 3)
    generations = [backend.start(job) for job in jobs]
    assert _finish(generations[0]) == _alone(backend, jobs[0])
    with pytest.raises(UnknownAdapterError):
        _finish(generations[1])
    assert [_finish(g) for g in generations[2:]] == [_alone(backend, job) for job in jobs[2:]]


def test_batches_group_what_one_generate_call_can_serve() -> None:
    greedy = [GenerationJob([1], None, 4, temperature=0.0, seed=s) for s in (None, 3)]
    sampled = [GenerationJob([1], None, 4, temperature=0.7, top_p=0.9) for _ in range(2)]
    seeded = [GenerationJob([1], None, 4, temperature=0.7, seed=5) for _ in range(2)]
    assert batch_key(greedy[0]) == batch_key(greedy[1])
    assert batch_key(sampled[0]) == batch_key(sampled[1]) != batch_key(greedy[0])
    assert batch_key(seeded[0]) != batch_key(seeded[1])  # a seed gives the text it would give alone

    runs: list[list[int]] = []
    release = threading.Event()

    def run(group: list[Pending]) -> None:
        release.wait(5)
        runs.append([p.job.max_tokens for p in group])
        for pending in group:
            pending.text = str(pending.job.max_tokens)

    batcher = Batcher(run, max_batch=8, max_wait_s=0.2)
    jobs = [GenerationJob([1], None, n, temperature=0.0) for n in (1, 2)] + [
        GenerationJob([1], None, 3, temperature=0.5, seed=1)]
    generations = [batcher.submit(job) for job in jobs]
    release.set()
    assert ["".join(g.pieces) for g in generations] == ["1", "2", "3"]
    assert sorted(runs) == [[1, 2], [3]]


def test_a_cancelled_request_stops_waiting_at_once() -> None:
    started, release = threading.Event(), threading.Event()

    def run(group: list[Pending]) -> None:
        started.set()
        release.wait(5)

    batcher = Batcher(run, max_batch=1, max_wait_s=0.0)
    first = batcher.submit(GenerationJob([1], None, 4, temperature=0.0))
    assert started.wait(5)
    queued = batcher.submit(GenerationJob([1], None, 4, temperature=0.0))
    queued.cancelled.set()
    assert "".join(queued.pieces) == ""  # returns while the first batch still runs
    release.set()
    assert "".join(first.pieces) == ""


@pytest.mark.parametrize(("option", "value"), [("max_batch_size", 0), ("max_batch_size", 257),
                                               ("batch_wait_ms", -1), ("batch_wait_ms", 1001)])
def test_batching_options_are_validated(option: str, value: float) -> None:
    with pytest.raises(ValidationError, match=option):
        ServeConfig(base="smollm2-135m", **{option: value})


def test_sampled_rows_share_a_batch_and_keep_their_own_lengths(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [GenerationJob(_ids(backend, p), a, n, temperature=0.8, top_p=0.95)
            for p, a, n in zip(PROMPTS, [None, "alpha", "beta", None], [2, 5, 9, 12], strict=True)]
    results = _batched(backend, jobs, monkeypatch)
    for (text, tokens, reason), job in zip(results, jobs, strict=True):
        assert 0 < tokens <= job.max_tokens
        assert reason == "stop" if tokens < job.max_tokens else reason in ("stop", "length")  # EOS as the last
