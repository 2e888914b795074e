"""Output folders written atomically, and the ``ftsdk.json`` manifest beside every output."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftsdk.errors import OutputExistsError

MANIFEST_NAME = "ftsdk.json"


def check_output_dir(target: str | Path, overwrite: bool) -> Path:
    """Refuse early (before expensive work) an output folder that exists and is not empty."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"output path {target} exists and is not a folder", hint="choose another output_dir")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"output folder {target} is not empty", hint="choose another output_dir or pass overwrite=True"
        )
    return target


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; rename it into place only if the block succeeds.

    Nothing half-written is ever left at ``target``: on error the temporary folder is removed.
    """
    target = check_output_dir(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``ftsdk.json`` into ``folder``."""
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read the ``ftsdk.json`` of an output folder."""
    return json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (those not installed are left out)."""
    import importlib.metadata as metadata

    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions
