"""Crash-safe training checkpoints: sealed when complete, verified before use, rotated, matched to the run.

The Trainer writes ``checkpoint-N`` folders in place (adapter or weights, optimizer, scheduler, RNG states
and the trainer state with the global step). A folder only counts once ftsdk has flushed its files to disk
and written ``ftsdk-checkpoint.json`` last, atomically: a process killed mid-write leaves a folder without
that seal (or with files whose sizes differ from it), which resuming never picks. The seal also holds the
run's fingerprint (data, configs, world size, versions) so a changed run is refused instead of silently
continued with a stale step counter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsdk.plugin.errors import ConfigError

SEAL_NAME = "ftsdk-checkpoint.json"
#: the Trainer's folder names: ``checkpoint-<global step>``
_FOLDER = re.compile(r"^checkpoint-(\d+)$")
#: training settings that do not change what is trained: they may differ on resume
BENIGN_TRAINING_FIELDS = frozenset({"logging_steps", "eval_steps", "save_steps", "save_total_limit", "threads",
                                    "report_to", "run_name"})


@dataclass(frozen=True)
class Checkpoint:
    """A complete, verified checkpoint folder."""

    path: Path
    step: int
    fingerprint: dict[str, Any]


def checkpoints_dir(output_dir: str | Path) -> Path:
    """Where the checkpoints of the run writing ``output_dir`` live: ``<output_dir>.checkpoints`` beside it."""
    output_dir = Path(output_dir)
    return output_dir.parent / f"{output_dir.name}.checkpoints"


def fingerprint(
    *,
    model: Mapping[str, Any],
    adapter: Mapping[str, Any],
    objective: Mapping[str, Any],
    training: Mapping[str, Any],
    data: Mapping[str, Any],
    distributed: Mapping[str, Any] | None,
    world_size: int,
    libraries: Mapping[str, str],
) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue this run (JSON-ready)."""
    return {
        "model": dict(model),
        "adapter": dict(adapter),
        "objective": dict(objective),
        "training": {k: v for k, v in training.items() if k not in BENIGN_TRAINING_FIELDS},
        "data": dict(data),
        "distributed": dict(distributed) if distributed is not None else None,
        "world_size": world_size,
        "libraries": dict(libraries),
    }


def seal(folder: Path, step: int, run_fingerprint: Mapping[str, Any]) -> None:
    """Flush every file of a finished checkpoint to disk, then write its seal atomically (last)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SEAL_NAME):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = path.stat().st_size
    content = json.dumps({"step": step, "files": files, "fingerprint": run_fingerprint}, indent=1, default=str)
    tmp = folder / f".{SEAL_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / SEAL_NAME)
    _fsync(folder)


def verify(folder: Path) -> Checkpoint | None:
    """The checkpoint in ``folder`` if it is sealed and every sealed file is there at its size; else None."""
    match = _FOLDER.match(folder.name)
    seal_path = folder / SEAL_NAME
    if match is None or not seal_path.is_file():
        return None
    try:
        sealed = json.loads(seal_path.read_text(encoding="utf-8"))
        files: dict[str, int] = sealed["files"]
        step = int(sealed["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:  # another process may be deleting the folder
        if any((folder / name).stat().st_size != size for name, size in files.items()):
            return None
    except OSError:
        return None
    if step != int(match.group(1)) or not files:
        return None
    return Checkpoint(folder, step, sealed.get("fingerprint", {}))


def complete_checkpoints(root: Path) -> list[Checkpoint]:
    """The verified checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [verify(p) for p in root.iterdir() if p.is_dir()]
    return sorted((c for c in found if c is not None), key=lambda c: c.step)


def incomplete_folders(root: Path) -> list[Path]:
    """Checkpoint folders under ``root`` that did not verify (half-written by a killed process)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _FOLDER.match(p.name) and verify(p) is None)


def remove_incomplete(root: Path) -> list[Path]:
    """Delete the half-written checkpoint folders under ``root`` (the Trainer would write into them again)."""
    removed = incomplete_folders(root)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def rotate(root: Path, keep: int, protect: Path | None = None) -> None:
    """Delete the oldest complete checkpoints so that at most ``keep`` remain (the newest is always kept),
    never ``protect`` (the best checkpoint, which keep-best restores)."""
    complete = [c for c in complete_checkpoints(root) if protect is None or c.path.resolve() != protect.resolve()]
    for old in complete[: max(len(complete) - max(keep, 1), 0)]:
        shutil.rmtree(old.path, ignore_errors=True)


def find_checkpoint(where: str | Path) -> Checkpoint:
    """The checkpoint to resume from: ``where`` itself if it is one, else the newest complete one inside it."""
    where = Path(where)
    if not where.is_dir():
        raise ConfigError(f"no checkpoints to resume from: {where} does not exist",
                          hint="train without resume to start fresh (checkpoints need training.save_steps)")
    if _FOLDER.match(where.name):
        checkpoint = verify(where)
        if checkpoint is None:
            raise ConfigError(f"checkpoint {where} is incomplete (not sealed, or files missing or cut short)",
                              hint=f"resume from the folder that holds it ({where.parent}) to take the newest "
                              "complete one")
        return checkpoint
    complete = complete_checkpoints(where)
    if not complete:
        raise ConfigError(f"no complete checkpoint in {where}",
                          hint="train without resume to start fresh (checkpoints need training.save_steps)")
    return complete[-1]


def changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two fingerprints: ``training.learning_rate: 0.001 -> 0.002``."""
    flat_saved, flat_current = flatten(saved), flatten(current)
    lines = []
    for key in sorted(set(flat_saved) | set(flat_current)):
        before, after = flat_saved.get(key, "(absent)"), flat_current.get(key, "(absent)")
        if before != after:
            lines.append(f"{key}: {before!r} -> {after!r}")
    return lines


def check_resumable(checkpoint: Checkpoint, current: Mapping[str, Any], force: bool) -> list[str]:
    """Refuse to continue a checkpoint written by a different run, unless ``force``; return the differences."""
    differences = changes(checkpoint.fingerprint, json.loads(json.dumps(current, default=str)))
    if differences and not force:
        raise ConfigError(
            f"checkpoint {checkpoint.path} (step {checkpoint.step}) was written by a different run:\n  "
            + "\n  ".join(differences),
            hint="restore the original data and settings, train afresh with overwrite, or pass force_resume=True "
            "(--force-resume) to continue anyway",
        )
    return differences


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"a.b.c": leaf}``."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat |= flatten(item, f"{prefix}{key}.")
        return flat
    return {prefix.rstrip("."): value}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def plan_resume(
    root: Path,
    *,
    resume: bool | str | Path,
    force: bool,
    overwrite: bool,
    run_fingerprint: Mapping[str, Any],
    is_main: bool,
) -> Checkpoint | None:
    """Decide, before any model is loaded, where a run starts: the checkpoint to continue from, or None (fresh).

    ``resume``: True takes the newest complete checkpoint under ``root``; a path takes that checkpoint, or the
    newest complete one in that folder. A fresh start refuses to bury the checkpoints of an earlier run unless
    ``overwrite``. Only the main process deletes folders.
    """
    if resume is not False:
        checkpoint = find_checkpoint(root if resume is True else Path(resume))
        differences = check_resumable(checkpoint, run_fingerprint, force)
        if differences and is_main:
            import warnings

            warnings.warn(f"resuming despite {len(differences)} difference(s) (forced): " + "; ".join(differences),
                          stacklevel=3)
        if is_main:
            remove_incomplete(root)
        return checkpoint
    if complete_checkpoints(root) and not overwrite:
        raise ConfigError(
            f"{root} holds checkpoints of an earlier run of this output",
            hint="pass resume=True (ftsdk train --resume) to continue it, or overwrite=True (--overwrite) to start "
            "over and delete them",
        )
    if is_main and root.exists():
        shutil.rmtree(root)
    return None
