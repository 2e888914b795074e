"""Read YAML configs safely: ``safe_load`` semantics, bounded in size, nesting and alias expansion."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import ConfigError
from ftsdk.plugin.settings import shorten

#: the largest YAML file ftsdk reads as a config (recipe, merge config, chain, eval spec)
MAX_YAML_BYTES = 16 * 1024 * 1024

#: how deeply mappings and lists may nest in a YAML config
MAX_YAML_DEPTH = 64

#: how many values aliases (``*name``) and merge keys (``<<``) may add to a YAML document once expanded
MAX_ALIAS_EXPANSION = 100_000


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
        raise ConfigError(f"{at(exc.problem_mark or exc.context_mark)}: {shorten(problem, 400)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {shorten(str(exc), 400)}") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's scanner: an escape such as "\U99999999" is no character
        mark = loader.get_mark() if loader is not None else None
        raise ConfigError(f"{at(mark)}: cannot read this text: {shorten(str(exc), 200)}") from None
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
                    None, None, f"cannot read this value: {shorten(str(exc), 200)}", node.start_mark) from None

    return BoundedLoader


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
