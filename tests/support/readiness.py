"""What a load balancer's readiness probe would have seen while a part of the platform was away."""

from __future__ import annotations

import threading
import time

import httpx


class ReadinessLog:
    """GET /ready every 50 ms in a thread: what a load balancer's probe would have seen."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.seen: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def __enter__(self) -> ReadinessLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _probe(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._stop.wait(0.05):
                try:
                    self.seen.append((time.monotonic(), client.get(self.api_url + "/ready").status_code))
                except httpx.HTTPError:
                    self.seen.append((time.monotonic(), 0))

    def ready_again_after(self, moment: float, timeout_s: float = 60) -> float:
        """Seconds from `moment` until /ready answered 200 again (after having said 503)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            after = [(t, code) for t, code in self.seen if t >= moment]
            down = next((t for t, code in after if code == 503), None)
            up = next((t for t, code in after if down is not None and t > down and code == 200), None)
            if up is not None:
                return up - moment
            time.sleep(0.05)
        raise AssertionError(f"/ready did not go 503 then 200 within {timeout_s} s: {self.seen[-20:]}")
