"""Turn pydantic validation failures into one clear :class:`~ftsdk.plugin.errors.ConfigError`, and read YAML safely.

Everything a config file says is untrusted: YAML is read with ``safe_load`` semantics, bounded in size, nesting
and alias expansion, and values quoted back in error messages are shortened.
"""

from __future__ import annotations

import functools
import reprlib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ftsdk.plugin.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: the most characters of a value an error message quotes
MAX_QUOTED = 120


class StrictModel(BaseModel):
    """Base of ftsdk's config models: unknown keys are errors, assignments are validated, and numbers are strict.

    A number field refuses ``true``/``false`` (``batch_size: true`` is not 1), a whole-number field refuses floats
    (``1e23``, ``4.0``), a float field refuses NaN and infinity, a true/false field refuses numbers and text
    (``"no"``), text refuses NUL characters, and a path refuses the empty string (which would mean ".").
    Values inside lists and free-form mappings are checked by their own models.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, (int, float, str)) or info.field_name is None:
            return value
        field = cls.model_fields.get(info.field_name)
        kinds = _scalar_types(field.annotation) if field is not None else frozenset()
        if isinstance(value, bool):
            if bool not in kinds and kinds & {int, float}:
                raise PydanticCustomError("strict_number", "a number is required, not true/false")
        elif isinstance(value, (int, str)) and bool in kinds and value not in kinds and not kinds & {int, float, str, Path}:
            raise PydanticCustomError("strict_bool", "true or false is required")
        elif isinstance(value, float) and float not in kinds and int in kinds:
            raise PydanticCustomError("strict_int", "a whole number is required, not a float")
        elif isinstance(value, str) and kinds & {str, Path}:
            if "\x00" in value:
                raise PydanticCustomError("text_nul", "text cannot contain a NUL character")
            if Path in kinds and str not in kinds and not value.strip():
                raise PydanticCustomError("path_empty", "a path cannot be empty")
        return value


@functools.lru_cache(maxsize=1024)
def _scalar_types(annotation: Any) -> frozenset[Any]:
    """The plain types an annotation accepts: ``int | None`` -> {int, NoneType}; Annotated is unwrapped, a
    Literal gives its values."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return frozenset().union(*(_scalar_types(arg) for arg in typing.get_args(annotation)))
    if origin is typing.Literal:  # the allowed values themselves: ``Literal["auto"] | bool`` takes "auto"
        return frozenset(typing.get_args(annotation))
    return frozenset({annotation}) if origin is None else frozenset()


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, MAX_QUOTED, 40
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 4


def quote(value: Any, limit: int = MAX_QUOTED) -> str:
    """A short ``repr`` of ``value`` for an error message: bounded work and length, whatever the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_errors(error: ValidationError, where: str) -> list[str]:
    """One line per problem: ``where.field.sub: message (got value)`` (``file.yaml: field.sub: ...`` for a file);
    quoted values are shortened."""
    lines = []
    for item in error.errors(include_url=False):
        loc = ".".join(quote(part, 60) if not isinstance(part, str) else shorten(part, 60) for part in item["loc"])
        place = f"{where}{': ' if Path(where).suffix in _FILE_SUFFIXES else '.'}{loc}" if loc else where
        got = item.get("input")
        shown = "" if isinstance(got, (dict, BaseModel)) or item["type"] == "missing" else f" (got {quote(got)})"
        lines.append(f"{place}: {shorten(item['msg'], 400)}{shown}")
    return lines


_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in "..." when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_config(model: type[M], value: M | Mapping[str, Any] | None, *, where: str) -> M:
    """Validate ``value`` as ``model``; on failure raise ConfigError listing every problem."""
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(dict(value or {}))
    except ValidationError as exc:
        problems = describe_errors(exc, where)
        fields = ", ".join(model.model_fields)
        raise ConfigError(
            f"invalid {where}:\n  " + "\n  ".join(problems),
            hint=f"valid options are: {fields}" if fields else None,
        ) from None


