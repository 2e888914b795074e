"""Output folders written atomically and safely, and the ``ftsdk.json`` manifest beside every output.

Every command that writes an output folder goes through :func:`write_output` (claimed early with
:func:`claim_output` when expensive work comes first): one lock per output (:mod:`ftsdk.locks`), the
leftovers of killed writers cleaned, overlaps with the inputs refused, the new folder swapped in only once
complete, and a manifest whose common fields (kind, ftsdk version, created, library versions) are written
here; each command adds only its own facts (and its model card).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ftsdk.locks import hold_lock, lock_file_for
from ftsdk.plugin.errors import ConfigError, OutputExistsError

MANIFEST_NAME = "ftsdk.json"
#: the distributions whose installed versions every manifest (and a checkpoint's fingerprint) records
LIBRARIES = ("ftsdk", "torch", "safetensors", "transformers", "tokenizers", "datasets", "peft", "trl", "accelerate",
             "deepspeed", "bitsandbytes", "gguf", "llama_cpp_python", "gptqmodel", "autoawq", "rouge-score",
             "jsonschema")
Inputs = Iterable[tuple[str, "str | Path | None"]]


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


def check_overlap(target: str | Path, inputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse an output folder that is, holds or lies inside one of ``inputs`` (``(label, path)`` pairs).

    Writing there would overwrite or delete an input (``--overwrite`` removes the old output), or change it
    while it is read. Inputs that are not local paths (hub ids, aliases, None) are skipped.
    """
    out = Path(os.path.abspath(target))
    for label, path in inputs:
        if path is None or not Path(path).expanduser().exists():
            continue
        source = Path(os.path.abspath(Path(path).expanduser()))
        for a, b in ((out, source), (out.resolve(), source.resolve())):
            if a == b or b in a.parents or a in b.parents:
                where = "is" if a == b else "lies inside" if b in a.parents else "holds"
                raise ConfigError(
                    f"the output folder {target} {where} the {label} ({path}): writing there would overwrite or "
                    "delete an input",
                    hint="write the output to a folder that neither holds nor lies inside any input",
                )


def child_path(folder: str | Path, name: str, what: str) -> Path:
    """``folder / name``, refusing a ``name`` that is not one plain file name (so the path stays inside ``folder``)."""
    plain = bool(name) and not name.startswith(".") and Path(name).name == name and not any(c in name for c in "/\\\0")
    path = Path(folder) / name
    if not plain or Path(os.path.abspath(path)).parent != Path(os.path.abspath(folder)):
        raise ConfigError(f"{what} {name!r} is not a plain file name: it would write outside {folder}",
                          hint="use letters, digits, '.', '_' and '-' only, not starting with '.'")
    return path


@contextlib.contextmanager
def claim_output(
    target: str | Path, *, overwrite: bool = False, inputs: Iterable[tuple[str, str | Path | None]] = ()
) -> Iterator[Path]:
    """Hold ``target`` for a writer from its first check to its last write; yield it.

    Takes the output's lock (:class:`~ftsdk.plugin.errors.OutputInUseError` if a live process holds it), finishes
    what a killed writer left beside it (:func:`clean_leftovers`), refuses an overlap with ``inputs``
    (:func:`check_overlap`) and a non-empty folder unless ``overwrite``. Call it before expensive work, so a
    second writer fails at once; :func:`atomic_output_dir` inside it reuses the lock.
    """
    if _inside_atomic_write(target):  # the folder an outer atomic_output_dir made: its writer holds the lock
        check_overlap(target, inputs)
        yield check_output_dir(target, overwrite)
        return
    with hold_lock(lock_file_for(target), target) as first:
        if first:
            clean_leftovers(target)
        check_overlap(target, inputs)
        yield check_output_dir(target, overwrite)


@contextlib.contextmanager
def atomic_output_dir(
    target: str | Path, *, overwrite: bool = False, inputs: Iterable[tuple[str, str | Path | None]] = ()
) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; put it in place only if the block succeeds.

    Nothing half-written is ever left at ``target``: on error the temporary folder is removed. An existing
    output stays in place until the new one is complete, then the two are exchanged (see :func:`_swap_in`).
    The output is claimed (:func:`claim_output`: locked, leftovers cleaned, overlaps refused) throughout.
    Given the temporary folder of an enclosing atomic write, the block writes straight into it.
    """
    with claim_output(target, overwrite=overwrite, inputs=inputs) as target:
        if _inside_atomic_write(target):
            try:
                yield target
            except BaseException:
                for child in list(target.iterdir()):
                    _remove(child)
                raise
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        _writing.add(os.path.abspath(tmp))
        try:
            yield tmp
            _swap_in(tmp, target)
        except BaseException:
            if tmp.exists():
                _remove(tmp)
            raise
        finally:
            _writing.discard(os.path.abspath(tmp))


def clean_leftovers(target: str | Path) -> list[Path]:
    """Remove what killed writers of ``target`` left beside it; return what was removed or restored.

    That is their temporary folders (``.NAME.tmp-*``) and files named after them (e.g. the GGUF quantizer's
    ``.NAME.tmp-*.gguf-intermediate-*``). An old output moved aside (``.NAME.old-*``) is put back when
    ``target`` is missing (the writer died between moving it and moving the new one in), else removed.
    Only call it while holding the output's lock, so no live writer owns them.
    """
    target = Path(os.path.abspath(target))
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-[0-9a-f]{{8}}($|\.)")
    found = sorted(p for p in target.parent.iterdir() if pattern.match(p.name))
    removed = []
    for path in found:
        match = pattern.match(path.name)
        if match and match[1] == "old" and not match[2] and not os.path.lexists(target):
            path.rename(target)
            print(f"ftsdk: restored {target} from {path.name}, left by a writer stopped while replacing it",
                  file=sys.stderr)
        else:
            _remove(path)
            removed.append(path.name)
    if removed:
        print(f"ftsdk: removed {len(removed)} leftover(s) of an interrupted write of {target}: {', '.join(removed)}",
              file=sys.stderr)
    return found


#: temporary folders of the atomic writes in progress in this process
_writing: set[str] = set()


def _inside_atomic_write(target: str | Path) -> bool:
    return os.path.abspath(target) in _writing


def _swap_in(tmp: Path, target: Path) -> None:
    """Put ``tmp`` at ``target``; an existing ``target`` stays in place until ``tmp`` is in, then is removed.

    On Linux the two are exchanged in one step (``renameat2(RENAME_EXCHANGE)``), so some complete output is
    always at ``target``. Elsewhere the old one is moved aside first and put back if the new one cannot go
    in; a writer killed between the two moves leaves it as ``.NAME.old-*``, which the next writer puts back.
    """
    if not target.exists() and not target.is_symlink():
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):
        _remove(tmp)  # now the old output
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(old)
    try:
        os.replace(tmp, target)
    except BaseException:
        old.rename(target)
        raise
    _remove(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2; False where the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _remove(path: Path) -> None:
    """Delete a folder tree, a file or a link (never what a link points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


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
    """Installed versions of the named distributions (default :data:`LIBRARIES`; those not installed are left out)."""
    import importlib.metadata as metadata

    versions = {}
    for name in names or LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def manifest_header(kind: str, created: datetime | None = None) -> dict[str, Any]:
    """The fields every manifest starts with: ftsdk's version, when it was created (default now), what it holds."""
    from ftsdk import __version__

    when = created or datetime.now(timezone.utc)
    return {"ftsdk_version": __version__, "created": when.isoformat(timespec="seconds"), "kind": kind}


def producer(kind: str, plugin: Any, **dump: Any) -> dict[str, Any]:
    """The manifest's record of the ``kind`` plugin that produced an output: name, distribution, version, config."""
    from ftsdk.plugin import registry

    info = registry.get(kind, plugin.name)
    return {"name": plugin.name, "distribution": info.distribution, "version": info.version,
            "config": plugin.config.model_dump(mode="json", **dump)}


@dataclass
class Output:
    """An output being written by :func:`write_output`: write files into ``folder``, facts into ``manifest``."""

    #: the temporary folder that becomes the output once the block succeeds
    folder: Path
    #: the manifest: :func:`manifest_header` and library versions; each command adds its facts; written at the end
    manifest: dict[str, Any]
    #: renders ``README.md`` (the model card) from the finished manifest; None writes none
    card: Callable[[dict[str, Any]], str] | None = None

    def plot_losses(self, log_history: list[dict[str, Any]], title: str) -> None:
        """Draw ``loss.png`` from a trainer's log history; record it in the manifest (None when nothing was logged)."""
        from ftsdk.training.report import plot_losses

        plotted = plot_losses(log_history, self.folder / "loss.png", title=title)
        self.manifest["loss_plot"] = "loss.png" if plotted is not None else None


@contextlib.contextmanager
def write_output(
    target: str | Path, *, kind: str, overwrite: bool = False, inputs: Inputs = (),
    card: Callable[[dict[str, Any]], str] | None = None, libraries: bool = True,
) -> Iterator[Output]:
    """Write an output folder atomically (:func:`atomic_output_dir`): yield an :class:`Output` to fill.

    The manifest starts with :func:`manifest_header` and the installed :data:`LIBRARIES` (unless
    ``libraries=False``). When the block succeeds it is written as ``ftsdk.json``, the model card ``card``
    renders (if any) becomes ``README.md``, and the folder is swapped in; on error nothing is left at ``target``.
    """
    with atomic_output_dir(target, overwrite=overwrite, inputs=inputs) as tmp:
        manifest = manifest_header(kind) | ({"libraries": library_versions()} if libraries else {})
        output = Output(tmp, manifest, card)
        yield output
        write_manifest(tmp, output.manifest)
        if output.card is not None:
            (tmp / "README.md").write_text(output.card(output.manifest), encoding="utf-8")
