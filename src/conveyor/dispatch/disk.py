"""A full disk under the data directory, and the jobs that wait for room instead of failing.

Everything Conveyor keeps lives under the data directory: the ledger, the embedded store's data, the
jobs' work directories and logs. On a full disk the store refuses uploads (500), events cannot be
recorded, and every job fails within a second (stage-in, its script's output, its log); so jobs start
only while the disk has room, and a failure the disk explains is no attempt:

    dispatcher, each round ─▶ holding()? ─ less than `dispatch.min_free_mb` free (os.statvfs, read
        at most every CACHE_S) ─▶ no job starts; readiness names the disk
    a job ended ─▶ judge(outcome): a failure of the job or its script while the disk is low, or one
        that ran out of space (ENOSPC) ─▶ failure `unavailable`, waiting for DISK: queued again at the
        same attempt, however long it lasts; never a dead letter
    watcher thread, every PROBE_S ─▶ low: listeners are told (`conveyor up` prints it) ─▶ room again
        (RESUME_MARGIN above the threshold, so that a disk at the edge does not flap): listeners are
        told (jobs resume, a reconciliation round looks for uploads whose event could not be recorded)

A job that ran out of space but ends with the disk above the threshold (its own files filled it, and
went with its work directory; or the disk that filled is another one: an engine's, Slurm's scratch)
is an ordinary failure, retried and then kept as a dead letter: waiting would run it out of space
for ever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from conveyor.listeners import Listeners
from conveyor.model.job import DISK, JobOutcome, JobState

log = logging.getLogger(__name__)

MB = 2**20
CACHE_S = 0.25
"""How long a reading of the free space serves the dispatcher's rounds and readiness."""
PROBE_S = 1.0
"""How often the watcher reads it: a disk that fills or empties is noticed within this."""
RESUME_MARGIN = 1 / 8
"""A low disk is back once it has this much more than the threshold free."""


@dataclass(frozen=True)
class LowDisk:
    path: Path
    free_bytes: int
    needed_bytes: int
    since: float
    """time.monotonic() when the disk was first seen low."""

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.since

    @property
    def free(self) -> str:
        """`12 MB`"""
        return _mb(self.free_bytes)

    @property
    def state(self) -> str:
        """`the data directory /x has 12 MB free (needs 64 MB)`"""
        return f"the data directory {self.path} has {self.free} free (needs {_mb(self.needed_bytes)})"

    @property
    def reason(self) -> str:
        """What readiness and `conveyor up` say."""
        return f"{self.state}; jobs wait"


Listener = Callable[[LowDisk], None]


class DiskGate:
    def __init__(
        self,
        path: Path,
        min_free_mb: int,
        *,
        cache_s: float = CACHE_S,
        probe_s: float = PROBE_S,
        free_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.path = path
        self.needed_bytes = max(min_free_mb * MB, 1)
        """Below this, no job starts (0 MB in the settings: only a disk with nothing left holds them)."""
        self._resume_bytes = self.needed_bytes + int(self.needed_bytes * RESUME_MARGIN)
        self._cache_s = cache_s
        self._probe_s = probe_s
        self._free_bytes = free_bytes or free_bytes_under
        self._low: LowDisk | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self._started = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_low: Listeners[LowDisk] = Listeners("the disk gate")
        self._on_back: Listeners[LowDisk] = Listeners("the disk gate")

    def on_low(self, listener: Listener) -> None:
        self._on_low.add(listener)

    def on_back(self, listener: Listener) -> None:
        """Called when the disk has room again, with the episode (how long it lasted, what is free now)."""
        self._on_back.add(listener)

    # ---- what the dispatcher and readiness ask ----------------------------------------------

    def holding(self) -> str | None:
        """Why no job may start now (the disk is low), or None. A statvfs at most every CACHE_S."""
        low = self.check(max_age_s=self._cache_s)
        return low.reason if low is not None else None

    def check(self, max_age_s: float = 0.0) -> LowDisk | None:
        """The disk's state, read again unless the last reading is younger than `max_age_s`."""
        now = time.monotonic()
        if now - self._checked_at < max_age_s:
            return self._low
        try:
            free = self._free_bytes(self.path)
        except OSError as error:  # the directory is gone or unreadable: other parts say so; keep what was known
            log.debug("the free space under %s cannot be read: %s", self.path, error)
            return self._low
        return self._observe(free, now)

    def judge(self, outcome: JobOutcome) -> JobOutcome:
        """The outcome to record: a failure the disk explains waits for it (see the module's docstring);
        a batch's outcome is judged for each of its jobs."""
        if outcome.members:
            members = {job_id: self.judge(own) for job_id, own in outcome.members.items()}
            outcome = outcome.model_copy(update={"members": members})
        ran_out = outcome.waiting_for == DISK
        failed = outcome.state == JobState.FAILED and outcome.failure in ("infrastructure", "script")
        if not (ran_out or failed):
            return outcome
        low = self.check()
        if low is not None:
            message = f"{outcome.message}; {low.state}"
            return outcome.model_copy(update={"failure": "unavailable", "waiting_for": DISK, "message": message})
        if ran_out:
            message = (
                f"{outcome.message}; the disk had no space left while it ran, but has room again: "
                "the job may need more space than the disk has"
            )
            return outcome.model_copy(update={"failure": "infrastructure", "waiting_for": None, "message": message})
        return outcome

    # ---- watching -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listeners hear from now on; a disk already low is announced at once."""
        with self._lock:
            self._started = True
            already = self._low
        low = self.check()
        if already is not None and low is not None:  # it went low before anyone listened
            self._on_low.tell(low)
        self._thread = threading.Thread(target=self._watch, name="disk-gate", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _watch(self) -> None:
        while not self._stopping.wait(self._probe_s):
            self.check()

    def _observe(self, free: int, now: float) -> LowDisk | None:
        with self._lock:
            self._checked_at = now
            was = self._low
            if was is None:
                low = LowDisk(self.path, free, self.needed_bytes, since=now) if free < self.needed_bytes else None
            else:
                low = None if free >= self._resume_bytes else replace(was, free_bytes=free)
            self._low = low
            started = self._started
        if started and was is None and low is not None:
            self._on_low.tell(low)
        elif started and was is not None and low is None:
            self._on_back.tell(replace(was, free_bytes=free))
        return low


def free_bytes_under(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem that holds `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _mb(size: int) -> str:
    return f"{size / MB:,.0f} MB"
