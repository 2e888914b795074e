"""From a merge config to a merger plugin and its request: every option validated, nothing read yet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from ftsdk import plugins
from ftsdk.merging.config import MergeConfig
from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.jobs import MergeInput, MergeRequest
from ftsdk.plugin.kinds import PluginConfig
from ftsdk.plugin.settings import validate_config

if TYPE_CHECKING:
    from ftsdk.plugin.kinds import Merger


def same_model(a: str, b: str) -> bool:
    """Whether two references name one model (equal paths once resolved, or equal text)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _keys(model: type[PluginConfig]) -> set[str]:
    """The keys a config may use for ``model``'s fields: alias if it has one (``lambda``), else the name."""
    return {field.alias or name for name, field in model.model_fields.items()}


def build_request(config: MergeConfig) -> tuple[Merger, MergeRequest]:
    """Look up the merger, validate its options and every input's, and name the base and tokenizer source."""
    cls = cast("type[Merger]", plugins.get("merger", config.method).cls)
    method_keys, input_keys = _keys(cls.Config), _keys(cls.InputParams)
    unknown = sorted(set(config.parameters) - method_keys - input_keys)
    if unknown:
        raise ConfigError(f"unknown parameter(s) for method '{config.method}': {', '.join(unknown)}",
                          hint=f"valid parameters: {', '.join(sorted(method_keys | input_keys))}")
    options = validate_config(
        cls.Config, {k: v for k, v in config.parameters.items() if k in method_keys}, where="parameters"
    )
    merger = cast("Merger", plugins.create("merger", config.method, options.model_dump(by_alias=True)))
    defaults = validate_config(
        cls.InputParams, {k: v for k, v in config.parameters.items() if k in input_keys}, where="parameters"
    )
    inputs = []
    for index, entry in enumerate(config.models):
        misplaced = sorted(set(entry.parameters) & method_keys)
        if misplaced:
            raise ConfigError(
                f"models[{index}].parameters: {', '.join(misplaced)} apply to the whole merge, not one model",
                hint="set them under the top-level 'parameters'",
            )
        params = validate_config(cls.InputParams, entry.parameters, where=f"models[{index}].parameters")
        inputs.append(MergeInput(entry.model, params, index, entry.layer_range))
    base = None
    if config.base_model is not None:
        base = next((i for i in inputs if same_model(i.reference, config.base_model)), None)
        if base is None:
            base = MergeInput(config.base_model, cls.InputParams(), None)
            inputs.append(base)
    return merger, MergeRequest(
        method=config.method,
        inputs=tuple(inputs),
        base=base,
        defaults=defaults,
        dtype=config.dtype,
        out_dtype=config.out_dtype,
        tokenizer_source=_tokenizer_source(config, inputs, base),
        max_shard_size=int(config.max_shard_size),
        threads=config.threads,
    )


def _tokenizer_source(config: MergeConfig, inputs: list[MergeInput], base: MergeInput | None) -> MergeInput:
    wanted = config.tokenizer_source
    if wanted is None:
        return base or inputs[0]
    if wanted == "base":
        if base is None:
            raise ConfigError("tokenizer_source is 'base' but no base_model is given")
        return base
    found = next((i for i in inputs if same_model(i.reference, wanted)), None)
    if found is None:
        raise ConfigError(f"tokenizer_source {wanted} is not one of the merge's inputs",
                          hint="use 'base' or the path of one of the models")
    return found
