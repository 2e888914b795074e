"""Validating a whole chain before any step runs: every step's checks, its inputs, its output folder.

Every problem of every step is gathered into one error, each named ``steps[i] (type 'name')``, so a typo in
the fourth step fails in a second rather than after the third step's hour.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ftsdk.artifacts import child_path
from ftsdk.chain.config import ChainConfig, StepConfig
from ftsdk.chain.fingerprints import content_hash, fingerprint, recorded
from ftsdk.chain.refs import Artifact, Context, Prepared, chain_inputs
from ftsdk.chain.steps import NOMINAL_KIND, prepare
from ftsdk.plugin.errors import ConfigError, FtsdkError

#: the file in the workdir recording how the last run ended (for ``resume``)
STATE_NAME = ".ftsdk-chain.json"
#: the lock file in the workdir a running chain holds (see ftsdk.locks)
LOCK_NAME = ".ftsdk-chain.lock"


@dataclass
class PlannedStep:
    """A checked step, its output folder and what it uses."""

    index: int
    config: StepConfig
    output: Path
    prepared: Prepared

    @property
    def label(self) -> str:
        return self.config.label(self.index)


@dataclass
class Plan:
    """A validated chain: nothing is left to check but the content of its inputs."""

    name: str
    workdir: Path
    inputs: dict[str, Artifact]
    steps: list[PlannedStep]
    #: names of the steps to rebuild even if up to date
    forced: set[str]
    _fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_NAME

    def fingerprint(self, step: PlannedStep) -> str:
        """The step's fingerprint (inputs' content hashed once per plan)."""
        if step.config.name not in self._fingerprints:
            inputs = {label: self._artifact_fingerprint(a) for label, a in step.prepared.uses.items()}
            files = [content_hash(p) for p in step.prepared.files]
            self._fingerprints[step.config.name] = fingerprint(step.config.kind, step.prepared.settings, inputs, files)
        return self._fingerprints[step.config.name]

    def _artifact_fingerprint(self, artifact: Artifact) -> str:
        if artifact.step is not None:
            return self.fingerprint(self.steps[artifact.step])
        key = f"input:{artifact.reference}"
        if key not in self._fingerprints:
            self._fingerprints[key] = f"alias:{artifact.alias}" if artifact.alias else content_hash(artifact.path)
        return self._fingerprints[key]

    def up_to_date(self, step: PlannedStep) -> bool:
        """Whether the step's output was made by this step from the same settings and inputs."""
        if step.config.name in self.forced:
            return False
        record = recorded(step.output)
        return record is not None and record.get("fingerprint") == self.fingerprint(step)

    def describe(self) -> str:
        """What a run would do, step by step."""
        lines = [f"chain '{self.name}': {len(self.steps)} step(s), all valid; workdir {self.workdir}"]
        for step in self.steps:
            if step.config.name in self.forced:
                status = "will run (forced)"
            elif self.up_to_date(step):
                status = "up to date, will be skipped"
            else:
                status = "will run" + (" (its output is out of date)" if recorded(step.output) else "")
            lines.append(f"  {step.label} -> {step.output}: {status}")
        return "\n".join(lines)


def _writable(path: Path) -> bool:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return os.access(existing, os.W_OK)


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies inside it."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _output_problems(step: StepConfig, output: Path, forced: bool, inputs: Iterable[Artifact]) -> list[str]:
    problems = []
    if not _writable(output):
        problems.append(f"output {output} cannot be written (no permission)")
    for artifact in inputs:
        if artifact.alias is None and artifact.step is None and (_inside(output, artifact.path) or
                                                                  _inside(artifact.path, output)):
            problems.append(f"output {output} overlaps the chain input '{artifact.name}' ({artifact.path})")
    if output.exists() and not output.is_dir():
        problems.append(f"output {output} is a file")
    elif output.is_dir() and any(output.iterdir()) and not forced:
        record = recorded(output)
        if record is None or record.get("step") != step.name:
            problems.append(f"output {output} holds files this step did not write; choose another output or force "
                            f"the step (--force {step.name}) to replace them")
    return problems


def make_plan(config: ChainConfig, workdir: str | Path | None = None, force: bool | Iterable[str] = False) -> Plan:
    """Check every step of ``config`` in order; raise one ConfigError listing every problem found."""
    problems: list[str] = []
    inputs, input_problems = chain_inputs(config.inputs)
    problems += input_problems
    folder = Path(workdir) if workdir is not None else config.workdir
    names = [s.name for s in config.steps]
    forced = set(names) if force is True else set(force or ())
    if not config.steps:
        problems.append("the chain has no steps")
    if folder is None and any(s.output is None for s in config.steps):
        problems.append("no workdir: set workdir (the folder of the step outputs), or every step's output")
    for unknown in sorted(forced - set(names)):
        problems.append(f"--force names no step: '{unknown}' (steps: {', '.join(names)})")
    for name in sorted(set(names) & set(inputs)):
        problems.append(f"'{name}' names both a chain input and a step")
    ctx = Context(inputs, {}, {})
    steps: list[PlannedStep] = []
    owners: dict[Path, str] = {}
    for index, step in enumerate(config.steps):
        label = step.label(index)
        if step.name in ctx.made:
            problems.append(f"{label}: another step is already named '{step.name}'")
        ctx.later = {n: i for i, n in enumerate(names) if i > index}
        output = step.output or child_path(folder or Path("."), step.name, f"{label}: the step's name")
        try:
            prepared = prepare(step, ctx)
        except FtsdkError as exc:
            problems.append(f"{label}: {exc.message}" + (f"\n    hint: {exc.hint}" if exc.hint else ""))
            prepared = None
        kind = prepared.produces if prepared else NOMINAL_KIND[step.kind]
        ctx.made.setdefault(step.name, Artifact(step.name, output, kind, step=index))
        owner = owners.setdefault(output.resolve(), label)
        if owner != label:
            problems.append(f"{label}: writes the same folder as {owner} ({output})")
        problems += [f"{label}: {p}" for p in _output_problems(step, output, step.name in forced, inputs.values())]
        if prepared is not None:
            steps.append(PlannedStep(index, step, output, prepared))
    if problems:
        raise ConfigError("the chain is invalid; nothing was run:\n  - " + "\n  - ".join(problems))
    return Plan(config.name or "chain", folder or Path("."), inputs, steps, forced)
