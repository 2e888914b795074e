"""Fingerprints: what a step's output depends on, hashed, so an unchanged step is never run twice.

A step's fingerprint covers its type and settings (plugin names, versions and configs), the content of
the data files it reads, and the fingerprints of its inputs: an earlier step's fingerprint, or the content
hash of a chain input's files. Changing anything upstream changes every fingerprint downstream.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ftsdk.artifacts import MANIFEST_NAME, read_manifest, sha256_file

#: the key of the record a chain adds to each step output's ftsdk.json
RECORD_KEY = "chain"


def content_hash(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents), ``ftsdk.json`` and README excluded.

    Manifests hold times and absolute paths: leaving them out keeps a copied or re-made folder's hash equal.
    """
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        name = file.relative_to(path).as_posix()
        if name in (MANIFEST_NAME, "README.md"):
            continue
        digest.update(f"{name}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def fingerprint(step_type: str, settings: dict[str, Any], inputs: dict[str, str], files: list[str]) -> str:
    """The fingerprint of a step from its settings and the fingerprints of its inputs and files."""
    payload = {"type": step_type, "settings": settings, "inputs": inputs, "files": files}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def recorded(folder: Path) -> dict[str, Any] | None:
    """The chain record in ``folder``'s manifest, or None when there is none (or no folder)."""
    if not (folder / MANIFEST_NAME).is_file():
        return None
    try:
        record = read_manifest(folder).get(RECORD_KEY)
    except (ValueError, OSError):
        return None
    return record if isinstance(record, dict) else None
