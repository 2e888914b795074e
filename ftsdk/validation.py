"""Turn pydantic validation failures into one clear :class:`~ftsdk.errors.ConfigError`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
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


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (a recipe, a merge config); clear errors otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}", hint="pass the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of fields, got {type(raw).__name__}")
    return raw
