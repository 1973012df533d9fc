"""The embedded store, kept running: an exit is noticed within a second and SeaweedFS is started again
on the same ports and data, with backoff; exits in quick succession stop the restarts.

    weed exits ─▶ its output since it started is kept (seaweedfs/logs/crash-<time>.log) ─▶ down(reason)
               ─▶ restart, RESTART_BACKOFF_S apart while it fails ─▶ up(reason)
    MAX_CRASHES exits within CRASH_WINDOW_S ─▶ no more restarts ─▶ gave_up(reason): readiness says why

The watchdog decides only when to start weed again; what an outage means for jobs (they wait) is
the outage gate's business (dispatch/outages.py), which `down` and `up` feed.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from conveyor.errors import ConveyorError
from conveyor.storage.embedded import EmbeddedSeaweed

log = logging.getLogger(__name__)

POLL_S = 0.25
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
"""Seconds between failed restarts, the last repeated for as long as it takes."""
MAX_CRASHES = 5
CRASH_WINDOW_S = 600.0

Notice = Callable[[str], None]


class StoreWatchdog:
    def __init__(
        self,
        store: EmbeddedSeaweed,
        *,
        down: Notice,
        up: Notice,
        gave_up: Notice,
        poll_s: float = POLL_S,
        backoff_s: tuple[float, ...] = RESTART_BACKOFF_S,
        max_crashes: int = MAX_CRASHES,
        crash_window_s: float = CRASH_WINDOW_S,
    ) -> None:
        self._store = store
        self._down, self._up, self._gave_up = down, up, gave_up
        self._poll_s = poll_s
        self._backoff_s = backoff_s
        self._max_crashes = max_crashes
        self._crash_window_s = crash_window_s
        self._crashes: deque[float] = deque()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem: str | None = None
        """Why the store is not serving now (restarting, or given up); None while it runs."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="store-watchdog", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _watch(self) -> None:
        while not self._stopping.wait(self._poll_s):
            if self._store.is_running() or self._store.is_closed:
                continue
            try:
                if not self._recover():
                    return
            except Exception:  # the watchdog itself must not die of one bad round
                log.exception("the store's watchdog failed; it looks again")

    def _recover(self) -> bool:
        """Start the store again after it exited; False once the restarts are given up."""
        exited = time.monotonic()
        code = self._store.exit_code
        crash_log = self._store.keep_crash_log()
        self._crashes.append(exited)
        while self._crashes and exited - self._crashes[0] > self._crash_window_s:
            self._crashes.popleft()
        if len(self._crashes) >= self._max_crashes:
            self.problem = (
                f"the embedded store exited {len(self._crashes)} times within {self._crash_window_s:.0f} s "
                f"(the last with code {code}); it is not restarted again: see {crash_log}, then restart Conveyor"
            )
            self._gave_up(self.problem)
            return False
        self.problem = f"the embedded store exited with code {code}; restarting it (its output: {crash_log})"
        self._down(self.problem)
        pauses = itertools.chain(self._backoff_s, itertools.repeat(self._backoff_s[-1]))
        for attempt, pause_s in enumerate(pauses, start=1):
            if self._stopping.is_set():
                return False
            try:
                self._store.restart()
            except ConveyorError as error:
                log.warning("restarting the embedded store failed (attempt %d): %s", attempt, error)
                self.problem = f"the embedded store exited with code {code}; restart {attempt} failed: {error}"
                self._stopping.wait(pause_s)
                continue
            self.problem = None
            self._up(f"the embedded store is back after {time.monotonic() - exited:.1f} s")
            return True
        return False
