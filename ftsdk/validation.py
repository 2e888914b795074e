"""Turn pydantic validation failures into one clear :class:`~ftsdk.errors.ConfigError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ftsdk.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def describe_errors(error: ValidationError, where: str) -> list[str]:
    """One line per problem: ``where.field.sub: message (got value)``."""
    lines = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(part) for part in item["loc"])
        place = f"{where}.{loc}" if loc else where
        got = item.get("input")
        shown = "" if isinstance(got, (dict, BaseModel)) or item["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{place}: {item['msg']}{shown}")
    return lines


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
