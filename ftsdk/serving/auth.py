"""Who may use the server: where the API key comes from and where the server may listen.

A key on the command line shows in ``ps`` to every user of the machine, so it is better read from the
``FTSDK_API_KEY`` environment variable or a file. Listening beyond the loopback needs a key, or
``insecure`` said on purpose. Checked before any model loads; no web framework is imported here.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from ftsdk.plugin.errors import ConfigError

#: the environment variable an API key is read from when no --api-key or --api-key-file is given
KEY_VARIABLE = "FTSDK_API_KEY"


def resolve_api_key(flag: str | None, file: str | None) -> str | None:
    """The API key from ``--api-key``, else ``--api-key-file``, else FTSDK_API_KEY, else None (no key)."""
    if flag is not None and file is not None:
        raise ConfigError("give the API key once: --api-key or --api-key-file, not both",
                          hint=f"prefer --api-key-file or {KEY_VARIABLE}: a key on the command line shows in `ps`")
    if file is not None:
        path = Path(file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the API key file {path}: {exc}",
                              hint="point --api-key-file at a text file holding the key on one line") from None
        check_api_key(key, f"the API key file {path}")
        return key
    if flag is not None:
        check_api_key(flag, "--api-key")
        return flag
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if not key:
        return None
    check_api_key(key, KEY_VARIABLE)
    return key


def check_api_key(key: str, source: str) -> None:
    """ConfigError (that does not show the key) unless ``key`` can be sent in an Authorization header."""
    if not key or not all("!" <= char <= "~" for char in key):
        raise ConfigError(f"{source}: the API key must be one word of printable ASCII characters (no spaces)",
                          hint="generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this machine only."""
    try:
        return _loopback_address(host.strip("[]"))
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(_loopback_address(str(info[4][0]).split("%")[0]) for info in found)


def _loopback_address(text: str) -> bool:
    address = ipaddress.ip_address(text)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def check_exposure(host: str, has_key: bool, insecure: bool) -> None:
    """ConfigError for listening beyond the loopback without a key, unless ``insecure`` says so on purpose."""
    if has_key or insecure or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to listen on {host}, which other machines can reach, without an API key",
        hint=f"set {KEY_VARIABLE} or --api-key-file to require `Authorization: Bearer KEY`; or pass --insecure "
        "if a proxy in front of the server authenticates clients",
    )
