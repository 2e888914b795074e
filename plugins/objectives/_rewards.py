"""Rewards for the online objectives (grpo, ppo): Python reward functions and reward models.

A reward function is called as ``fn(prompts=[...], completions=[...], **columns)`` with plain text (a chat
prompt as its last user message) and the data set's other columns by name (lists, one value per
completion); it returns one float per completion. It should accept ``**kwargs``: trainers pass more.
In YAML it is named ``"package.module:function"`` or ``"path/to/file.py:function"``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_serializer, field_validator, model_validator

from ftsdk import PluginConfig
from ftsdk.errors import ConfigError

RewardFunction = Callable[..., Sequence[float | None]]
_DOTTED = re.compile(r"^[^:\s]+:[A-Za-z_][\w.]*$")


class RewardOptions(PluginConfig):
    """Where the rewards of generated completions come from (functions, a reward model, or both, summed)."""

    reward_functions: list[str | RewardFunction] = Field(
        default_factory=list,
        description='Python reward functions: "module:function" or "path/to/file.py:function" (YAML), or the '
        "callables themselves (Python). Each gets prompts and completions as text plus the data set's other "
        "columns, and returns one float per completion.",
    )
    reward_model: str | None = Field(
        None, description="Folder of a reward model scoring prompt + completion: the output of objective "
        "`reward` (a PEFT adapter or a full model) or any sequence-classification model with one output.",
    )
    reward_weights: list[float] | None = Field(
        None, description="One weight per reward, functions first and the reward model last; default 1 each.",
    )

    @field_validator("reward_functions")
    @classmethod
    def _well_formed(cls, functions: list[str | RewardFunction]) -> list[str | RewardFunction]:
        for function in functions:
            if isinstance(function, str) and not _DOTTED.match(function):
                raise ValueError(f"'{function}' is not 'module:function' or 'file.py:function'")
        return functions

    @model_validator(mode="after")
    def _some_reward(self) -> RewardOptions:
        count = len(self.reward_functions) + (self.reward_model is not None)
        if not count:
            raise ValueError("give reward_functions, a reward_model, or both")
        if self.reward_weights is not None and len(self.reward_weights) != count:
            raise ValueError(f"reward_weights has {len(self.reward_weights)} values for {count} reward(s)")
        return self

    @field_serializer("reward_functions")
    def _names(self, functions: list[str | RewardFunction]) -> list[str]:
        return [f if isinstance(f, str) else f"{f.__module__}:{f.__qualname__}" for f in functions]

    def check_rewards(self) -> None:
        """Import every reward function and look for the reward model, before any model loads."""
        for function in self.reward_functions:
            resolve_function(function)
        if self.reward_model is not None and not (Path(self.reward_model) / "config.json").is_file() and not (
            Path(self.reward_model) / "adapter_config.json"
        ).is_file():
            raise ConfigError(
                f"objective_config.reward_model: {self.reward_model} is not a model or adapter folder",
                hint="train one with objective `reward`, or point at a sequence-classification model folder",
            )

    def weights(self) -> list[float]:
        return self.reward_weights or [1.0] * (len(self.reward_functions) + (self.reward_model is not None))


def resolve_function(function: str | RewardFunction) -> RewardFunction:
    """The callable a reward-function reference names."""
    if not isinstance(function, str):
        return function
    where, _, attribute = function.rpartition(":")
    try:
        if where.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(where).stem, where)
            if spec is None or spec.loader is None or not Path(where).is_file():
                raise FileNotFoundError(f"no file {where}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        found = functools.reduce(getattr, attribute.split("."), module)
    except (ImportError, AttributeError, OSError) as exc:
        raise ConfigError(
            f"objective_config.reward_functions: cannot load '{function}': {exc}",
            hint="name an importable module (or a .py file path, relative to the working directory) and a "
            "function in it",
        ) from None
    if not callable(found):
        raise ConfigError(f"objective_config.reward_functions: '{function}' is not callable")
    return found


def text_of(item: str | list[dict[str, str]]) -> str:
    """A prompt or completion as text: a message list gives its last user message, or its assistant text."""
    if isinstance(item, str):
        return item
    users = [m["content"] for m in item if m["role"] == "user"]
    return users[-1] if users else "".join(m["content"] for m in item)


def text_reward(function: RewardFunction) -> RewardFunction:
    """``function`` called with prompts and completions as text, whatever shape the trainer holds them in."""

    @functools.wraps(function)
    def reward(prompts: list[Any], completions: list[Any], **columns: Any) -> Sequence[float | None]:
        return function(prompts=[text_of(p) for p in prompts], completions=[text_of(c) for c in completions],
                        **columns)

    return reward


class RewardModel:
    """A sequence-classification model scoring each prompt + completion (rendered with its chat template)."""

    __name__ = "reward_model"

    def __init__(self, folder: str, device: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        adapter = Path(folder) / "adapter_config.json"
        if adapter.is_file():
            from peft import PeftConfig, PeftModel

            base = PeftConfig.from_pretrained(folder).base_model_name_or_path
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
            model = PeftModel.from_pretrained(model, folder)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
        if model.config.num_labels != 1:
            raise ConfigError(f"reward model {folder} has {model.config.num_labels} outputs, not one score")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = model.to(device).eval().requires_grad_(False)

    def render(self, prompt: str | list[dict[str, str]], completion: str | list[dict[str, str]]) -> str:
        reply = completion if isinstance(completion, str) else "".join(m["content"] for m in completion)
        if not self.tokenizer.chat_template:
            return text_of(prompt) + reply
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return self.tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": reply}], tokenize=False)

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        import torch

        texts = [self.render(p, c) for p, c in zip(prompts, completions, strict=True)]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            scores = self.model(**batch.to(self.model.device)).logits[:, 0]
        return scores.float().tolist()


def reward_callables(options: RewardOptions, device: str) -> list[RewardFunction]:
    """The configured rewards as callables with one signature, functions first and the reward model last."""
    rewards = [text_reward(resolve_function(f)) for f in options.reward_functions]
    if options.reward_model is not None:
        rewards.append(RewardModel(options.reward_model, device))
    return rewards
