"""The plugin conformance kit: checks any ftsdk plugin, built-in or third-party, against the contract.

Run it from a plugin's own pytest suite (the fixtures: ``pytest_plugins = ["ftsdk.testing.fixtures"]``)::

    from ftsdk.testing import conformance

    def test_config():
        conformance.check_config(MyAdapter)

    def test_trains(tmp_path, tiny_model_dir):
        conformance.check_adapter_trains(MyAdapter, {"blocks": 1}, tmp_path, model_dir=tiny_model_dir)

    @pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)  # from ftsdk.testing.tiny
    def test_trains_on_every_architecture(tmp_path, architecture):
        conformance.check_adapter_trains(MyAdapter, {"blocks": 1}, tmp_path, architecture=architecture)

Every check raises :class:`ConformanceError` (an AssertionError) saying what the plugin did wrong and how to
fix it. The cheap checks (config, registration, typed errors, light import) take milliseconds; the behaviour
checks (:func:`check_adapter_trains`, :func:`check_objective_trains`, :func:`check_quantizer_output_loads`,
:func:`check_merger`) run a few steps on a tiny random model in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ftsdk import plugins
from ftsdk.plugin.errors import FtsdkError
from ftsdk.plugin.kinds import Plugin, PluginConfig
from ftsdk.plugin.registry import ENTRY_POINT_GROUP, PluginInfo
from ftsdk.testing.check_merger import check_merger
from ftsdk.testing.check_quantizer import check_quantizer_output_loads
from ftsdk.testing.check_training import check_adapter_trains, check_objective_trains
from ftsdk.testing.kit import (
    ConformanceError,
    PluginRef,
    active,
    fail,
    plugin_class,
    registered,
)

#: imports a plugin module must not trigger: discovery and ``ftsdk --help`` stay light
HEAVY_MODULES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "llama_cpp", "bitsandbytes")
#: a value no option type takes (used to probe that bad values give typed errors)
_WRONG = {"not": ["a valid", "option value"]}

__all__ = [
    "ConformanceError",
    "active",
    "check_adapter_trains",
    "check_config",
    "check_light_import",
    "check_merger",
    "check_objective_trains",
    "check_quantizer_output_loads",
    "check_registration",
    "check_typed_errors",
    "expect_typed_error",
    "required_examples",
    "registered",
]


def _check_options_model(cls: type[Plugin], model: Any, attribute: str) -> dict[str, Any]:
    """One options model (``Config`` or a merger's ``InputParams``): pydantic, extra=forbid, a documented schema."""
    kind, name = cls.kind, cls.name
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise fail(kind, name, f"{attribute} is {model!r}, not a pydantic model",
                   f"declare `class {attribute}(ftsdk.PluginConfig)` with typed fields")
    if not issubclass(model, PluginConfig):
        raise fail(kind, name, f"{attribute} ({model.__name__}) does not subclass ftsdk.PluginConfig",
                   "subclass ftsdk.PluginConfig (unknown keys are errors, assignments are validated)")
    if model.model_config.get("extra") != "forbid":
        raise fail(kind, name, f"{attribute} ({model.__name__}) accepts unknown keys (extra="
                   f"{model.model_config.get('extra')!r}), so a typo in a recipe is silently ignored",
                   "do not override model_config's extra: PluginConfig sets extra='forbid'")
    try:
        schema = model.model_json_schema()
        json.dumps(schema)
    except Exception as exc:
        raise fail(kind, name, f"{attribute} ({model.__name__}) has no JSON schema: {type(exc).__name__}: {exc}",
                   "use field types pydantic can describe (numbers, strings, Literal, lists, nested PluginConfig)"
                   ) from exc
    undocumented = [field for field, info in model.model_fields.items() if not info.description]
    if undocumented:
        raise fail(kind, name, f"{attribute} fields without a description: {', '.join(undocumented)}",
                   "give each field Field(default, description=...): `ftsdk schema` and the docs show it")
    return schema


def required_examples(cls: type[Plugin]) -> dict[str, Any]:
    """Each required option's first declared example (``Field(examples=[...])``): the config the checks build
    when no example is given, so a plugin with required options checks out with no ``--config``."""
    return {info.alias or name: info.examples[0] for name, info in cls.Config.model_fields.items()
            if info.is_required() and info.examples}


def check_config(plugin: PluginRef, example: Mapping[str, Any] | None = None, *, kind: str | None = None) -> None:
    """The class declares name/summary/requires and a ``Config`` that is a documented, strict pydantic model.

    ``example`` is a valid config (its missing required options take :func:`required_examples`; default: every
    other option at its default, which must then validate). It must
    build the plugin, and its JSON dump must validate back to the same config (manifests are reproducible).
    """
    cls = plugin_class(plugin, kind or _kind_of(plugin))
    for attribute in ("name", "summary"):
        value = getattr(cls, attribute, None)
        if not isinstance(value, str) or not value.strip():
            raise fail(cls.kind, str(getattr(cls, "name", "?")), f"the class attribute {attribute} is {value!r}",
                       f"set {attribute} to a non-empty string")
    if not isinstance(cls.requires, tuple) or not all(isinstance(r, str) for r in cls.requires):
        raise fail(cls.kind, cls.name, f"requires is {cls.requires!r}",
                   "set requires to a tuple of import names, e.g. ('peft',)")
    _check_options_model(cls, cls.Config, "Config")
    input_params = getattr(cls, "InputParams", None)
    if input_params is not None:
        _check_options_model(cls, input_params, "InputParams")
    given = required_examples(cls) | dict(example or {})
    try:
        instance = cls(given)
    except FtsdkError as exc:
        what = "the example config" if example else "Config() with every option at its default"
        raise fail(cls.kind, cls.name, f"{what} does not validate: {exc}",
                   "give every option a default, or pass example= a valid config") from exc
    dumped = instance.config.model_dump(mode="json", by_alias=True)
    try:
        json.dumps(dumped)
        again = cls(dumped).config
    except Exception as exc:
        raise fail(cls.kind, cls.name, f"the config's JSON dump {dumped} does not validate again: {exc}",
                   "use JSON-friendly field types: manifests store the dump and reruns validate it") from exc
    if again != instance.config:
        raise fail(cls.kind, cls.name, f"the config's JSON dump validates to a different config: {again!r}",
                   "keep validators idempotent: validating a dumped config must give it back")


def _kind_of(plugin: PluginRef) -> str:
    if isinstance(plugin, str):
        raise TypeError("pass kind= with a plugin name")
    return getattr(plugin, "kind", "?")


def expect_typed_error(call: Callable[[], Any], *, plugin: type[Plugin], doing: str, must_raise: bool = True) -> None:
    """Run ``call``: it must raise an :class:`ftsdk.plugin.errors.FtsdkError` (or, with must_raise=False, nothing else)."""
    try:
        call()
    except FtsdkError as exc:
        if not exc.message.strip():
            raise fail(plugin.kind, plugin.name, f"{doing} raised {type(exc).__name__} with an empty message",
                       "say what is wrong and where (and how to fix it with hint=)") from exc
        return
    except Exception as exc:
        raise fail(plugin.kind, plugin.name, f"{doing} raised {type(exc).__name__}: {exc}",
                   "catch it where it happens and raise ftsdk.ConfigError / DataError / ModelLoadError / "
                   "PluginUnavailableError with a hint= saying how to fix the input") from exc
    if must_raise:
        raise fail(plugin.kind, plugin.name, f"{doing} raised no error", "refuse bad input with ftsdk.ConfigError")


def check_typed_errors(
    plugin: PluginRef,
    example: Mapping[str, Any] | None = None,
    *,
    kind: str | None = None,
    calls: Iterable[tuple[str, Callable[[Any], Any]]] = (),
    source: Path | None = None,
) -> None:
    """Bad input fails with a typed ftsdk error, never a bare ValueError, KeyError or TypeError.

    Checked: an unknown option; every option given a value of the wrong type (accepted, or a typed error);
    ``calls``, pairs of (what it does, function of the plugin instance) that must raise a typed error; for a
    quantizer with a ``source`` model folder, ``check()`` on a folder without config.json and with a source
    kind it does not accept (each accepted, or a typed error).
    """
    cls = plugin_class(plugin, kind or _kind_of(plugin))
    given = required_examples(cls) | dict(example or {})
    expect_typed_error(lambda: cls({**given, "no_such_option": 1}), plugin=cls,
                       doing="building it with an unknown option 'no_such_option'")
    for field, info in cls.Config.model_fields.items():
        key = info.alias or field
        expect_typed_error(lambda key=key: cls({**given, key: _WRONG}), plugin=cls, must_raise=False,
                           doing=f"building it with {key}={_WRONG!r}")
    try:
        instance = cls(given)
    except FtsdkError as exc:
        raise fail(cls.kind, cls.name, f"the config {given} does not validate: {exc}",
                   "pass example= a valid config") from exc
    for doing, call in calls:
        expect_typed_error(lambda call=call: call(instance), plugin=cls, doing=doing)
    if cls.kind == "quantizer" and source is not None:
        _quantizer_bad_sources(cls, instance, Path(source))


def _quantizer_bad_sources(cls: type[Plugin], quantizer: Any, source: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ftsdk-conformance-") as empty:
        expect_typed_error(lambda: quantizer.check(Path(empty), "model"), plugin=cls, must_raise=False,
                           doing="check() on a folder without config.json")
    for source_kind in ("model", "adapter"):
        if source_kind not in cls.accepts:  # type: ignore[attr-defined]
            expect_typed_error(lambda k=source_kind: quantizer.check(source, k), plugin=cls, must_raise=False,
                               doing=f"check() with source_kind='{source_kind}', which it does not accept")


def _pyproject_entry_points(pyproject: Path) -> dict[str, str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    data = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))
    return dict(data.get("project", {}).get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))


def check_registration(name: str, kind: str, *, pyproject: str | Path | None = None) -> PluginInfo:
    """The plugin is found by ``ftsdk.plugin.registry`` under ``(kind, name)`` and comes from an ``ftsdk`` entry point.

    An installed plugin is checked through its distribution's entry points; one registered in-process (tests
    of a package that is not installed) through the ``[project.entry-points.ftsdk]`` table of ``pyproject``.
    Returns the plugin's :class:`ftsdk.plugin.registry.PluginInfo`.
    """
    try:
        info = plugins.get(kind, name)
    except FtsdkError as exc:
        broken = "; ".join(f"{b.source}: {b.error}" for b in plugins.broken())
        raise fail(kind, name, f"ftsdk does not find it: {exc}" + (f"\n  broken plugins: {broken}" if broken else ""),
                   f"declare `[project.entry-points.{ENTRY_POINT_GROUP}]` NAME = \"your_module\" in pyproject.toml, "
                   f"install the package, and register the class from `@ftsdk.hookimpl def register_{kind}s`"
                   ) from exc
    cls = info.cls
    if cls.kind != kind or cls.name != name:
        raise fail(kind, name, f"the registered class {cls.__qualname__} says kind={cls.kind!r} name={cls.name!r}",
                   "register it from the hook of its own kind, under its own name")
    if info.distribution != "(in-process)":
        found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == info.source]
        if not found:
            raise fail(kind, name, f"no '{ENTRY_POINT_GROUP}' entry point named '{info.source}' is installed",
                       "install the package so its entry point is recorded")
        return info
    if pyproject is None:
        raise fail(kind, name, "it is registered in-process only, so whether its package declares an entry point "
                   "is unknown", "pass pyproject= the package's pyproject.toml, or install the package")
    entry_points = _pyproject_entry_points(Path(pyproject))
    if not entry_points:
        raise fail(kind, name, f"{pyproject} declares no [project.entry-points.{ENTRY_POINT_GROUP}] table",
                   f"add `[project.entry-points.{ENTRY_POINT_GROUP}]` with `{name} = \"your_module\"`")
    import importlib

    from ftsdk.testing.kit import classes_registered_by

    for target in entry_points.values():
        module = importlib.import_module(target.split(":")[0])
        if cls in classes_registered_by(module):
            return info
    raise fail(kind, name, f"none of the entry points {entry_points} names a module whose hooks register "
               f"{cls.__qualname__}", f"point an entry point at the module with `register_{kind}s`")


def check_light_import(module: str, *, path: Iterable[str | Path] = ()) -> None:
    """Importing ``module`` and running its hooks imports none of :data:`HEAVY_MODULES` (checked in a fresh
    interpreter, with ``path`` prepended to sys.path): discovery and ``ftsdk --help`` stay fast."""
    code = (
        "import importlib, json, sys\n"
        f"sys.path[:0] = {[str(p) for p in path]!r}\n"
        "from ftsdk.testing.kit import classes_registered_by\n"
        f"classes_registered_by(importlib.import_module({module!r}))\n"
        f"print(json.dumps([m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ConformanceError(f"importing {module} failed:\n{done.stderr.strip()}")
    heavy = json.loads(done.stdout.strip().splitlines()[-1])
    if heavy:
        raise ConformanceError(
            f"importing {module} and registering its plugins imports {', '.join(heavy)}\n"
            "  fix: import heavy libraries inside the methods that use them (type hints: under TYPE_CHECKING)"
        )
