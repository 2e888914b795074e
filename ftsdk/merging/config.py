"""The merge configuration (``ftsdk merge CONFIG.yaml``), read from YAML in ftsdk's or mergekit's spelling.

mergekit files are accepted as they are where their method is supported: ``merge_method`` for ``method``,
a single ``slices`` entry whose sources each span all layers (the usual SLERP recipe), ``tokenizer_source``
and ``tokenizer: {source: ...}``. What only mergekit implements (layer-range slicing, its own methods such
as ``passthrough`` or ``model_stock``, ``modules``, vocabulary unions, chat-template rewriting) is handed to
the ``mergekit`` merger plugin unless ``backend: ftsdk`` says not to (see :mod:`ftsdk.merging.mergekit_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, ByteSize, ConfigDict, Field, model_validator

from ftsdk.merging.mergekit_config import hand_over, map_references, mergekit_reason, referenced_models
from ftsdk.plugin.settings import StrictModel, validate_config
from ftsdk.safe_yaml import read_yaml_mapping

DtypeName = Literal["float32", "float16", "bfloat16", "float64"]


class InputModel(StrictModel):
    """One input: a model (or adapter) folder and its per-input options."""

    model_config = ConfigDict(populate_by_name=True)

    model: str = Field(min_length=1, description="A local model folder (or adapter folder), or a model alias.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Options for this input, e.g. weight and density (see the method)."
    )
    layer_range: tuple[int, int] | None = Field(
        None, description="From mergekit slices: must span all the model's layers (no layer-range slicing)."
    )


class MergeConfig(StrictModel):
    """Everything a merge needs, validated before any weight is read."""

    model_config = ConfigDict(populate_by_name=True)

    method: str = Field(
        validation_alias=AliasChoices("method", "merge_method"),
        description="Merger plugin name (see `ftsdk plugins`): linear, slerp, task_arithmetic, ties, dare_ties, ...",
    )
    base_model: str | None = Field(None, description="The model the task vectors are taken from (required by most).")
    models: list[InputModel] = Field(min_length=1, description="The inputs, each with its own parameters.")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Method options (normalize, lambda, t, seed...) and defaults of per-input options (weight...).",
    )
    dtype: DtypeName | None = Field(
        None, description="Dtype inputs are cast to for the merge; default: the inputs' common (promoted) dtype."
    )
    out_dtype: DtypeName | None = Field(None, description="Dtype written; default: `dtype`.")
    tokenizer_source: str | None = Field(
        None, description="'base' or one of the inputs: whose tokenizer (and vocabulary size) the output takes. "
        "Default: the base model, else the first model.",
    )
    output: Path | None = Field(None, description="Output folder (the CLI and API can override it).")
    overwrite: bool = Field(False, description="Replace a non-empty output folder.")
    max_shard_size: ByteSize = Field(
        ByteSize(5_000_000_000), gt=0, description="Largest output shard: bytes, or text such as '2GB' or '500MiB'."
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="CPU threads for the merge's math; default: every core but one, which reads ahead."
    )
    backend: Literal["auto", "ftsdk", "mergekit"] = Field(
        "auto", description="Who merges a mergekit-spelled config: auto = ftsdk's engine when it supports the config, "
        "else mergekit itself (the mergekit merger); ftsdk = never mergekit; mergekit = always mergekit.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_mergekit(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        raw = dict(raw)
        if raw.get("method", raw.get("merge_method")) == "mergekit":
            return _explicit_mergekit(raw)
        reason = mergekit_reason(raw)
        if raw.get("backend") == "mergekit" or (reason and raw.get("backend", "auto") == "auto"):
            return hand_over(raw)
        if reason:
            raise ValueError(f"{reason} needs mergekit, and backend is 'ftsdk'; remove 'backend: ftsdk' to run it "
                             "through mergekit (the mergekit merger: pip install \"ftsdk[mergekit]\")")
        tokenizer = raw.pop("tokenizer", None)
        if tokenizer is not None:  # mergekit_reason let through only {source: ...}
            raw["tokenizer_source"] = tokenizer.get("source") if isinstance(tokenizer, Mapping) else tokenizer
        slices = raw.pop("slices", None)
        if slices is not None:
            if raw.get("models"):
                raise ValueError("give either 'models' or 'slices', not both")
            raw["models"] = _models_from_slices(slices)
        return raw


def _explicit_mergekit(raw: dict[str, Any]) -> dict[str, Any]:
    """``method: mergekit`` with the document under ``parameters.config``: its models become the inputs; a
    document naming none takes the config's ``models`` and ``base_model``."""
    parameters = dict(raw.get("parameters") or {})
    document = parameters.get("config")
    if isinstance(document, Mapping) and not any(document.get(k) for k in ("models", "slices", "modules")):
        models = [m if isinstance(m, Mapping) else {"model": m} for m in raw.get("models") or []]
        parameters["config"] = {**document, "models": models}
        if raw.get("base_model") is not None:
            parameters["config"].setdefault("base_model", raw["base_model"])
        inputs = [{"model": m.get("model")} for m in models]  # their parameters are mergekit's, in the document
        return raw | {"models": inputs, "parameters": parameters, "backend": "mergekit"}
    if isinstance(document, Mapping) and not raw.get("models"):
        base = document.get("base_model")
        models = [{"model": m} for m in referenced_models(document) if m != base] or [{"model": base}]
        raw |= {"models": models, "base_model": raw.get("base_model") or base}
    return raw | {"backend": "mergekit"}


def _models_from_slices(slices: Any) -> list[dict[str, Any]]:
    """mergekit's one-slice form (others went to mergekit): each source becomes an input spanning all its layers."""
    if not isinstance(slices, list) or not slices or not isinstance(slices[0], Mapping):
        raise ValueError("'slices' must be a list of entries with 'sources'")
    sources = slices[0].get("sources")
    if not isinstance(sources, list) or not sources:
        raise ValueError("the slice needs a list of 'sources'")
    return [dict(source) for source in sources]


def load_merge_config(source: MergeConfig | Mapping[str, Any] | str | Path) -> MergeConfig:
    """Validate a config given as an object, a mapping, or the path of a YAML file.

    Relative paths in a YAML file are relative to the file: inputs when they exist there, and ``output``.
    """
    if isinstance(source, MergeConfig):
        return source
    if isinstance(source, Mapping):
        return validate_config(MergeConfig, source, where="merge config")
    path = Path(source)
    config = validate_config(MergeConfig, read_yaml_mapping(path, "merge config"), where=str(path))
    return _relative_to(config, path.parent)


def _relative_to(config: MergeConfig, folder: Path) -> MergeConfig:
    def model(reference: str | None) -> str | None:
        if reference is None or Path(reference).is_absolute() or not (folder / reference).exists():
            return reference
        return str(folder / reference)

    models = [entry.model_copy(update={"model": model(entry.model)}) for entry in config.models]
    output = config.output if config.output is None or config.output.is_absolute() else folder / config.output
    source = config.tokenizer_source if config.tokenizer_source == "base" else model(config.tokenizer_source)
    parameters = config.parameters
    if config.method == "mergekit" and isinstance(parameters.get("config"), dict):
        parameters = parameters | {"config": map_references(parameters["config"], lambda m: model(m) or m)}
    return config.model_copy(update={"models": models, "base_model": model(config.base_model), "output": output,
                                     "tokenizer_source": source, "parameters": parameters})
