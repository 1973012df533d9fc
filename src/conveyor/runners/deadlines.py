"""Job timeouts on one thread: a `threading.Timer` per job starts a thread per job (~1 ms of CPU
and a GIL round trip each); one watcher with a heap of deadlines costs a push and a notify."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Deadline:
    def __init__(self, when: float, action: Callable[[], None]) -> None:
        self.when, self.action, self.cancelled = when, action, False

    def cancel(self) -> None:
        self.cancelled = True


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, action: Callable[[], None]) -> Deadline:
        """Run `action` on the watcher thread in `seconds`, unless the deadline is cancelled first."""
        deadline = Deadline(time.monotonic() + seconds, action)
        with self._wake:
            heapq.heappush(self._heap, (deadline.when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="job-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:
                self._wake.notify()
        return deadline

    def _watch(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                _, _, due = heapq.heappop(self._heap)
            if not due.cancelled:
                due.action()


DEADLINES = Deadlines()
"""Shared by every runner of this process."""
