"""Row formats and their validation, per data task.

SFT formats (chat messages, alpaca, prompt/completion) convert to one shape, a conversation: a list of
``{"role", "content"}`` messages. The other tasks' formats (preference pairs, unpaired KTO rows, prompts)
convert to dicts in TRL's shapes: plain strings stay strings, chat forms stay message lists.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Message = dict[str, str]
Conversation = list[Message]
#: what a validated row becomes: a conversation (SFT) or a dict (the other tasks)
Example = Conversation | dict[str, Any]


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    def to_conversation(self) -> Conversation:
        raise NotImplementedError

    def to_example(self) -> Example:
        """What an objective trains on: the conversation for SFT rows; other tasks' rows return dicts."""
        return self.to_conversation()

    @classmethod
    def matches(cls, row: dict) -> bool:
        """Whether ``row`` (which has this format's keys) looks like this format rather than a sibling."""
        return True


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


def _prompt_turns(messages: list[ChatMessage]) -> list[ChatMessage]:
    roles = [m.role for m in messages]
    if roles[-1] != "user":
        raise ValueError("must end with a user message (the turn the model answers)")
    if "system" in roles[1:]:
        raise ValueError("a system message may only come first")
    return messages


def _assistant_turns(messages: list[ChatMessage]) -> list[ChatMessage]:
    if any(m.role != "assistant" for m in messages):
        raise ValueError("may hold only assistant messages")
    if not any(m.content.strip() for m in messages):
        raise ValueError("every assistant message is empty")
    return messages


def _dump(messages: list[ChatMessage]) -> Conversation:
    return [{"role": m.role, "content": m.content} for m in messages]


class _ChatForm(_Row):
    """A row whose ``prompt`` is a message list (the plain sibling format has a string)."""

    @classmethod
    def matches(cls, row: dict) -> bool:
        return isinstance(row.get("prompt"), list)


class PreferenceRow(_Row):
    """``{"prompt": "...", "chosen": "better answer", "rejected": "worse answer"}``"""

    prompt: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)

    @model_validator(mode="after")
    def _different(self) -> PreferenceRow:
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are identical, so the pair teaches nothing")
        return self

    def to_example(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


class ChatPreferenceRow(_ChatForm):
    """``{"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [...]}``"""

    prompt: list[ChatMessage] = Field(min_length=1)
    chosen: list[ChatMessage] = Field(min_length=1)
    rejected: list[ChatMessage] = Field(min_length=1)

    _prompt = field_validator("prompt")(_prompt_turns)
    _replies = field_validator("chosen", "rejected")(_assistant_turns)

    @model_validator(mode="after")
    def _different(self) -> ChatPreferenceRow:
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are identical, so the pair teaches nothing")
        return self

    def to_example(self) -> dict[str, Any]:
        return {"prompt": _dump(self.prompt), "chosen": _dump(self.chosen), "rejected": _dump(self.rejected)}


class UnpairedRow(_Row):
    """``{"prompt": "...", "completion": "...", "label": true}`` (true: a desirable completion)"""

    prompt: str = Field(min_length=1)
    completion: str = Field(min_length=1)
    label: bool

    def to_example(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "label": self.label}


class ChatUnpairedRow(_ChatForm):
    """``{"prompt": [{"role": "user", ...}], "completion": [{"role": "assistant", ...}], "label": false}``"""

    prompt: list[ChatMessage] = Field(min_length=1)
    completion: list[ChatMessage] = Field(min_length=1)
    label: bool

    _prompt = field_validator("prompt")(_prompt_turns)
    _reply = field_validator("completion")(_assistant_turns)

    def to_example(self) -> dict[str, Any]:
        return {"prompt": _dump(self.prompt), "completion": _dump(self.completion), "label": self.label}


class PromptRow(_Row):
    """``{"prompt": "..."}`` plus any other columns, which reward functions receive by name"""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)

    def to_example(self) -> dict[str, Any]:
        return {**(self.model_extra or {}), "prompt": self.prompt}


class ChatPromptRow(_ChatForm):
    """``{"prompt": [{"role": "user", "content": "..."}]}`` plus any other columns for reward functions"""

    model_config = ConfigDict(extra="allow")

    prompt: list[ChatMessage] = Field(min_length=1)

    _prompt = field_validator("prompt")(_prompt_turns)

    def to_example(self) -> dict[str, Any]:
        return {**(self.model_extra or {}), "prompt": _dump(self.prompt)}


#: format name -> (row model, the keys that identify it)
FORMATS: dict[str, tuple[type[_Row], frozenset[str]]] = {
    "chat": (ChatRow, frozenset({"messages"})),
    "alpaca": (AlpacaRow, frozenset({"instruction", "output"})),
    "prompt_completion": (PromptCompletionRow, frozenset({"prompt", "completion"})),
    "chat_preference": (ChatPreferenceRow, frozenset({"prompt", "chosen", "rejected"})),
    "preference": (PreferenceRow, frozenset({"prompt", "chosen", "rejected"})),
    "chat_unpaired": (ChatUnpairedRow, frozenset({"prompt", "completion", "label"})),
    "unpaired": (UnpairedRow, frozenset({"prompt", "completion", "label"})),
    "chat_prompt": (ChatPromptRow, frozenset({"prompt"})),
    "prompt": (PromptRow, frozenset({"prompt"})),
}

#: which formats each kind of objective data accepts
FORMATS_OF_TASK: dict[str, tuple[str, ...]] = {
    "sft": ("chat", "alpaca", "prompt_completion"),
    "preference": ("chat_preference", "preference"),  # DPO, ORPO, reward models
    "unpaired_preference": ("chat_unpaired", "unpaired"),  # KTO
    "prompt": ("chat_prompt", "prompt"),  # GRPO, PPO: the model writes the completions
}


def detect_format(row: dict, task: str) -> str | None:
    """The first format of ``task`` whose identifying keys are all in ``row``."""
    for name in FORMATS_OF_TASK[task]:
        row_model, keys = FORMATS[name]
        if keys <= row.keys() and row_model.matches(row):
            return name
    return None


def describe_formats(task: str) -> str:
    """Human-readable list of the shapes a task accepts."""
    return "; ".join(f"{name}: {FORMATS[name][0].__doc__.strip()}" for name in FORMATS_OF_TASK[task])
