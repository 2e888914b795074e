"""Row formats and their validation: chat messages, alpaca, prompt/completion.

Every format converts to one shape, a conversation: a list of ``{"role", "content"}`` messages.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Message = dict[str, str]
Conversation = list[Message]


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    def to_conversation(self) -> Conversation:
        raise NotImplementedError


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRow(_Row):
    """``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``"""

    messages: list[ChatMessage] = Field(min_length=2)

    @field_validator("messages")
    @classmethod
    def _well_formed(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        roles = [m.role for m in messages]
        if "assistant" not in roles:
            raise ValueError("needs at least one assistant message to learn from")
        if "system" in roles[1:]:
            raise ValueError("a system message may only come first")
        if not any(m.content.strip() for m in messages if m.role == "assistant"):
            raise ValueError("every assistant message is empty")
        return messages

    def to_conversation(self) -> Conversation:
        return [{"role": m.role, "content": m.content} for m in self.messages]


class AlpacaRow(_Row):
    """``{"instruction": ..., "input": "" (optional), "output": ...}``"""

    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)

    def to_conversation(self) -> Conversation:
        prompt = f"{self.instruction}\n\n{self.input}" if self.input.strip() else self.instruction
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": self.output}]


class PromptCompletionRow(_Row):
    """``{"prompt": ..., "completion": ...}``"""

    prompt: str = Field(min_length=1)
    completion: str = Field(min_length=1)

    def to_conversation(self) -> Conversation:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.completion}]


#: format name -> (row model, the keys that identify it)
FORMATS: dict[str, tuple[type[_Row], frozenset[str]]] = {
    "chat": (ChatRow, frozenset({"messages"})),
    "alpaca": (AlpacaRow, frozenset({"instruction", "output"})),
    "prompt_completion": (PromptCompletionRow, frozenset({"prompt", "completion"})),
}

#: which formats each kind of objective data accepts
FORMATS_OF_TASK: dict[str, tuple[str, ...]] = {
    "sft": ("chat", "alpaca", "prompt_completion"),
}


def detect_format(row: dict, task: str) -> str | None:
    """The first format of ``task`` whose identifying keys are all in ``row``."""
    for name in FORMATS_OF_TASK[task]:
        if FORMATS[name][1] <= row.keys():
            return name
    return None


def describe_formats(task: str) -> str:
    """Human-readable list of the shapes a task accepts."""
    return "; ".join(f"{name}: {FORMATS[name][0].__doc__.strip()}" for name in FORMATS_OF_TASK[task])
