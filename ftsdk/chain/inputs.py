"""A chain's inputs: folders, GGUF files and model aliases, classified without loading anything."""

from __future__ import annotations

from pathlib import Path

from ftsdk.chain.refs import Artifact
from ftsdk.plugin.errors import FtsdkError


def external(name: str, value: str) -> Artifact | None:
    """The artifact ``value`` names (a folder, a .gguf file or a model alias), or None if nothing is there."""
    from ftsdk.models.loading import ALIASES
    from ftsdk.quantizing.run import classify_source

    if value in ALIASES:
        return Artifact(name, Path(value), "model", alias=value)
    path = Path(value).expanduser()
    if not path.exists():
        return None
    try:
        kind = classify_source(path).kind
    except FtsdkError:
        return None
    return Artifact(name, path, kind)


def chain_inputs(inputs: dict[str, str]) -> tuple[dict[str, Artifact], list[str]]:
    """The chain's named inputs, and one problem per input that is missing or holds no model."""
    found: dict[str, Artifact] = {}
    problems = []
    for name, value in inputs.items():
        artifact = external(name, value)
        if artifact is None:
            what = "does not exist" if not Path(value).exists() else "holds no model, adapter or GGUF file"
            problems.append(f"inputs.{name}: {value} {what}")
            continue
        found[name] = artifact
    return found, problems

