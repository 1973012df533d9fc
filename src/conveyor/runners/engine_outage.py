"""A container engine that stops answering under running jobs (dockerd restarted, podman's service
gone): the jobs it cut wait, none of them spends an attempt, and no job starts until it answers again.

    a call to the engine cannot connect ─▶ lost(error) ─▶ down: problem() says since when ─▶ down listeners
    prober thread, every PROBE_S: ping ─▶ an answer ─▶ tidy() (the runner's: warm containers that died
        with the engine, containers of the jobs it cut) ─▶ up listeners (the dispatcher wakes)

The engine counts as down from the first call that could not connect until a ping answers, so a job
that fails after that fails for a reason of its own.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from docker.errors import DockerException
from requests.exceptions import ChunkedEncodingError
from requests.exceptions import ConnectionError as RequestsConnectionError
from urllib3.exceptions import ProtocolError

from conveyor.errors import EngineUnreachable
from conveyor.listeners import Listeners

log = logging.getLogger(__name__)

PROBE_S = 1.0

LOST_ENGINE: tuple[type[Exception], ...] = (
    RequestsConnectionError,
    ChunkedEncodingError,
    ProtocolError,
    ConnectionError,  # a reset of a hijacked stream (an exec's output)
)
"""What the Docker SDK raises when the engine's socket is gone or closed under a call."""

Notice = Callable[[str], None]
_OS_ERROR = re.compile(r"\w+Error\(\d+, '([^']+)'\)|\[Errno \d+\] ([^'\")]+)")


class EngineOutage:
    def __init__(
        self,
        engine: str,
        ping: Callable[[], object],
        tidy: Callable[[], None],
        *,
        probe_s: float = PROBE_S,
    ) -> None:
        self._engine = engine
        self._ping = ping
        self._tidy = tidy
        self._probe_s = probe_s
        self._down_since: float | None = None
        self._reason = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._prober: threading.Thread | None = None
        self._on_down: Listeners[str] = Listeners("the container engine")
        self._on_up: Listeners[str] = Listeners("the container engine")

    def watch(self, *, down: Notice, up: Notice) -> None:
        """`down(reason)` when the engine stops answering, `up(reason)` when it is back and tidied."""
        self._on_down.add(down)
        self._on_up.add(up)

    def problem(self) -> str | None:
        down_since = self._down_since
        if down_since is None:
            return None
        return (
            f"the container engine at {self._engine} has not answered for {time.monotonic() - down_since:.0f} s "
            f"({self._reason}); jobs wait for it"
        )

    def lost(self, error: Exception) -> EngineUnreachable:
        """A call could not reach the engine: it is down from now on. Returns the error for the job."""
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
                self._reason = _short(error)
                self._prober = threading.Thread(target=self._probe_until_back, name="engine-prober", daemon=True)
                self._prober.start()
        if first:
            log.warning("the container engine at %s does not answer: %s", self._engine, self._reason)
            self._on_down.tell(f"the container engine at {self._engine} does not answer ({self._reason})")
        return EngineUnreachable(f"the container engine at {self._engine} does not answer: {_short(error)}")

    def close(self) -> None:
        self._stopping.set()
        if self._prober is not None:
            self._prober.join(5)

    def _probe_until_back(self) -> None:
        while not self._stopping.wait(self._probe_s):
            try:
                self._ping()
            except (DockerException, *LOST_ENGINE):
                continue
            try:
                self._tidy()
            except Exception:  # the engine answered: jobs must not stay held because tidying failed
                log.exception("tidying after the container engine came back failed")
            with self._lock:
                seconds = time.monotonic() - (self._down_since or time.monotonic())
                self._down_since = None
            self._on_up.tell(f"the container engine at {self._engine} answers again after {seconds:.1f} s")
            return


def _short(error: Exception) -> str:
    """The innermost reason, on one line: requests nests the OS's error two or three deep."""
    text = str(error)
    if found := _OS_ERROR.search(text):
        return found.group(1) or found.group(2)  # "No such file or directory", "Connection refused"
    return (text.splitlines() or [error.__class__.__name__])[0][:200]
