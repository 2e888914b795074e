"""The merge configuration (``ftsdk merge CONFIG.yaml``), read from YAML in ftsdk's or mergekit's spelling.

mergekit files are accepted as they are where their method is supported: ``merge_method`` for ``method``,
a single ``slices`` entry whose sources each span all layers (the usual SLERP recipe), ``tokenizer_source``
and ``tokenizer: {source: ...}``. Layer-range slicing, ``modules``, vocabulary unions and chat-template
rewriting are refused with an error saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, ByteSize, ConfigDict, Field, model_validator

from ftsdk.validation import StrictModel, read_yaml_mapping, validate_config

DtypeName = Literal["float32", "float16", "bfloat16", "float64"]
_UNSUPPORTED = {
    "modules": "per-module merges ('modules') are not supported; list the models under 'models'",
    "chat_template": "rewriting the chat template ('chat_template') is not supported; the tokenizer source's "
    "template is kept",
}


class _Strict(StrictModel):
    model_config = ConfigDict(populate_by_name=True)


class InputModel(_Strict):
    """One input: a model (or adapter) folder and its per-input options."""

    model: str = Field(min_length=1, description="A local model folder (or adapter folder), or a model alias.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Options for this input, e.g. weight and density (see the method)."
    )
    layer_range: tuple[int, int] | None = Field(
        None, description="From mergekit slices: must span all the model's layers (no layer-range slicing)."
    )


class MergeConfig(_Strict):
    """Everything a merge needs, validated before any weight is read."""

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

    @model_validator(mode="before")
    @classmethod
    def _from_mergekit(cls, raw: Any) -> Any:
        if not isinstance(raw, Mapping):
            return raw
        raw = dict(raw)
        for key, reason in _UNSUPPORTED.items():
            if raw.get(key) is not None:
                raise ValueError(reason)
        tokenizer = raw.pop("tokenizer", None)
        if tokenizer is not None:
            if not isinstance(tokenizer, Mapping) or set(tokenizer) - {"source"}:
                raise ValueError("of mergekit's 'tokenizer' settings only 'source' is supported")
            raw["tokenizer_source"] = tokenizer.get("source")
        if raw.get("tokenizer_source") == "union":
            raise ValueError("tokenizer_source 'union' (a merged vocabulary) is not supported; use 'base' or a model")
        slices = raw.pop("slices", None)
        if slices is not None:
            if raw.get("models"):
                raise ValueError("give either 'models' or 'slices', not both")
            raw["models"] = _models_from_slices(slices)
        return raw


def _models_from_slices(slices: Any) -> list[dict[str, Any]]:
    """mergekit's one-slice form: each source becomes an input that must span all its layers."""
    if not isinstance(slices, list) or len(slices) != 1 or not isinstance(slices[0], Mapping):
        raise ValueError("only a single entry under 'slices' is supported (no layer-range slicing); "
                         "use 'models' to merge whole models")
    only = dict(slices[0])
    if only.get("parameters") or only.get("base_model"):
        raise ValueError("parameters or base_model inside a slice are not supported; set them at the top level")
    sources = only.get("sources")
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
    return config.model_copy(
        update={"models": models, "base_model": model(config.base_model), "output": output, "tokenizer_source": source}
    )
