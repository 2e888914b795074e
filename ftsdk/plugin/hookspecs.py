"""The plugin contract: each hook receives a ``register`` callable and only registers classes.

A plugin module implements any of these with :data:`ftsdk.hookimpl`::

    @hookimpl
    def register_adapters(register):
        register(MyAdapter)

The classes registered must subclass the matching interface in :mod:`ftsdk.plugin.kinds`.
Registration must not import heavy libraries (torch, transformers): do that inside the methods.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "ftsdk"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[type], None]


@hookspec
def register_adapters(register: Register) -> None:
    """Register :class:`ftsdk.plugin.kinds.Adapter` subclasses: how parameters are trained."""


@hookspec
def register_objectives(register: Register) -> None:
    """Register :class:`ftsdk.plugin.kinds.Objective` subclasses: what is optimised, on which data."""


@hookspec
def register_quantizers(register: Register) -> None:
    """Register :class:`ftsdk.plugin.kinds.Quantizer` subclasses: how a model is made smaller."""


@hookspec
def register_mergers(register: Register) -> None:
    """Register :class:`ftsdk.plugin.kinds.Merger` subclasses: how several models become one."""


@hookspec
def register_launchers(register: Register) -> None:
    """Register :class:`ftsdk.plugin.kinds.Launcher` subclasses: how the processes of a training run are started."""


#: hook name for each kind of plugin
HOOK_OF_KIND = {
    "adapter": "register_adapters",
    "objective": "register_objectives",
    "quantizer": "register_quantizers",
    "merger": "register_mergers",
    "launcher": "register_launchers",
}
