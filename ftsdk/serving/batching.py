"""Dynamic batching: requests queue, one worker thread takes what is waiting and runs it as batches.

The worker takes the first waiting request, then whatever else arrives within ``max_wait_s`` (up to
``max_batch`` requests), splits them into groups that one ``generate`` call can serve (all greedy
rows together; sampled rows with equal temperature and top_p together; a seeded request alone, so its
seed gives the same text as it would unbatched) and hands each group to the backend's ``run``.
Each request waits for its own result only; a cancelled request stops waiting at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

from ftsdk.serving.backends.base import WAIT_POLL_S, Generation, GenerationJob


@dataclass
class Pending:
    """One queued request: the backend's ``run`` fills in :attr:`text` (or :attr:`error`) and the counts."""

    job: GenerationJob
    generation: Generation
    text: str = ""
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def batch_key(job: GenerationJob) -> Hashable:
    """Requests with equal keys can share one ``generate`` call."""
    if job.temperature <= 0:
        return ("greedy",)
    if job.seed is not None:
        return ("seeded", id(job))
    return ("sampled", job.temperature, job.top_p)


class Batcher:
    """Queue of requests and the worker thread that runs them in batches through ``run``."""

    def __init__(self, run: Callable[[list[Pending]], None], max_batch: int, max_wait_s: float) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[Pending] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._starting = threading.Lock()

    def submit(self, job: GenerationJob) -> Generation:
        """Queue ``job``; its text arrives, whole, through the returned Generation's pieces."""
        generation = Generation(pieces=iter(()))
        pending = Pending(job, generation)
        generation.pieces = self._pieces(pending)
        with self._starting:
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="ftsdk-batcher", daemon=True)
                self._worker.start()
        self._queue.put(pending)
        return generation

    def _pieces(self, pending: Pending) -> Iterator[str]:
        try:
            while not pending.done.wait(WAIT_POLL_S):
                if pending.generation.cancelled.is_set():
                    return  # a queued one is skipped; a running row stops at its next token
            if pending.error is not None:
                raise pending.error
            if pending.text:
                yield pending.text
        finally:
            pending.generation.cancelled.set()

    def _take(self) -> list[Pending]:
        """The first waiting request and those arriving within ``max_wait_s``, at most ``max_batch``."""
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            groups: dict[Hashable, list[Pending]] = {}
            for pending in self._take():
                if pending.generation.cancelled.is_set():
                    pending.done.set()
                else:
                    groups.setdefault(batch_key(pending.job), []).append(pending)
            for group in groups.values():
                try:
                    self._run(group)
                except BaseException as exc:  # noqa: BLE001 - each request re-raises it in its own thread
                    for pending in group:
                        pending.error = pending.error or exc
                finally:
                    for pending in group:
                        pending.done.set()
