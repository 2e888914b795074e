"""Turn pydantic validation failures into one clear :class:`~ftsdk.errors.ConfigError`, and read YAML safely.

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

from ftsdk.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: the largest YAML file ftsdk reads as a config (recipe, merge config, chain, eval spec)
MAX_YAML_BYTES = 16 * 1024 * 1024
#: how deeply mappings and lists may nest in a YAML config
MAX_YAML_DEPTH = 64
#: how many values aliases (``*name``) and merge keys (``<<``) may add to a YAML document once expanded
MAX_ALIAS_EXPANSION = 100_000
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
        elif isinstance(value, (int, str)) and bool in kinds and not kinds & {int, float, str, Path}:
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
    """The plain types an annotation accepts: ``int | None`` -> {int, NoneType}; Annotated is unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return frozenset().union(*(_scalar_types(arg) for arg in typing.get_args(annotation)))
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
        loc = ".".join(quote(part, 60) if not isinstance(part, str) else _short(part, 60) for part in item["loc"])
        place = f"{where}{': ' if Path(where).suffix in _FILE_SUFFIXES else '.'}{loc}" if loc else where
        got = item.get("input")
        shown = "" if isinstance(got, (dict, BaseModel)) or item["type"] == "missing" else f" (got {quote(got)})"
        lines.append(f"{place}: {_short(item['msg'], 400)}{shown}")
    return lines


_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _short(text: str, limit: int) -> str:
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


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (a recipe, a merge config); clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}", hint="pass the path of a YAML file")
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes is too large for a {what} (at most {MAX_YAML_BYTES:,})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})",
                          hint="save the file as UTF-8") from None
    raw = load_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of fields, got {type(raw).__name__}")
    return raw


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document the way ``yaml.safe_load`` does, within ftsdk's limits; errors name the line."""
    import yaml

    def at(mark: Any) -> str:
        return f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source

    loader = None
    try:
        loader = _bounded_loader()(text)
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"{at(exc.problem_mark or exc.context_mark)}: {_short(problem, 400)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {_short(str(exc), 400)}") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's scanner: an escape such as "\U99999999" is no character
        mark = loader.get_mark() if loader is not None else None
        raise ConfigError(f"{at(mark)}: cannot read this text: {_short(str(exc), 200)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (at most {MAX_YAML_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()


@functools.cache
def _bounded_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses deep nesting, alias bombs, invalid text and unconvertible scalars."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._sizes: dict[int, int] = {}  # id(node) -> values it holds once aliases are expanded
            self._depth = 0
            self._composed = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            start = self.peek_event().start_mark
            if self.check_event(yaml.AliasEvent):
                node = super().compose_node(parent, index)
                if id(node) not in self._sizes:
                    raise yaml.composer.ComposerError(
                        None, None, "an alias refers to the collection that contains it", start)
                return node
            self._depth += 1
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep", start)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            if isinstance(node, yaml.ScalarNode):
                if not _valid_text(node.value):
                    raise yaml.composer.ComposerError(
                        None, None, "a string holds a lone surrogate (\\ud800-\\udfff), which is not valid Unicode",
                        node.start_mark)
                size = 1
            else:
                children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
                size = 1 + sum(self._sizes[id(child)] for child in children)
            self._composed += 1
            self._sizes[id(node)] = size
            if size - self._composed > MAX_ALIAS_EXPANSION:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand this document by more than {MAX_ALIAS_EXPANSION:,} values",
                    node.start_mark)
            return node

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except (ValueError, OverflowError) as exc:  # int('1' * 5000), a 13th month: not YAMLErrors
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read this value: {_short(str(exc), 200)}", node.start_mark) from None

    return BoundedLoader


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
