"""Advisory locks on what a process writes: one writer per output folder (or chain workdir) at a time.

A lock is a small file held with ``fcntl.flock`` (``msvcrt.locking`` where there is no ``fcntl``, i.e. Windows).
The operating system drops the lock when its holder exits, however it exits (``kill -9`` included), so a lock
left by a dead process is simply taken over. The file records the holder's PID and start time for the error
the next writer gets; it is removed when the lock is released.

Locks are re-entrant within one thread: a writer that holds its output's lock can call another function that
takes it again (e.g. :meth:`ftsdk.Tuner.fit` holds it while training, then writes the folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from ftsdk.plugin.errors import OutputInUseError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: Windows locks a byte range; lock one byte past the holder's record so others can still read it
_WINDOWS_LOCK_OFFSET = 1 << 20
#: seconds between tries when waiting for a lock
_POLL = 0.2
_held: dict[tuple[str, int], list[int]] = {}  # (lock file, thread) -> [fd, depth]


def lock_file_for(target: str | Path) -> Path:
    """The lock file of an output folder: ``.NAME.lock`` beside it."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def hold_lock(lock_file: str | Path, what: str | Path, *, wait: bool = False) -> Iterator[bool]:
    """Hold the lock ``lock_file`` guarding ``what``; yield whether this call took it (False: already held here).

    Another live process holding it raises :class:`~ftsdk.plugin.errors.OutputInUseError` naming its PID, or with
    ``wait`` this waits until it is released.
    """
    path = os.path.abspath(lock_file)
    key = (path, threading.get_ident())
    if key in _held:
        _held[key][1] += 1
        try:
            yield False
        finally:
            _held[key][1] -= 1
        return
    fd = _acquire(path, what, wait)
    _held[key] = [fd, 1]
    try:
        yield True
    finally:
        del _held[key]
        _release(path, fd)


def holder(lock_file: str | Path) -> dict[str, object] | None:
    """What the lock file says of its holder (``pid``, ``started``), or None if it records nothing readable."""
    try:
        record = json.loads(Path(lock_file).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _acquire(path: str, what: str | Path, wait: bool) -> int:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            if wait:
                time.sleep(_POLL)
                continue
            raise _in_use(path, what)
        # its last holder may have removed the file between our open and our lock: then lock the new one
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                break
        os.close(fd)
    record = {"pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    return fd


def _in_use(path: str, what: str | Path) -> OutputInUseError:
    found = holder(path) or {}
    pid, started = found.get("pid"), found.get("started")
    who = f"PID {pid}" + (f" (started {started})" if started else "") if pid else "another process"
    if pid == os.getpid():
        who += ", this process, in another thread"
    return OutputInUseError(
        f"{what} is in use by {who}: another ftsdk run is writing it",
        hint=f"wait for that run to finish, or write elsewhere (the lock is {path}; it is released when that "
        "process exits, even if it is killed)",
    )


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt

    os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _release(path: str, fd: int) -> None:
    with contextlib.suppress(OSError):  # removed while still held, so no one can take a file about to vanish
        os.unlink(path)  # (Windows refuses to remove an open file: the stale file is then reused)
    if fcntl is None:
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    os.close(fd)  # closing drops an flock
