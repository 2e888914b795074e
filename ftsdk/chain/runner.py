"""Running a validated chain: skip what is up to date, write each output atomically with its lineage, report."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftsdk.artifacts import (
    MANIFEST_NAME,
    atomic_output_dir,
    read_manifest,
    write_manifest,
)
from ftsdk.chain.fingerprints import RECORD_KEY, recorded
from ftsdk.chain.plan import LOCK_NAME, Plan, PlannedStep
from ftsdk.chain.refs import MODEL_KINDS
from ftsdk.locks import hold_lock
from ftsdk.plugin.errors import ConfigError
from ftsdk.quantizing.run import file_sizes, human_size


@dataclass
class ChainResult:
    """What a chain run left: each step's output folder, which steps ran, and the artifacts table."""

    outputs: dict[str, Path]
    ran: list[str]
    skipped: list[str]
    #: per model artifact: kind, size and the quality figures measured of it
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def table(self) -> str:
        """The artifacts as a text table: size and perplexity (with its change against the reference)."""
        header = ("artifact", "kind", "size", "perplexity", "vs reference", "folder")
        rows = [header]
        for name, info in self.artifacts.items():
            ppl = info.get("perplexity")
            delta = info.get("vs_reference")
            rows.append((name, info["kind"], human_size(info["size_bytes"]),
                         f"{ppl:.4f}" if ppl is not None else "-",
                         f"{delta:+.3%} ({info['reference']})" if delta is not None else "-", str(self.outputs[name])))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _write_state(plan: Plan, **state: Any) -> None:
    plan.workdir.mkdir(parents=True, exist_ok=True)
    state["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    plan.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def _check_resume(plan: Plan) -> None:
    """Refuse a resume with nothing to resume: only a run that failed, or that died (killed) while running."""
    if not plan.state_file.is_file():
        raise ConfigError(f"nothing to resume: no chain has run in {plan.workdir}", hint="run it without --resume")
    state = json.loads(plan.state_file.read_text(encoding="utf-8"))
    if state.get("status") == "running":  # we hold the workdir's lock, so the run that wrote this is gone
        print(f"resuming chain '{plan.name}' at {state.get('step')}, where an earlier run (PID {state.get('pid')}) "
              "stopped without finishing")
        return
    if state.get("status") != "failed":
        raise ConfigError(f"nothing to resume: the last run in {plan.workdir} ended '{state.get('status')}'",
                          hint="run it without --resume (up-to-date steps are skipped anyway)")
    print(f"resuming chain '{plan.name}' at {state['failed_step']}, which failed: {state['error']}")


def _run_step(plan: Plan, step: PlannedStep) -> None:
    """Run one step into a temporary folder; add the chain's record to its manifest; move it into place."""
    with atomic_output_dir(step.output, overwrite=True) as folder:
        step.prepared.run(folder)
        manifest = read_manifest(folder) if (folder / MANIFEST_NAME).is_file() else {}
        manifest[RECORD_KEY] = {
            "chain": plan.name,
            "step": step.config.name,
            "index": step.index,
            "type": step.config.kind,
            "fingerprint": plan.fingerprint(step),
            "config": step.config.model_dump(mode="json", exclude={"name", "output"}),
            "inputs": {label: {"name": a.name, "path": a.reference, "fingerprint": plan._artifact_fingerprint(a)}
                       for label, a in step.prepared.uses.items()},
        }
        write_manifest(folder, manifest)


def run_plan(plan: Plan, *, resume: bool = False) -> ChainResult:
    """Run every step that is not up to date, in order; on failure record where, so a rerun resumes there.

    The run holds the workdir's lock throughout: a second run in the same workdir fails at once
    (:class:`~ftsdk.plugin.errors.OutputInUseError`), and a run killed while running is resumable.
    """
    with hold_lock(plan.workdir / LOCK_NAME, f"chain workdir {plan.workdir}"):
        return _run_locked(plan, resume)


def _run_locked(plan: Plan, resume: bool) -> ChainResult:
    if resume:
        _check_resume(plan)
    total = len(plan.steps)
    ran, skipped = [], []
    started = time.perf_counter()
    for number, step in enumerate(plan.steps, start=1):
        prefix = f"[{number}/{total}] {step.config.kind} '{step.config.name}'"
        if plan.up_to_date(step):
            print(f"{prefix}: up to date, skipped ({step.output})")
            skipped.append(step.config.name)
            continue
        print(f"{prefix}: running -> {step.output}", flush=True)
        _write_state(plan, status="running", step=step.label, pid=os.getpid())
        step_started = time.perf_counter()
        try:
            _run_step(plan, step)
        except BaseException as exc:
            _write_state(plan, status="failed", failed_step=step.label, error=f"{type(exc).__name__}: {exc}")
            print(f"{prefix}: FAILED: {exc}\n  fix it and run the chain again (finished steps are skipped), "
                  "or resume with `ftsdk chain FILE --resume`")
            raise
        print(f"{prefix}: done in {time.perf_counter() - step_started:.1f}s")
        ran.append(step.config.name)
    _write_state(plan, status="completed", seconds=round(time.perf_counter() - started, 2))
    result = ChainResult({s.config.name: s.output for s in plan.steps}, ran, skipped, artifacts_of(plan))
    print(f"chain '{plan.name}' finished: {len(ran)} step(s) ran, {len(skipped)} skipped "
          f"in {time.perf_counter() - started:.1f}s\n{result.table()}")
    return result


def artifacts_of(plan: Plan) -> dict[str, dict[str, Any]]:
    """Every model a step made, with its size and the perplexity the last evaluation measured of it."""
    found: dict[str, dict[str, Any]] = {}
    for step in plan.steps:
        if step.prepared.produces in MODEL_KINDS:
            sizes = file_sizes(step.output)
            found[step.config.name] = {"kind": step.prepared.produces, "size_bytes": sum(sizes.values())}
    for step in plan.steps:
        if step.prepared.produces != "evaluation" or recorded(step.output) is None:
            continue
        manifest = read_manifest(step.output)
        for name, result in manifest["results"].items():
            if name in found:
                found[name].update(perplexity=result["perplexity"], vs_reference=result["vs_reference"],
                                   reference=manifest["reference"])
    return found
