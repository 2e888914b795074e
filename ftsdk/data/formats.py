"""Row formats and their validation, per data task.

SFT formats (chat messages, alpaca, prompt/completion) convert to one shape, a conversation: a list of
``{"role", "content"}`` messages. Chat rows with tool calls become ``{"messages": [...], "tools": [...]}`` and
raw text rows ``{"text": ...}``. The other tasks' formats (preference pairs, unpaired KTO rows, prompts)
convert to dicts in TRL's shapes: plain strings stay strings, chat forms stay message lists.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Message = dict[str, Any]
Conversation = list[Message]
#: what a validated row becomes: a conversation (SFT) or a dict (raw text, tool-calling chats, other tasks)
Example = Conversation | dict[str, Any]

NOTHING_TO_LEARN = "is empty or whitespace-only: nothing to learn"


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


class ToolFunctionCall(BaseModel):
    """The function an assistant calls: its name and its arguments (an object, or JSON text of one)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError("arguments are a string but not JSON: give an object, or JSON text of one") from None
        if not isinstance(parsed, dict):
            raise ValueError("arguments must be a JSON object")
        return parsed


class ToolCall(BaseModel):
    """``{"type": "function", "id": "optional", "function": {"name": ..., "arguments": {...}}}``"""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = "function"
    id: str | None = None
    function: ToolFunctionCall


class ToolFunctionSpec(BaseModel):
    """A callable function as chat templates expect it (``parameters`` is a JSON schema)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolSpec(BaseModel):
    """``{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}``"""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = "function"
    function: ToolFunctionSpec


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, min_length=1)
    tool_call_id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _per_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages make tool_calls")
        if (self.tool_call_id is not None or self.name is not None) and self.role != "tool":
            raise ValueError("tool_call_id and name belong to tool messages")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is missing")
        if self.role == "assistant" and not self.tool_calls and not (self.content or "").strip():
            raise ValueError(f"the assistant reply {NOTHING_TO_LEARN}")
        return self

    def dump(self) -> Message:
        message: Message = {"role": self.role, "content": self.content or ""}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump(exclude_none=True) for call in self.tool_calls]
        message.update({key: getattr(self, key) for key in ("tool_call_id", "name") if getattr(self, key)})
        return message


def _check_tool_turns(messages: list[ChatMessage], tools: list[ToolSpec] | None) -> None:
    """Tool results answer the calls just before them; called functions are among ``tools``."""
    names = {tool.function.name for tool in tools} if tools else None
    open_ids: set[str] | None = None  # ids of the last assistant turn's calls while its results come
    for i, message in enumerate(messages):
        if message.role == "assistant" and message.tool_calls:
            for j, call in enumerate(message.tool_calls):
                if names is not None and call.function.name not in names:
                    raise ValueError(f"messages.{i}.tool_calls.{j}: calls '{call.function.name}', which is not "
                                     f"among tools ({', '.join(sorted(names))})")
            open_ids = {call.id for call in message.tool_calls if call.id}
        elif message.role == "tool":
            if open_ids is None:
                raise ValueError(f"messages.{i}: a tool result must follow an assistant message with tool_calls")
            if message.tool_call_id is not None and open_ids and message.tool_call_id not in open_ids:
                raise ValueError(f"messages.{i}: tool_call_id '{message.tool_call_id}' answers no call of the "
                                 f"assistant turn before it ({', '.join(sorted(open_ids))})")
        else:
            open_ids = None


class ChatRow(_Row):
    """``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}], "tools": [...] (optional)}``"""

    messages: list[ChatMessage] = Field(min_length=2)
    tools: list[ToolSpec] | None = None

    @field_validator("messages")
    @classmethod
    def _well_formed(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        roles = [m.role for m in messages]
        if "assistant" not in roles:
            raise ValueError("needs at least one assistant message to learn from")
        if "system" in roles[1:]:
            raise ValueError("a system message may only come first")
        return messages

    @model_validator(mode="after")
    def _tool_turns(self) -> ChatRow:
        _check_tool_turns(self.messages, self.tools)
        return self

    def to_conversation(self) -> Conversation:
        return [m.dump() for m in self.messages]

    def to_example(self) -> Example:
        uses_tools = self.tools or any(m.role == "tool" or m.tool_calls for m in self.messages)
        if uses_tools:
            tools = [tool.model_dump() for tool in self.tools or []]
            return {"messages": self.to_conversation(), "tools": tools}
        return self.to_conversation()


def _has_text(value: str) -> str:
    if not value.strip():
        raise ValueError(NOTHING_TO_LEARN)
    return value


class AlpacaRow(_Row):
    """``{"instruction": ..., "input": "" (optional), "output": ...}``"""

    instruction: str
    input: str = ""
    output: str

    _output = field_validator("output")(_has_text)

    def to_conversation(self) -> Conversation:
        prompt = f"{self.instruction}\n\n{self.input}" if self.input.strip() else self.instruction
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": self.output}]


class PromptCompletionRow(_Row):
    """``{"prompt": ..., "completion": ...}``"""

    prompt: str
    completion: str

    _completion = field_validator("completion")(_has_text)

    def to_conversation(self) -> Conversation:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.completion}]


class TextRow(_Row):
    """``{"text": "..."}`` (or a .txt file): raw text for continued pre-training, every token learned"""

    text: str

    _text = field_validator("text")(_has_text)

    def to_example(self) -> dict[str, Any]:
        return {"text": self.text}


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
    return messages


def _dump(messages: list[ChatMessage]) -> Conversation:
    return [m.dump() for m in messages]


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
    "text": (TextRow, frozenset({"text"})),
    "chat_preference": (ChatPreferenceRow, frozenset({"prompt", "chosen", "rejected"})),
    "preference": (PreferenceRow, frozenset({"prompt", "chosen", "rejected"})),
    "chat_unpaired": (ChatUnpairedRow, frozenset({"prompt", "completion", "label"})),
    "unpaired": (UnpairedRow, frozenset({"prompt", "completion", "label"})),
    "chat_prompt": (ChatPromptRow, frozenset({"prompt"})),
    "prompt": (PromptRow, frozenset({"prompt"})),
}

#: which formats each kind of objective data accepts
FORMATS_OF_TASK: dict[str, tuple[str, ...]] = {
    "sft": ("chat", "alpaca", "prompt_completion", "text"),
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
