"""Serving backends by name, imported only when chosen."""

from __future__ import annotations

import importlib
import importlib.util

from ftsdk.plugin.errors import PluginUnavailableError
from ftsdk.serving.backends.base import Backend

#: backend name -> "module:class"
BACKENDS = {
    "transformers": "ftsdk.serving.backends.hf:TransformersBackend",
    "llamacpp": "ftsdk.serving.backends.llamacpp:LlamaCppBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The backend class called ``name``; PluginUnavailableError if the packages it needs are missing."""
    module, _, attr = BACKENDS[name].partition(":")
    cls: type[Backend] = getattr(importlib.import_module(module), attr)
    missing = [pkg for pkg in cls.requires if importlib.util.find_spec(pkg) is None]
    if missing:
        raise PluginUnavailableError(f"the {name} serving backend needs {', '.join(missing)}", hint=cls.install_hint)
    return cls
