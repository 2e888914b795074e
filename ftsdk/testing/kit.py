"""What the conformance checks share: their failure type, finding the plugin class, and making it active."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ftsdk import plugins
from ftsdk.plugin.hookspecs import HOOK_OF_KIND, hookimpl
from ftsdk.plugin.kinds import INTERFACE_OF_KIND, Plugin

PluginRef = type[Plugin] | str


class ConformanceError(AssertionError):
    """A plugin breaks the ftsdk plugin contract; the message says what it did and how to fix it."""


def fail(kind: str, name: str, problem: str, fix: str) -> ConformanceError:
    """The error to raise: ``[adapter 'x'] problem\\n  fix: how``."""
    return ConformanceError(f"[{kind} '{name}'] {problem}\n  fix: {fix}")


def plugin_class(plugin: PluginRef, kind: str) -> type[Plugin]:
    """The class of ``plugin`` (a class, or the name of a registered plugin of ``kind``), checked to be of ``kind``."""
    if kind not in INTERFACE_OF_KIND:
        raise ValueError(f"unknown plugin kind '{kind}'; kinds: {', '.join(INTERFACE_OF_KIND)}")
    interface = INTERFACE_OF_KIND[kind]
    if isinstance(plugin, str):
        return plugins.get(kind, plugin).cls
    if not (isinstance(plugin, type) and issubclass(plugin, interface)):
        raise ConformanceError(
            f"{plugin!r} is not a {kind} plugin class\n  fix: subclass ftsdk.plugin.kinds.{interface.__name__}"
        )
    return plugin


def hooks_registering(*classes: type[Plugin]) -> object:
    """An object with the ``@hookimpl`` functions that register ``classes`` (what a plugin module holds)."""
    hooks: dict[str, Any] = {}
    for kind in dict.fromkeys(cls.kind for cls in classes):
        of_kind = [cls for cls in classes if cls.kind == kind]

        def register_all(register: Any, of_kind: list[type[Plugin]] = of_kind) -> None:
            for cls in of_kind:
                register(cls)

        hooks[HOOK_OF_KIND[kind]] = staticmethod(hookimpl(register_all))
    return type("PluginHooks", (), hooks)()


def classes_registered_by(module: object) -> list[type[Plugin]]:
    """The classes the ``@hookimpl`` functions of ``module`` register, found by calling them."""
    found: list[type[Plugin]] = []
    for hook in HOOK_OF_KIND.values():
        function = getattr(module, hook, None)
        if callable(function) and hasattr(function, "ftsdk_impl"):
            function(register=found.append)
    return found


@contextlib.contextmanager
def registered(module: object, name: str | None = None) -> Iterator[list[type[Plugin]]]:
    """Make the plugins a ``@hookimpl`` module registers active in this process, for the block; yields them.

    Installed packages are already active through their entry point and are left as they are; otherwise
    the module is registered in-process (as ``name``) and unregistered on exit.
    """
    classes = classes_registered_by(module)
    if not classes:
        raise ConformanceError(
            f"{module!r} has no @hookimpl function that registers a plugin class\n"
            "  fix: add `@ftsdk.hookimpl def register_<kind>s(register): register(YourClass)`"
        )
    active = plugins.registry().plugins
    if all(active.get((cls.kind, cls.name)) is not None and active[(cls.kind, cls.name)].cls is cls
           for cls in classes):
        yield classes
        return
    label = plugins.register(module, name=name or f"conformance:{getattr(module, '__name__', id(module))}")
    try:
        _check_claimed(classes)
        yield classes
    finally:
        plugins.unregister(name=label)


def _check_claimed(classes: list[type[Plugin]]) -> None:
    registry = plugins.registry()
    for cls in classes:
        if (cls.kind, cls.name) in registry.conflicts:
            others = [i.distribution for i in registry.conflicts[(cls.kind, cls.name)] if i.cls is not cls]
            raise fail(cls.kind, cls.name, f"the name is already taken by {', '.join(others)}",
                       "choose another name (a prefix naming your package avoids clashes)")
        info = registry.plugins.get((cls.kind, cls.name))
        if info is None or info.cls is not cls:
            errors = "; ".join(b.error for b in registry.broken) or "no error recorded"
            raise fail(cls.kind, cls.name, f"registering it failed: {errors}",
                       "register a subclass of the kind's interface with a non-empty name and summary")


@contextlib.contextmanager
def active(cls: type[Plugin]) -> Iterator[None]:
    """Make one plugin class active (found by ``plugins.get``) for the block, registering it if needed."""
    info = plugins.registry().plugins.get((cls.kind, cls.name))
    if info is not None and info.cls is cls:
        yield
        return
    with registered(hooks_registering(cls), name=f"conformance:{cls.kind}:{cls.name}"):
        yield


def require_installed(cls: type[Plugin]) -> None:
    """Skip the calling test when the packages the plugin ``requires`` are missing (naming them)."""
    missing = cls.missing_requirements()
    if missing:
        import pytest

        pytest.skip(f"{cls.kind} '{cls.name}' needs {', '.join(missing)}: "
                    f"{cls.install_hint or 'pip install ' + ' '.join(missing)}")


def sample_ids(tokenizer: Any) -> Any:
    """A short batch of token ids (one row) to compare two models' logits on."""
    return tokenizer("what is the color of the sky", return_tensors="pt", add_special_tokens=False)["input_ids"]
