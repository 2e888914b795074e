"""Rewards for the online objectives (grpo, ppo): Python reward functions and reward models.

A reward function is called as ``fn(prompts=[...], completions=[...], **columns)`` with plain text (a chat
prompt as its last user message) and the data set's other columns by name (lists, one value per
completion); it returns one float per completion. It should accept ``**kwargs``: trainers pass more.
In YAML it is named ``"package.module:function"`` or ``"path/to/file.py:function"``: training imports that
module, which runs its code (checks, ``--dry-run`` included, only read it).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_serializer, field_validator, model_validator

from ftsdk import PluginConfig
from ftsdk.plugin.errors import ConfigError

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
        """Check every reward function (without running its code: see :func:`check_function`) and look for
        the reward model, before any model loads."""
        for function in self.reward_functions:
            check_function(function)
        if self.reward_model is not None and not (Path(self.reward_model) / "config.json").is_file() and not (
            Path(self.reward_model) / "adapter_config.json"
        ).is_file():
            raise ConfigError(
                f"objective_config.reward_model: {self.reward_model} is not a model or adapter folder",
                hint="train one with objective `reward`, or point at a sequence-classification model folder",
            )

    def weights(self) -> list[float]:
        return self.reward_weights or [1.0] * (len(self.reward_functions) + (self.reward_model is not None))


def check_function(function: str | RewardFunction) -> None:
    """Check a reward-function reference without importing (running) anything.

    The module is found the way ``import`` would find it (or the ``.py`` file must exist), its source must
    parse, and it must define the name at top level. Checks (``--dry-run`` included) thus never run the
    code; it is imported only when training starts.
    """
    if not isinstance(function, str):
        if not callable(function):
            raise ConfigError(f"objective_config.reward_functions: {function!r} is not callable")
        return
    where, _, attribute = function.rpartition(":")
    source = _source_file(function, where)
    if source is None:  # a compiled or built-in module: there is no source to read
        return
    try:
        tree = ast.parse(source.read_bytes(), filename=str(source))
    except (SyntaxError, ValueError, OSError) as exc:
        raise ConfigError(f"objective_config.reward_functions: cannot load '{function}': {source} does not parse: "
                          f"{exc}", hint="fix the file's syntax") from None
    name = attribute.split(".")[0]
    defined = _top_level_names(tree.body)
    if name not in defined and "*" not in defined and "__getattr__" not in defined:
        raise ConfigError(f"objective_config.reward_functions: cannot load '{function}': {source} has no attribute "
                          f"'{name}'", hint="name a function the file defines at top level")


def _source_file(function: str, where: str) -> Path | None:
    """The source file of the module ``where`` names (a dotted module or a .py path), found without importing."""
    if where.endswith(".py"):
        if not Path(where).is_file():
            raise ConfigError(f"objective_config.reward_functions: cannot load '{function}': no file {where}",
                              hint="give the .py file's path, relative to the working directory")
        return Path(where)
    spec = None
    path: list[str] | None = None
    parts = where.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        loaded = sys.modules.get(name)
        spec = getattr(loaded, "__spec__", None) if loaded is not None else None
        if spec is None:
            spec = next((found for finder in sys.meta_path if hasattr(finder, "find_spec")
                         and (found := finder.find_spec(name, path)) is not None), None)
        if spec is None:
            raise ConfigError(f"objective_config.reward_functions: cannot load '{function}': No module named '{name}'",
                              hint="name an importable module (or a .py file path, relative to the working "
                              "directory) and a function in it")
        path = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _top_level_names(body: list[ast.stmt]) -> set[str]:
    """Names a module body binds at top level (definitions, assignments, imports; inside if/try/with too)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        for field in ("body", "orelse", "finalbody", "handlers"):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names |= _top_level_names(getattr(node, field, []))
    return names


def resolve_function(function: str | RewardFunction) -> RewardFunction:
    """The callable a reward-function reference names (importing its module: this runs its code)."""
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
            from peft import PeftConfig

            from ftsdk.models.peft_wrapping import load_adapter

            base = PeftConfig.from_pretrained(folder).base_model_name_or_path
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
            model = load_adapter(model, folder)
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
