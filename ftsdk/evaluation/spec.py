"""What to evaluate: candidate models and the evaluation settings (``ftsdk eval``'s YAML), checked before loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.kinds import PluginConfig
from ftsdk.plugin.settings import validate_config
from ftsdk.safe_yaml import read_yaml_mapping

CandidateKind = Literal["auto", "model", "adapter", "merged", "gguf"]


class FewShot(PluginConfig):
    """Worked examples put before each prompt, taken from a data file (e.g. the train split)."""

    file: Path = Field(description="Data file the examples come from (any SFT format).")
    count: int = Field(4, ge=1, le=64, description="How many examples; distinct replies are taken first.")


class GenerationOptions(PluginConfig):
    """How replies are generated."""

    max_new_tokens: int = Field(64, ge=1, le=4096, description="Tokens generated per reply at most.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 is greedy decoding (reproducible).")
    batch_size: int = Field(8, ge=1, le=512, description="Prompts generated together (transformers backend).")


class CandidateSpec(PluginConfig):
    """One model to evaluate: a base model, a base with a system prompt or examples, an adapter, a merged or GGUF model."""

    name: str = Field(min_length=1, description="Column name in the report.")
    source: str = Field(
        min_length=1,
        description="A model name or folder (alias, HF folder, hub id), an adapter folder, a merged folder, "
        "or a .gguf file / folder holding one.",
    )
    kind: CandidateKind = Field(
        "auto", description="auto tells from the files: adapter_config.json = adapter, *.gguf = gguf, else model."
    )
    base: str | None = Field(
        None, description="Base model of an adapter; default: the one its ftsdk.json or adapter_config.json names."
    )
    system_prompt: str | None = Field(None, description="Replaces (or adds) the system message of every prompt.")
    few_shot: FewShot | None = Field(None, description="Worked examples put before every prompt.")
    generation: GenerationOptions = Field(default_factory=GenerationOptions, description="Generation options.")
    trust_remote_code: bool = Field(
        False, description="Let the model (an adapter's base) run its own Python code (its config's auto_map): "
        "only for code you have read. What an adapter folder records never allows it.",
    )

    def resolved_kind(self) -> str:
        """The kind, told from the files when ``auto``; refuses a kind its files contradict."""
        path = Path(self.source).expanduser()
        told = (
            "adapter" if (path / "adapter_config.json").is_file()
            else "gguf" if path.suffix == ".gguf" or (path.is_dir() and not (path / "config.json").is_file()
                                                        and any(path.glob("*.gguf")))
            else "model"
        )
        if self.kind == "auto":
            return told
        if self.kind in ("adapter", "gguf", "merged") and not path.exists():
            raise ConfigError(f"candidate '{self.name}': {self.kind} source {path} does not exist",
                              hint="check the path (relative paths start at the cwd or the YAML file)")
        if self.kind != told and not (self.kind == "merged" and told == "model"):
            raise ConfigError(f"candidate '{self.name}' is declared {self.kind} but {path} looks like a {told}",
                              hint="set kind: auto, or point source at the right files")
        return self.kind


class FollowRule(PluginConfig):
    """Instruction following: the rate of replies that match a regex and/or validate against a JSON schema."""

    regex: str | None = Field(None, description="Each whole reply must match this regular expression.")
    json_schema: dict[str, Any] | Path | None = Field(
        None, description="Each reply must be JSON valid under this schema (inline or a .json file)."
    )

    @model_validator(mode="after")
    def _check(self) -> FollowRule:
        import re

        if self.regex is None and self.json_schema is None:
            raise ValueError("give regex or json_schema")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return self

    def schema(self) -> dict[str, Any] | None:
        """The JSON schema, read from its file if it is a path."""
        if not isinstance(self.json_schema, Path):
            return self.json_schema
        if not self.json_schema.is_file():
            raise ConfigError(f"JSON schema file not found: {self.json_schema}")
        return json.loads(self.json_schema.read_text(encoding="utf-8"))


class ForgettingOptions(PluginConfig):
    """The forgetting check: the baseline and other candidates on ftsdk's general-purpose set."""

    enabled: bool = Field(False, description="Run the check.")
    compare: list[str] | None = Field(None, description="Candidates compared with the baseline; None: all others.")
    threshold: float = Field(0.1, gt=0, le=1, description="Flag an overall accuracy drop above this fraction.")
    category_threshold: float = Field(0.25, gt=0, le=1, description="Flag a category's accuracy drop above this.")
    max_new_tokens: int = Field(48, ge=4, le=512, description="Tokens generated per general prompt.")
    file: Path | None = Field(None, description="A general set of your own (JSONL like ftsdk's); None: ftsdk's.")
    per_category: int | None = Field(
        None, ge=1, description="Ask only the first this many prompts of each category (a quick check); None: all."
    )


class EvalConfig(PluginConfig):
    """A whole evaluation, as written in ``ftsdk eval``'s YAML file."""

    data: Path = Field(description="Held-out file (any SFT format); each row's last assistant turn is the reference.")
    candidates: list[CandidateSpec] = Field(min_length=1, description="The models compared, in report order.")
    baseline: str | None = Field(None, description="Candidate the deltas are against; default: the first.")
    task: Literal["auto", "labels", "json", "text"] = Field(
        "auto", description="Which task metrics: auto picks labels, json or text from the references."
    )
    labels: list[str] | None = Field(None, description="The label set; default: the distinct references.")
    constrained: bool | None = Field(
        None, description="Also score label tasks by the likeliest label; None: yes for label tasks."
    )
    perplexity: bool = Field(True, description="Perplexity of each candidate on the reference replies alone "
                             "(the headline) and on the whole reference conversations.")
    follow: FollowRule | None = Field(None, description="Instruction-following rule checked on every reply.")
    forgetting: ForgettingOptions = Field(default_factory=ForgettingOptions, description="The forgetting check.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first rows of the data file.")
    worst_examples: int = Field(5, ge=0, le=100, description="Failures shown per failure mode in the report.")
    output_dir: Path | None = Field(None, description="Where the report goes; None writes no files.")
    overwrite: bool = Field(False, description="Replace a non-empty output_dir.")

    @model_validator(mode="after")
    def _names(self) -> EvalConfig:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate names must be unique, got {names}")
        for name in [self.baseline, *(self.forgetting.compare or [])]:
            if name is not None and name not in names:
                raise ValueError(f"'{name}' is not a candidate (candidates: {', '.join(names)})")
        return self

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.candidates[0].name

    @classmethod
    def from_yaml(cls, path: str | Path) -> EvalConfig:
        """Read an evaluation file; relative paths in it are relative to the file."""
        path = Path(path)
        raw = read_yaml_mapping(path, "evaluation config")
        config = validate_config(cls, raw, where=str(path))
        return config.relative_to(path.parent)

    def relative_to(self, base: Path) -> EvalConfig:
        """Paths made absolute against ``base`` where they are relative and exist there."""
        def fix(value: Any) -> Any:
            if value is None or Path(value).is_absolute():
                return value
            if isinstance(value, Path):
                return base / value
            return str(base / value) if (base / value).exists() else value

        candidates = [
            c.model_copy(update={
                "source": fix(c.source),
                "base": fix(c.base),
                "few_shot": c.few_shot.model_copy(update={"file": fix(c.few_shot.file)}) if c.few_shot else None,
            })
            for c in self.candidates
        ]
        follow = self.follow
        if follow is not None and isinstance(follow.json_schema, Path):
            follow = follow.model_copy(update={"json_schema": fix(follow.json_schema)})
        forgetting = self.forgetting.model_copy(update={"file": fix(self.forgetting.file)})
        return self.model_copy(update={"data": fix(self.data), "candidates": candidates, "follow": follow,
                                       "forgetting": forgetting, "output_dir": fix(self.output_dir)})
