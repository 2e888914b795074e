"""Option values that vary by tensor, in mergekit's syntax: a number, a per-layer gradient, or name filters.

- ``0.5``: every tensor.
- ``[0, 0.5, 1]``: a gradient over the decoder layers, interpolated linearly at the layer's position
  ``t = layer / (layers - 1)``; tensors outside the layers (embeddings, final norm, lm_head) take ``t = 0``,
  that is the first value.
- ``[{filter: self_attn, value: [0, 1]}, {value: 0.5}]``: the first entry whose ``filter`` is a substring
  of the tensor name (no filter, or ``"*"``, matches every tensor) gives the value, itself a number or a
  gradient. A tensor no entry matches falls back to the next place the option is set, then to its default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic import Field as PydanticField
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

Number = float | list[float]


class Filtered(BaseModel):
    """One entry of a filtered option: applies to tensors whose name contains ``filter``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filter: str | None = PydanticField(None, description="Substring of the tensor name; none or '*' matches all.")
    value: Number = PydanticField(description="A number or a per-layer gradient.")


Setting = float | list[float] | list[Filtered]
"""The static type of a tensor-dependent option; validate it with :class:`SettingOf`."""


class SettingOf:
    """Pydantic marker: ``Annotated[Setting, SettingOf(ge=0, le=1)]`` checks every number against the bounds."""

    def __init__(self, *, ge: float | None = None, le: float | None = None, gt: float | None = None) -> None:
        self.bounds = {key: value for key, value in {"ge": ge, "le": le, "gt": gt}.items() if value is not None}

    def _check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PydanticCustomError("setting", "expected a finite number, a list of them (a gradient) or a list "
                                      "of entries with filter and value")
        for key, bound in self.bounds.items():
            if not {"ge": value >= bound, "le": value <= bound, "gt": value > bound}[key]:
                word = {"ge": "at least", "le": "at most", "gt": "greater than"}[key]
                context = {"word": word, "bound": bound}
                raise PydanticCustomError("setting", "every value must be {word} {bound}", context)
        return float(value)

    def _numbers(self, value: Any) -> Number:
        if isinstance(value, list):
            if not value:
                raise PydanticCustomError("setting", "a gradient needs at least one value")
            return [self._check(item) for item in value]
        return self._check(value)

    def validate(self, value: Any) -> Setting:
        """A number, a gradient, or a list of filtered entries, with every number in bounds."""
        if isinstance(value, list) and value and all(isinstance(item, (dict, Filtered)) for item in value):
            entries = [Filtered.model_validate(item) for item in value]
            return [entry.model_copy(update={"value": self._numbers(entry.value)}) for entry in entries]
        return self._numbers(value)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.validate, serialization=core_schema.plain_serializer_function_ser_schema(_dump)
        )

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        number: dict[str, Any] = {"type": "number"}
        number |= {{"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum"}[k]: v for k, v in self.bounds.items()}
        gradient = {"type": "array", "items": number, "minItems": 1}
        entry = {
            "type": "object",
            "properties": {"filter": {"type": ["string", "null"]}, "value": {"anyOf": [number, gradient]}},
            "required": ["value"],
            "additionalProperties": False,
        }
        return {"anyOf": [number, gradient, {"type": "array", "items": entry, "minItems": 1}]}


def _dump(value: Setting) -> Any:
    if isinstance(value, list):
        return [item.model_dump() if isinstance(item, Filtered) else item for item in value]
    return value


def _interpolate(values: Sequence[float], t: float) -> float:
    scaled = t * (len(values) - 1)
    low = int(scaled)
    high = min(len(values) - 1, low + 1)
    fraction = scaled - low
    return (1 - fraction) * values[low] + fraction * values[high]


def evaluate(setting: Setting, tensor_name: str, t: float) -> float | None:
    """The value of ``setting`` for one tensor at layer position ``t``; None when no filter matches."""
    if not isinstance(setting, list):
        return setting
    if setting and isinstance(setting[0], Filtered):
        for entry in cast("list[Filtered]", setting):
            if entry.filter in (None, "*") or entry.filter in tensor_name:
                return evaluate(entry.value, tensor_name, t)
        return None
    return _interpolate(cast("list[float]", setting), t)


_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def layer_index(tensor_name: str) -> int | None:
    """The decoder layer a tensor belongs to (``model.layers.3.mlp...`` is 3), or None."""
    match = _LAYER.search(tensor_name)
    return int(match.group(1)) if match else None


def layer_position(tensor_name: str, num_layers: int) -> float:
    """mergekit's ``t``: ``layer / (layers - 1)`` inside the layers (1 for a single layer), 0 outside."""
    index = layer_index(tensor_name)
    if index is None:
        return 0.0
    return index / (num_layers - 1) if num_layers > 1 else 1.0
