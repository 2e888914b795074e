"""Where rows come from: a file, a folder of files, or a ``datasets`` source (a Hub id, a local
``datasets`` script or folder), with an optional renaming of columns to ftsdk's field names.

A ``datasets`` source goes through ``datasets.load_dataset`` itself, so its cache, offline mode
(``HF_DATASETS_OFFLINE=1``), authentication and mirrors behave as they do for ``datasets`` users.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from ftsdk.artifacts import sha256_file
from ftsdk.data.reading import Place, Unreadable, check_value, folder_files, iter_rows
from ftsdk.plugin.errors import DataError
from ftsdk.plugin.settings import StrictModel, validate_config

HUB_PREFIX = "hf:"


class HubData(StrictModel):
    """A data set loaded with ``datasets.load_dataset`` (a Hub id, or a local folder it understands)."""

    hub: str = Field(min_length=1, description="Hub id (`org/name`) or a path `datasets.load_dataset` accepts.")
    split: str = Field("train", min_length=1, description="Split to read, e.g. `train`, `test` or `train[:1000]`.")
    subset: str | None = Field(None, description="Configuration (subset) name, for data sets that have several.")
    revision: str | None = Field(None, description="Branch, tag or commit of the Hub repository.")
    streaming: bool = Field(False, description="Read rows as they download instead of caching the split first.")

    def label(self) -> str:
        subset = f"/{self.subset}" if self.subset else ""
        return f"{HUB_PREFIX}{self.hub}{subset}@{self.split}"


Source = str | Path | HubData


def as_source(value: Source | Mapping[str, Any]) -> Path | HubData:
    """A path, or a HubData from a mapping or an ``hf:org/name`` string."""
    if isinstance(value, HubData):
        return value
    if isinstance(value, Mapping):
        return validate_config(HubData, value, where="data source")
    if isinstance(value, str) and value.startswith(HUB_PREFIX):
        return HubData(hub=value[len(HUB_PREFIX):])
    return Path(value)


def label_of(source: Path | HubData) -> str:
    return source.label() if isinstance(source, HubData) else str(source)


def rename(row: Any, columns: Mapping[str, str] | None) -> Any:
    """``row`` with its keys renamed by ``columns`` (source name -> ftsdk name); other keys stay."""
    if not columns or not isinstance(row, dict):
        return row
    return {columns.get(key, key): value for key, value in row.items()}


def source_rows(source: Path | HubData, columns: Mapping[str, str] | None = None) -> Iterator[tuple[Place, Any]]:
    """``(place, row)`` of every row of ``source``, its columns renamed; unreadable rows as Unreadable."""
    rows = _hub_rows(source) if isinstance(source, HubData) else iter_rows(source)
    for place, row in rows:
        yield place, row if isinstance(row, Unreadable) else rename(row, columns)


def fingerprint(source: Path | HubData) -> str:
    """SHA-256 of a file, of a folder's files (names and contents), or of a ``datasets`` source's rows."""
    if isinstance(source, Path) and source.is_file():
        return sha256_file(source)
    digest = hashlib.sha256()
    if isinstance(source, Path):
        for path in folder_files(source):
            digest.update(f"{path.relative_to(source).as_posix()}\0{sha256_file(path)}\n".encode())
        return digest.hexdigest()
    for _, row in _hub_rows(source):
        digest.update(json.dumps(row, sort_keys=True, default=str).encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _hub_rows(source: HubData) -> Iterator[tuple[Place, Any]]:
    import datasets

    from ftsdk.console import quiet_datasets

    try:
        with quiet_datasets():
            loaded = datasets.load_dataset(source.hub, source.subset, split=source.split, revision=source.revision,
                                           streaming=source.streaming)
    except Exception as exc:  # datasets raises many kinds (FileNotFoundError, ValueError, its own, HTTP errors)
        raise DataError(f"cannot load the data set {source.label()}: {type(exc).__name__}: {str(exc)[:300]}",
                        hint="check the id, subset and split; offline, the data set must be in the datasets cache "
                        "(HF_DATASETS_OFFLINE=1 uses it)") from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise DataError(f"{source.label()}: give one split", hint=f"splits: {', '.join(loaded)}")
    for number, row in enumerate(loaded, start=1):
        problem = check_value(row)
        yield number, Unreadable(problem) if problem else row

