"""The chain configuration: one pydantic model for the YAML file and the Python :class:`~ftsdk.chain.Chain`.

Steps name their inputs by the name of a chain input or of an earlier step; ``output`` defaults to
``<workdir>/<step name>``. Relative paths in a YAML file are relative to the file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.settings import StrictModel, describe_errors, quote
from ftsdk.quantizing.calibration import BUILTIN, TextsConfig
from ftsdk.safe_yaml import read_yaml_mapping

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _check_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise PydanticCustomError(
            "chain_name", "a name is letters, digits, '_', '.' and '-', starting with a letter or digit")
    return name


#: a step's or an input's name: also a folder name under the workdir, so no slashes and no leading dot
Name = Annotated[str, Field(max_length=128), AfterValidator(_check_name)]


class StepConfig(StrictModel):
    """What every step has: its name (how later steps refer to its output) and where the output goes."""

    name: Name = Field(description="The step's name; later steps refer to its output by it.")
    output: Path | None = Field(None, description="Output folder; default: <workdir>/<name>.")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping) and raw.get("name") is None:
            raw = {**raw, "name": raw.get("method") or raw.get("step")}
        return raw

    @property
    def kind(self) -> str:
        return str(self.step)  # type: ignore[attr-defined]

    def label(self, index: int) -> str:
        """How errors and progress name the step: ``steps[3] (quantize 'q4')``."""
        return f"steps[{index}] ({self.kind} '{self.name}')"


class TrainStep(StepConfig):
    """Train with a recipe (``ftsdk train``'s YAML); the chain sets its output folder."""

    step: Literal["train"] = "train"
    recipe: Path | dict[str, Any] = Field(description="A recipe file, or the recipe's fields inline (no output_dir).")
    model: str | None = Field(None, description="A chain input or earlier step to train instead of the recipe's model.")


class MergeAdapterStep(StepConfig):
    """Merge a PEFT adapter into its base model (:func:`ftsdk.merge_adapter`)."""

    step: Literal["merge_adapter"] = "merge_adapter"
    source: str | None = Field(None, description="The adapter: a chain input or step; default: the latest adapter.")
    base_model: str | None = Field(
        None, description="The base: a chain input, a step, a folder or an alias; default: the input named 'base' "
        "if there is one, else the base the adapter records.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Precision of the merge.")
    base_weights: Literal["as_trained", "original"] = Field(
        "as_trained", description="QLoRA: merge into the dequantized 4-bit weights it trained on, or the original."
    )


class MergeStep(StepConfig):
    """Merge models with a merger plugin (:func:`ftsdk.merge`)."""

    step: Literal["merge"] = "merge"
    config: Path | dict[str, Any] = Field(
        description="A merge config (file or inline); its models and base_model may name chain inputs or steps."
    )


class QuantizeStep(StepConfig):
    """Quantize with a quantizer plugin (:func:`ftsdk.quantize`)."""

    step: Literal["quantize"] = "quantize"
    method: str = Field(min_length=1, description="Quantizer plugin name (see `ftsdk plugins`).")
    source: str | None = Field(None, description="What to quantize; default: the latest model the method takes.")
    config: dict[str, Any] = Field(default_factory=dict, description="The quantizer's options.")
    calibration: TextsConfig = Field(default_factory=TextsConfig, description="Calibration texts, if it calibrates.")


class EvaluateStep(StepConfig):
    """Perplexity of several artifacts on the same token ids, each against a reference."""

    step: Literal["evaluate"] = "evaluate"
    models: list[str] | None = Field(None, description="Chain inputs or steps to score; default: every model made.")
    reference: str | None = Field(None, description="The one the others are compared with; default: the first.")
    texts: TextsConfig = Field(
        default_factory=lambda: TextsConfig(samples=64), description="The texts scored (default: built-in, 64)."
    )
    batch_size: int = Field(4, ge=1, le=256, description="Texts per forward pass (transformers models).")


class ExportStep(StepConfig):
    """Copy the chosen artifacts into one folder with a manifest (sizes, hashes, lineage, quality)."""

    step: Literal["export"] = "export"
    artifacts: list[str] | None = Field(None, description="Chain inputs or steps to ship; default: every model made.")


def _step_kind(value: Any) -> Any:
    """The tag of a step (a mapping or a step object): its ``step`` field."""
    return value.get("step") if isinstance(value, Mapping) else getattr(value, "step", None)


# a callable discriminator: StrictModel's field checks may then run on the `step` field too
Step = Annotated[
    Annotated[TrainStep, Tag("train")] | Annotated[MergeAdapterStep, Tag("merge_adapter")]
    | Annotated[MergeStep, Tag("merge")] | Annotated[QuantizeStep, Tag("quantize")]
    | Annotated[EvaluateStep, Tag("evaluate")] | Annotated[ExportStep, Tag("export")],
    Discriminator(_step_kind),
]
STEP_ADAPTER: TypeAdapter[Any] = TypeAdapter(Step)
STEP_TYPES = ("train", "merge_adapter", "merge", "quantize", "evaluate", "export")


class ChainConfig(StrictModel):
    """A whole chain."""

    name: str | None = Field(None, description="A name for the chain, shown in progress and manifests.")
    workdir: Path | None = Field(None, description="Folder of the step outputs that name no output of their own.")
    inputs: dict[Name, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="Named starting points: model folders, adapter folders or model aliases; "
        "names follow the step-name rules (letters, digits, `_.-`, not starting with a dot)."
    )
    steps: list[Step] = Field(default_factory=list, description="The steps, run in order.")


def validate_step(raw: Any, index: int) -> StepConfig:
    """One step, validated; errors are named ``steps[i] (type 'name')``."""
    if isinstance(raw, StepConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"steps[{index}] must be a mapping with a 'step' field, got {type(raw).__name__}")
    kind = raw.get("step", "?")
    label = f"steps[{index}] ({_shown(kind)} '{_shown(raw.get('name') or raw.get('method') or kind)}')"
    if kind not in STEP_TYPES:
        close = difflib.get_close_matches(kind, STEP_TYPES, n=1) if isinstance(kind, str) else []
        raise ConfigError(f"{label}: unknown step type {quote(kind)}",
                          hint=(f"did you mean '{close[0]}'? " if close else "") + f"step types: {', '.join(STEP_TYPES)}")
    try:
        return STEP_ADAPTER.validate_python(dict(raw))
    except ValidationError as exc:
        lines = [line.replace(f"{label}.{kind}.", f"{label}.") for line in describe_errors(exc, label)]
        raise ConfigError("invalid chain step:\n  " + "\n  ".join(lines)) from None


def _shown(value: Any) -> str:
    """A name as a step label shows it: short, whatever the YAML held."""
    return value[:40] if isinstance(value, str) else quote(value, 40)


def load_chain_config(source: ChainConfig | Mapping[str, Any] | str | Path) -> ChainConfig:
    """A chain config from an object, a mapping, or a YAML file (whose relative paths are made absolute)."""
    if isinstance(source, ChainConfig):
        return source
    base = None
    if not isinstance(source, Mapping):
        path = Path(source)
        raw: dict[str, Any] = read_yaml_mapping(path, "chain file")
        base = path.parent
        raw.setdefault("name", path.stem)
        raw.setdefault("workdir", path.stem)
    else:
        raw = dict(source)
    steps = raw.pop("steps", None) or []
    if not isinstance(steps, list):
        raise ConfigError("a chain's 'steps' must be a list")
    try:
        config = ChainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("invalid chain:\n  " + "\n  ".join(describe_errors(exc, "chain"))) from None
    config.steps = [validate_step(step, index) for index, step in enumerate(steps)]
    return with_paths_relative_to(config, base) if base is not None else config


def with_overrides(config: ChainConfig, *, inputs: Mapping[str, str | Path] | None = None,
                   workdir: str | Path | None = None) -> ChainConfig:
    """The config with some inputs set or replaced and another workdir (``ftsdk chain --input/--workdir``)."""
    update: dict[str, Any] = {}
    if inputs:
        update["inputs"] = {**config.inputs, **{k: str(v) for k, v in inputs.items()}}
    if workdir is not None:
        update["workdir"] = Path(workdir)
    if not update:
        return config
    try:
        checked = ChainConfig.model_validate({**dict(config), "steps": [], **update})
    except ValidationError as exc:
        raise ConfigError("invalid chain:\n  " + "\n  ".join(describe_errors(exc, "chain"))) from None
    return config.model_copy(update={"inputs": checked.inputs, "workdir": checked.workdir})


def with_paths_relative_to(config: ChainConfig, base: Path) -> ChainConfig:
    """The config with its relative paths (inputs, workdir, outputs, files) taken relative to ``base``."""
    from ftsdk.models.loading import ALIASES

    def fix(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else base / path

    def fix_texts(texts: TextsConfig) -> TextsConfig:
        return texts if texts.data == BUILTIN else texts.model_copy(update={"data": fix(Path(texts.data))})

    steps: list[Any] = []
    for step in config.steps:
        update: dict[str, Any] = {"output": fix(step.output)}
        if isinstance(step, TrainStep):
            update["recipe"] = fix(step.recipe) if isinstance(step.recipe, Path) else _recipe_paths(step.recipe, base)
        if isinstance(step, MergeStep) and isinstance(step.config, Path):
            update["config"] = fix(step.config)
        if isinstance(step, QuantizeStep):
            update["calibration"] = fix_texts(step.calibration)
        if isinstance(step, EvaluateStep):
            update["texts"] = fix_texts(step.texts)
        steps.append(step.model_copy(update=update))
    inputs = {name: value if value in ALIASES else str(fix(Path(value))) for name, value in config.inputs.items()}
    return config.model_copy(update={"inputs": inputs, "workdir": fix(config.workdir), "steps": steps})


def _recipe_paths(recipe: dict[str, Any], base: Path) -> dict[str, Any]:
    """An inline recipe with its data files (and a model folder that exists there) relative to ``base``."""
    recipe = dict(recipe)
    data = recipe.get("data")
    if isinstance(data, Mapping):
        recipe["data"] = {k: str(base / v) if k in ("train", "eval") and isinstance(v, str) and not Path(v).is_absolute()
                          else v for k, v in data.items()}
    model = recipe.get("model")
    name = model if isinstance(model, str) else model.get("name") if isinstance(model, Mapping) else None
    if isinstance(name, str) and not Path(name).is_absolute() and (base / name).exists():
        recipe["model"] = str(base / name) if isinstance(model, str) else {**model, "name": str(base / name)}
    return recipe
