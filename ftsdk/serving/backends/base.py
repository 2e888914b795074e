"""What a serving backend does: render prompts to token ids, load/unload adapters, generate text."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ftsdk.serving.config import ServeConfig

#: how often a request waiting for the model checks whether it was cancelled (seconds)
WAIT_POLL_S = 0.05


class UnknownAdapterError(LookupError):
    """The request names an adapter that is not (or no longer) loaded."""


@dataclass(frozen=True)
class GenerationJob:
    """One request's generation: prompt token ids, the adapter (None: the base model) and sampling."""

    prompt_ids: list[int]
    adapter: str | None
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    #: the text is wanted piece by piece as it is generated (the transformers backend then runs it unbatched)
    stream: bool = False


@dataclass
class Generation:
    """A running generation: iterate :attr:`pieces` for text; the counts are final once it is exhausted."""

    pieces: Iterator[str]
    finish_reason: str = "length"
    completion_tokens: int = 0
    #: set it to stop generating early (the client went away, the deadline passed); a waiting one never starts
    cancelled: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Stop generating and release what :attr:`pieces` holds (the model's lock), even if never iterated.

        Call it from the thread that iterates the pieces, or once no thread does.
        """
        self.cancelled.set()
        close = getattr(self.pieces, "close", None)
        if close is not None:
            close()


def wait_for_model(lock: threading.Lock, cancelled: threading.Event) -> bool:
    """Take ``lock``, unless ``cancelled`` is set first (then False, lock not taken): waiting is cancellable."""
    while not lock.acquire(timeout=WAIT_POLL_S):
        if cancelled.is_set():
            return False
    if cancelled.is_set():
        lock.release()
        return False
    return True


class Backend(ABC):
    """One base model loaded once, with named adapters switched per request."""

    name: ClassVar[str]
    #: import names of the packages the backend needs
    requires: ClassVar[tuple[str, ...]]
    install_hint: ClassVar[str]

    def __init__(self, config: ServeConfig) -> None:
        self.config = config

    @classmethod
    @abstractmethod
    def check_base(cls, base: str) -> None:
        """Raise ConfigError if ``base`` cannot be this backend's base model (cheap: no loading)."""

    @classmethod
    @abstractmethod
    def check_adapter(cls, path: str) -> Path:
        """The adapter's path if it looks loadable by this backend, else ConfigError (cheap: no loading)."""

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Most prompt + completion tokens per request."""

    @abstractmethod
    def chat_prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered with the base model's chat template, ready for the reply."""

    @abstractmethod
    def text_prompt_ids(self, text: str) -> list[int]:
        """Token ids of a plain-text prompt."""

    @abstractmethod
    def load_adapter(self, name: str, path: Path) -> None:
        """Load an adapter under ``name``; raise an FtsdkError if it cannot be loaded (the server keeps serving)."""

    @abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Forget adapter ``name`` and free its weights."""

    @abstractmethod
    def start(self, job: GenerationJob) -> Generation:
        """Begin generating; the text arrives through the returned Generation's pieces."""
