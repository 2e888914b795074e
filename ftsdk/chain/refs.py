"""Artifacts (what chain inputs and steps provide), how inputs are classified without loading anything, and how a
step's references to them are resolved."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import ConfigError, FtsdkError

#: kinds of artifact that are models (what quantize, evaluate and export take)
MODEL_KINDS = ("model", "adapter", "quantized", "gguf")
#: the kind of a step whose checks failed: later steps may use it without more errors
UNKNOWN = "unknown"


@dataclass
class Artifact:
    """A folder a step can use: a chain input, or the output of an earlier step."""

    name: str
    path: Path
    #: model, adapter, quantized, gguf, evaluation, export (or unknown)
    kind: str
    #: index of the step that makes it; None for a chain input
    step: int | None = None
    #: for an alias input (``smollm2-135m``): the alias, resolved to a folder only when a step runs
    alias: str | None = None

    @property
    def reference(self) -> str:
        """What APIs are given: the folder, or the alias."""
        return self.alias or str(self.path)


@dataclass
class Prepared:
    """A step whose checks passed: what it uses and how to run it."""

    #: the kind of artifact it makes
    produces: str
    #: the artifacts it reads, by a label (source, base_model, models[1]...)
    uses: dict[str, Artifact]
    #: writes the step's output into an empty folder (its manifest included)
    run: Callable[[Path], None]
    #: data files it reads (their contents count in its fingerprint)
    files: list[Path] = field(default_factory=list)
    #: what counts in its fingerprint besides inputs and files: options and plugin versions, never paths
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a step sees while it is checked: the chain's inputs and the earlier steps' artifacts."""

    inputs: dict[str, Artifact]
    made: dict[str, Artifact]
    later: dict[str, int]

    def lookup(self, reference: str, field_name: str, *, paths: bool = False) -> Artifact:
        """The artifact a step names (an earlier step or an input; with ``paths``, a folder or an alias too)."""
        if reference in self.made:
            return self.made[reference]
        if reference in self.inputs:
            return self.inputs[reference]
        if reference in self.later:
            raise ConfigError(f"{field_name} '{reference}' is made by steps[{self.later[reference]}], which runs later",
                              hint="a step can only use the chain's inputs and the outputs of steps before it")
        if paths:
            found = external(reference, reference)
            if found is not None:
                return found
        known = [*self.made, *self.inputs]
        close = difflib.get_close_matches(reference, known, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + f"known names: {', '.join(known) or '(none)'}"
        raise ConfigError(f"{field_name} '{reference}' is no earlier step and no chain input", hint=hint)

    def latest(self, kinds: Iterable[str], field_name: str) -> Artifact:
        """The most recent step output of one of ``kinds``, else the only chain input of those kinds."""
        kinds = tuple(kinds)
        for artifact in reversed(list(self.made.values())):
            if artifact.kind in kinds:
                return artifact
        candidates = [a for a in self.inputs.values() if a.kind in kinds]
        if len(candidates) == 1:
            return candidates[0]
        what = " or ".join(kinds)
        raise ConfigError(f"no {field_name} is given and {'several' if candidates else 'no'} earlier {what} "
                          "could be meant", hint=f"set {field_name}: to a chain input or an earlier step")


def require_kind(artifact: Artifact, kinds: Iterable[str], field_name: str, hint: str | None = None) -> None:
    """Refuse an artifact of another kind (an unknown kind passes: its own step already failed)."""
    kinds = tuple(kinds)
    if artifact.kind not in kinds and artifact.kind != UNKNOWN:
        raise ConfigError(f"{field_name} '{artifact.name}' is {_a(artifact.kind)}, not {' or '.join(map(_a, kinds))}",
                          hint=hint)


def _a(kind: str) -> str:
    return {"adapter": "an adapter", "evaluation": "an evaluation", "export": "an export", "quantized":
            "a quantized model", "gguf": "a GGUF model", "model": "a model"}.get(kind, kind)


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

