"""Evaluation speed: today's two passes per prompt vs. ftsdk's one shared pass, on the quickstart's label task.

LoRA-tunes SmolLM2-135M for a few steps with the quickstart preset (float32), then evaluates the three quickstart
candidates (base, prompted base, tuned) on the test split's rows, alternating the two variants over the rounds::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/evaluate.py --rounds 3 --threads 1

``two passes`` is the path evaluation took before: ``generate`` over batches of 16 in file order, then the label
scores in a second prompt pass, the adapter applied unmerged. ``one pass`` is ``TransformersBackend.answer``: one
prompt pass shared by greedy generation and label scoring, the shared prefix (system prompt) run once, batches
grouped by length, the adapter unmerged. Both must give the same replies and labels;
the largest label-score difference is printed. The machine's load average is printed: time on a busy machine is
noisy, which the alternation and the rounds are there to show.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("two passes", "one pass")


def candidates(limit: int) -> tuple[dict[str, list[Any]], list[str], list[str]]:
    """The quickstart candidates' prompts ({name: conversations}), the references and the label set."""
    from ftsdk.data.loading import load_dataset
    from ftsdk.evaluation.prompts import candidate_prompt, split_reference
    from ftsdk.evaluation.spec import CandidateSpec
    from ftsdk.quickstart.run import SYSTEM_PROMPT, data_file

    examples = load_dataset(data_file("test")).examples
    prompts, references = zip(*(split_reference(c) for c in examples))
    labels = sorted(set(references))
    spec = CandidateSpec(name="prompted", source="smollm2-135m", system_prompt=SYSTEM_PROMPT)
    chosen = [list(p) for p in prompts[:limit]]
    return ({"base": chosen, "prompted": [candidate_prompt(p, spec, []) for p in chosen], "tuned": chosen},
            list(references[:limit]), labels)


def two_passes(model: Any, tokenizer: Any, conversations: list[Any], labels: list[str], adapter_off: bool,
               max_new_tokens: int, batch_size: int) -> tuple[list[str], list[list[float]]]:
    """Evaluation as it was: generation in file-order batches, then a second prompt pass for the label scores."""
    import contextlib

    from ftsdk.evaluation.labels import label_log_likelihoods
    from ftsdk.models.generation import generate_replies

    with model.disable_adapter() if adapter_off else contextlib.nullcontext():
        replies: list[str] = []
        for start in range(0, len(conversations), batch_size):
            batch = conversations[start : start + batch_size]
            replies += generate_replies(model, tokenizer, batch, max_new_tokens=max_new_tokens, batch_size=len(batch))
        return replies, label_log_likelihoods(model, tokenizer, conversations, labels)


def one_pass(model: Any, tokenizer: Any, conversations: list[Any], labels: list[str], adapter_off: bool,
             max_new_tokens: int, batch_size: int) -> tuple[list[str], list[list[float]]]:
    from ftsdk.evaluation.backends import TransformersBackend
    from ftsdk.evaluation.spec import GenerationOptions

    backend = TransformersBackend(model, tokenizer, adapter_off=adapter_off)
    options = GenerationOptions(max_new_tokens=max_new_tokens, batch_size=batch_size)
    generations, scores = backend.answer(conversations, options, labels)
    assert scores is not None
    return [g.text for g in generations], scores


def choose(scores: list[list[float]], labels: list[str]) -> list[str]:
    """The likeliest label of each row."""
    return [labels[max(range(len(row)), key=row.__getitem__)] for row in scores]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a busy machine)")
    parser.add_argument("--steps", type=int, default=8, help="LoRA training steps for the tuned candidate")
    parser.add_argument("--limit", type=int, default=120, help="test rows evaluated")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="the quickstart's 8")
    parser.add_argument("--batch-size", type=int, default=16, help="the quickstart's 16")
    args = parser.parse_args()

    import torch

    from ftsdk import Tuner
    from ftsdk.evaluation.metrics import label_metrics
    from ftsdk.quickstart.run import PRESET, data_file

    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores, torch threads {args.threads}")
    training = PRESET["training"] | {"max_steps": args.steps, "threads": args.threads}
    tuner = Tuner("smollm2-135m", adapter="lora", objective="sft", adapter_config=PRESET["adapter_config"],
                  training=training)
    with tempfile.TemporaryDirectory() as tmp:
        tuner.fit(data_file("train"), output_dir=Path(tmp) / "out")
    model, tokenizer = tuner.model, tuner.tokenizer
    prompts, references, labels = candidates(args.limit)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    outputs: dict[str, dict[str, tuple[list[str], list[list[float]]]]] = {}
    for round_ in range(args.rounds):
        for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
            run = two_passes if variant == "two passes" else one_pass
            began = time.perf_counter()
            outputs[variant] = {name: run(model, tokenizer, convs, labels, name != "tuned", args.max_new_tokens,
                                          args.batch_size) for name, convs in prompts.items()}
            seconds[variant].append(time.perf_counter() - began)
            print(f"round {round_ + 1} {variant}: {seconds[variant][-1]:.1f}s (load {os.getloadavg()[0]:.2f})")
    for name in prompts:
        (old_replies, old_scores), (new_replies, new_scores) = (outputs[v][name] for v in VARIANTS)
        gap = max(abs(a - b) for old, new in zip(old_scores, new_scores) for a, b in zip(old, new))
        old_choices, new_choices = (choose(s, labels) for s in (old_scores, new_scores))
        accuracy = [label_metrics(r, references, labels).accuracy for r in (old_replies, new_replies)]
        constrained = [label_metrics(c, references, labels).accuracy for c in (old_choices, new_choices)]
        print(f"{name}: replies equal {old_replies == new_replies}, labels chosen equal {old_choices == new_choices}, "
              f"max score gap {gap:.2e}, accuracy {accuracy[0]:.3f} / {accuracy[1]:.3f}, "
              f"constrained accuracy {constrained[0]:.3f} / {constrained[1]:.3f}")
    old, new = (statistics.median(seconds[v]) for v in VARIANTS)
    print(f"median {old:.1f}s two passes vs {new:.1f}s one pass: {old / new:.2f}x")


if __name__ == "__main__":
    main()
