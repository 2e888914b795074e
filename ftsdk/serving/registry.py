"""The served models: the base under its name, and adapters loaded and unloaded by name at run time.

Model cards name models only: where a model lies on the server's disk is never sent to clients.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ftsdk.plugin.errors import FtsdkError
from ftsdk.serving.backends.base import Backend
from ftsdk.serving.config import check_model_name
from ftsdk.serving.errors import APIError, log, model_not_found
from ftsdk.serving.schemas import model_card


class AdapterRegistry:
    """Maps the ``model`` field of requests to the base (None) or an adapter loaded in ``backend``."""

    def __init__(self, backend: Backend, base_name: str) -> None:
        self.backend = backend
        self.base_name = base_name
        self._adapters: dict[str, dict[str, Any]] = {}
        self._created = int(time.time())
        self._changes = threading.Lock()  # one load/unload at a time; generation is not blocked by it

    def resolve(self, model: str) -> str | None:
        """The adapter a request's ``model`` names, None for the base; 404 ``model_not_found`` otherwise."""
        if model == self.base_name:
            return None
        if model in self._adapters:
            return model
        raise model_not_found(model)

    def load(self, name: str, path: str) -> dict[str, Any]:
        """Load an adapter under a new name: 400 if the name or the adapter is unusable, 409 if the name is taken."""
        try:
            check_model_name(name)
        except ValueError as exc:
            raise APIError(400, str(exc), code="invalid_value", param="name") from None
        with self._changes:
            if name == self.base_name or name in self._adapters:
                raise APIError(409, f"a model named `{name}` is already served; unload it first or pick another name",
                               code="model_exists", param="name")
            try:
                folder = self.backend.check_adapter(path)
                self.backend.load_adapter(name, folder)
            except FtsdkError as exc:
                log.warning("adapter '%s' did not load: %s", name, exc)
                hint = f" ({exc.hint})" if exc.hint else ""
                raise APIError(400, f"adapter `{name}` did not load: {exc.message}{hint}",
                               code="adapter_load_failed", param="path") from None
            self._adapters[name] = {"created": int(time.time())}
        return self.card(name)

    def unload(self, name: str) -> None:
        """Unload adapter ``name``: 404 if no adapter has that name, 400 for the base model."""
        with self._changes:
            if name == self.base_name:
                raise APIError(400, "the base model cannot be unloaded", code="invalid_value", param="name")
            if name not in self._adapters:
                raise model_not_found(name)
            del self._adapters[name]  # new requests get 404 from here on
            self.backend.unload_adapter(name)

    def card(self, name: str) -> dict[str, Any]:
        info = self._adapters[name]
        return {**model_card(name, parent=self.base_name, root=self.base_name), "created": info["created"]}

    def cards(self) -> list[dict[str, Any]]:
        """The base model and every loaded adapter, as ``/v1/models`` lists them."""
        base = {**model_card(self.base_name, root=self.base_name), "created": self._created}
        return [base] + [self.card(n) for n in self._adapters]
