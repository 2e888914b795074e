"""How a candidate sees each held-out prompt: its own system prompt and worked examples put in front."""

from __future__ import annotations

from ftsdk.data.formats import Conversation, Message
from ftsdk.evaluation.spec import CandidateSpec, FewShot


def few_shot_turns(few_shot: FewShot) -> list[Message]:
    """``count`` examples of the file as user/assistant turns, examples with a reply not seen yet first."""
    from ftsdk.data.loading import load_dataset

    examples = load_dataset(few_shot.file).examples
    seen: set[str] = set()
    fresh, rest = [], []
    for example in examples:
        reply = example[-1]["content"]
        (rest if reply in seen else fresh).append(example)
        seen.add(reply)
    chosen = (fresh + rest)[: few_shot.count]
    return [m for example in chosen for m in example if m["role"] != "system"]


def split_reference(conversation: Conversation) -> tuple[Conversation, str]:
    """(the turns before the last assistant reply, that reply)."""
    last = max(i for i, m in enumerate(conversation) if m["role"] == "assistant")
    return conversation[:last], conversation[last]["content"]


def candidate_prompt(prompt: Conversation, spec: CandidateSpec, shots: list[Message]) -> Conversation:
    """``prompt`` with the candidate's system prompt (replacing the prompt's own) and its worked examples."""
    system = [m for m in prompt[:1] if m["role"] == "system"]
    turns = prompt[len(system) :]
    if spec.system_prompt is not None:
        system = [{"role": "system", "content": spec.system_prompt}]
    return [*system, *shots, *turns]
