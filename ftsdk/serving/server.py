"""Build the app from a ServeConfig (checks first, then the model) and run it with uvicorn."""

from __future__ import annotations

import copy
import importlib.util
import socket
import sys
from typing import TYPE_CHECKING, Any

from ftsdk.plugin.errors import ConfigError, PluginUnavailableError
from ftsdk.serving.auth import check_api_key, check_exposure, is_loopback
from ftsdk.serving.config import ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ftsdk.serving.backends.base import Backend


def check_serving_installed() -> None:
    """PluginUnavailableError unless FastAPI and uvicorn are importable."""
    missing = [pkg for pkg in ("fastapi", "uvicorn") if importlib.util.find_spec(pkg) is None]
    if missing:
        raise PluginUnavailableError(f"ftsdk serve needs {', '.join(missing)}", hint="pip install 'ftsdk[serve]'")


def check_config(config: ServeConfig) -> type[Backend]:
    """The backend class, once the base, the adapter names and their paths look servable (nothing loaded)."""
    from ftsdk.serving.backends import backend_class

    check_serving_installed()
    if config.api_key is not None:
        check_api_key(config.api_key.get_secret_value(), "api_key")
    check_exposure(config.host, config.api_key is not None, config.insecure)
    cls = backend_class(config.backend)
    cls.check_base(config.base)
    if config.base_name in config.adapters:
        raise ConfigError(f"adapter name '{config.base_name}' is also the base model's name",
                          hint="rename the adapter, or give the base another name with --served-name")
    for path in config.adapters.values():
        cls.check_adapter(path)
    return cls


def build_app(config: ServeConfig) -> FastAPI:
    """Check the config, load the base model and the adapters, and return the app (not yet listening)."""
    from ftsdk.serving.app import create_app
    from ftsdk.serving.errors import APIError
    from ftsdk.serving.registry import AdapterRegistry

    cls = check_config(config)
    registry = AdapterRegistry(cls(config), config.base_name)
    for name, path in config.adapters.items():
        try:
            registry.load(name, path)
        except APIError as exc:
            raise ConfigError(f"adapter '{name}': {exc.message}") from None
    return create_app(registry, config)


def serve(config: ServeConfig) -> None:
    """Serve until interrupted. Checks that the port is free before the model is loaded."""
    check_config(config)
    _check_port(config.host, config.port)
    import uvicorn

    app = build_app(config)
    models = ", ".join([config.base_name, *config.adapters])
    print(f"ftsdk serve: {models} on http://{config.host}:{config.port}/v1 ({config.backend})", file=sys.stderr)
    for warning in exposure_warnings(config):
        print(f"ftsdk serve: warning: {warning}", file=sys.stderr)
    uvicorn.run(app, host=config.host, port=config.port, log_config=_log_config(), server_header=False)


def exposure_warnings(config: ServeConfig) -> list[str]:
    """What an operator should know about who can reach this server and what they can do."""
    warnings = []
    if config.api_key is None and not is_loopback(config.host):
        warnings.append(f"--insecure: anyone who can reach {config.host} can use this server without a key")
    if config.enable_admin:
        warnings.append("--enable-admin: clients can load adapters from this machine's disk and unload them")
    return warnings


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the server's own log (failed requests and their tracebacks) beside it."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["ftsdk.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}",
                              hint="pick another --port, or stop the process using this one") from None
