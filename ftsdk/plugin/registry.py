"""The plugin manager: discovery through the ``ftsdk`` entry points, listing and lookup.

Environment switches (read when the registry is first built, or after :func:`reload`):

- ``FTSDK_PLUGINS``: comma-separated entry-point names to load; set but empty loads none.
- ``FTSDK_DISABLE_PLUGINS``: comma-separated entry-point names never to load.

Plugins registered in-process with :func:`register` are always active.
A plugin whose import or registration fails is recorded in :func:`broken` and the rest keep working.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from ftsdk.plugin import hookspecs
from ftsdk.plugin.errors import (
    PluginConflictError,
    PluginError,
    PluginUnavailableError,
    UnknownPluginError,
)
from ftsdk.plugin.kinds import INTERFACE_OF_KIND, Plugin, PluginConfig

ENTRY_POINT_GROUP = "ftsdk"
KINDS = tuple(hookspecs.HOOK_OF_KIND)


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin class and where it came from."""

    kind: str
    name: str
    cls: type[Plugin]
    source: str  # entry-point name, or the in-process registration's name
    distribution: str
    version: str

    @property
    def summary(self) -> str:
        return self.cls.summary

    @property
    def missing(self) -> list[str]:
        return self.cls.missing_requirements()

    @property
    def available(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "available": self.available,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin module that failed to import or register, or a name two plugins claimed."""

    source: str
    distribution: str
    version: str
    error: str
    kind: str = ""
    name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name or self.source,
            "distribution": self.distribution,
            "version": self.version,
            "available": False,
            "summary": "",
            "error": self.error,
        }


@dataclass
class _Origin:
    distribution: str
    version: str


@dataclass
class Registry:
    """Everything discovered: working plugins by (kind, name) and the broken ones."""

    plugins: dict[tuple[str, str], PluginInfo] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    conflicts: dict[tuple[str, str], list[PluginInfo]] = field(default_factory=dict)


_IN_PROCESS = _Origin("(in-process)", "")
_manager: pluggy.PluginManager | None = None
_origins: dict[str, _Origin] = {}
_load_failures: list[BrokenPlugin] = []
_registry: Registry | None = None


def _names_from_env(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _entry_points() -> list[metadata.EntryPoint]:
    seen: dict[tuple[str, str], metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        # an editable install can show one distribution twice; keep the first
        seen.setdefault((ep.name, ep.value), ep)
    return list(seen.values())


def _manager_with_entry_points() -> pluggy.PluginManager:
    global _manager
    if _manager is not None:
        return _manager
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    allowed = _names_from_env("FTSDK_PLUGINS")
    blocked = _names_from_env("FTSDK_DISABLE_PLUGINS") or set()
    for ep in _entry_points():
        if (allowed is not None and ep.name not in allowed) or ep.name in blocked:
            continue
        dist = ep.dist
        origin = _Origin(dist.metadata["Name"] if dist else "?", dist.version if dist else "?")
        try:
            module = ep.load()
            manager.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            _load_failures.append(
                BrokenPlugin(ep.name, origin.distribution, origin.version, f"{type(exc).__name__}: {exc}")
            )
            continue
        _origins[ep.name] = origin
    _manager = manager
    return manager


def _collect() -> Registry:
    manager = _manager_with_entry_points()
    registry = Registry(broken=list(_load_failures))
    claims: dict[tuple[str, str], list[PluginInfo]] = {}
    for kind, hook_name in hookspecs.HOOK_OF_KIND.items():
        interface = INTERFACE_OF_KIND[kind]
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            origin = _origins.get(impl.plugin_name, _IN_PROCESS)
            found: list[type] = []
            try:
                impl.function(register=found.append)
                for cls in found:
                    _check_plugin_class(cls, interface)
            except Exception as exc:
                registry.broken.append(
                    BrokenPlugin(
                        impl.plugin_name,
                        origin.distribution,
                        origin.version,
                        f"{type(exc).__name__}: {exc}",
                        kind=kind,
                    )
                )
                continue
            for cls in found:
                info = PluginInfo(kind, cls.name, cls, impl.plugin_name, origin.distribution, origin.version)
                claims.setdefault((kind, cls.name), []).append(info)
    for key, infos in claims.items():
        if len(infos) == 1:
            registry.plugins[key] = infos[0]
            continue
        registry.conflicts[key] = infos
        who = " and ".join(f"{i.distribution} ({i.source})" for i in infos)
        registry.broken.append(
            BrokenPlugin(infos[0].source, infos[0].distribution, infos[0].version,
                         f"{key[0]} '{key[1]}' is registered by both {who}", kind=key[0], name=key[1])
        )
    return registry


def _check_plugin_class(cls: type, interface: type[Plugin]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise PluginError(f"{cls!r} is not a subclass of ftsdk.plugin.kinds.{interface.__name__}")
    for attribute in ("name", "summary"):
        if not isinstance(getattr(cls, attribute, None), str) or not getattr(cls, attribute):
            raise PluginError(f"{cls.__qualname__} must set a non-empty string '{attribute}'")


def registry() -> Registry:
    """The registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = _collect()
    return _registry


def reload() -> None:
    """Forget everything discovered and read the entry points and environment again."""
    global _manager, _registry
    in_process = []
    if _manager is not None:
        in_process = [(n, p) for n, p in _manager.list_name_plugin() if n not in _origins]
    _manager, _registry = None, None
    _origins.clear()
    _load_failures.clear()
    manager = _manager_with_entry_points()
    for name, plugin in in_process:
        manager.register(plugin, name=name)


def register(plugin: object, name: str | None = None) -> str:
    """Register a module or object holding ``@hookimpl`` functions in this process."""
    manager = _manager_with_entry_points()
    try:
        registered = manager.register(plugin, name=name)
    except ValueError as exc:  # pluggy: already registered (e.g. through its entry point)
        raise PluginError(str(exc), hint="installed plugins are already found through their entry point") from None
    if registered is None:
        raise PluginError(f"plugin {name or plugin!r} is blocked or already registered")
    _invalidate()
    return registered


def unregister(plugin: object | None = None, name: str | None = None) -> None:
    """Remove a plugin registered in-process (by object or name)."""
    _manager_with_entry_points().unregister(plugin=plugin, name=name)
    _invalidate()


def _invalidate() -> None:
    global _registry
    _registry = None


def list_plugins(kind: str | None = None) -> list[PluginInfo]:
    """Working plugins, sorted by kind then name."""
    infos = registry().plugins.values()
    return sorted((i for i in infos if kind in (None, i.kind)), key=lambda i: (KINDS.index(i.kind), i.name))


def broken() -> list[BrokenPlugin]:
    """Plugins that failed to import or register, and names claimed twice."""
    return list(registry().broken)


def get(kind: str, name: str) -> PluginInfo:
    """Look up a plugin; errors list the known names and the closest match."""
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind '{kind}'", hint=f"kinds are: {', '.join(KINDS)}")
    reg = registry()
    if (kind, name) in reg.conflicts:
        infos = reg.conflicts[(kind, name)]
        who = " and ".join(f"'{i.distribution}' (entry point '{i.source}')" for i in infos)
        raise PluginConflictError(
            f"{kind} '{name}' is registered by both {who}",
            hint="uninstall one, or block one with FTSDK_DISABLE_PLUGINS=<entry point>",
        )
    info = reg.plugins.get((kind, name))
    if info is not None:
        return info
    known = sorted(n for k, n in reg.plugins if k == kind)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    hint += f"known {kind}s: {', '.join(known) or '(none)'}"
    failed = [b for b in reg.broken if b.kind in ("", kind)]
    if failed:
        hint += "; some plugins failed to load, see `ftsdk plugins`"
    raise UnknownPluginError(f"no {kind} plugin named '{name}'", hint=hint)


def create(kind: str, name: str, config: PluginConfig | Mapping[str, Any] | None = None) -> Plugin:
    """Look up a plugin, check its packages are installed, and build it from a validated config."""
    info = get(kind, name)
    missing = info.missing
    if missing:
        raise PluginUnavailableError(
            f"{kind} '{name}' needs packages that are not installed: {', '.join(missing)}",
            hint=info.cls.install_hint or f"pip install {' '.join(missing)}",
        )
    return info.cls(config)
