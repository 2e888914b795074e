"""Cut streamed text at the first stop sequence, holding back what could be the start of one."""

from __future__ import annotations


class StopFilter:
    """Feed text pieces as they are generated; get back the text safe to send (stop sequences excluded)."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        """The part of the text so far that can be sent; sets :attr:`stopped` once a stop sequence appears."""
        if self.stopped:
            return ""
        text = self._held + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)]
        keep = max((self._overlap(text, s) for s in self.stops), default=0)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        """What is still held back once generation has ended without a stop sequence."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    @staticmethod
    def _overlap(text: str, stop: str) -> int:
        """Length of the longest end of ``text`` that is a proper beginning of ``stop``."""
        for size in range(min(len(text), len(stop) - 1), 0, -1):
            if text.endswith(stop[:size]):
                return size
        return 0
