"""When a failed attempt is tried again, and how long it waits first."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from conveyor.model.job import JobOutcome, JobState
from conveyor.model.service import Service


class Decision(StrEnum):
    FINISH = "finish"
    """Record the outcome as it is (success, or a failure retrying cannot fix)."""
    RETRY = "retry"
    """Queue another attempt after a backoff."""
    DEAD = "dead"
    """A retryable failure on the last allowed attempt: keep it as a dead letter."""
    WAIT = "wait"
    """A store the job needs did not answer: queue the same attempt again, to start once the store
    answers. Not an attempt: however long the outage, the job does not become a dead letter."""


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 2.0
    max_s: float = 300.0

    wait_s: float = 1.0
    """Before a job that waits for a store is looked at again (the outage gate holds it after that)."""

    def decide(self, outcome: JobOutcome, service: Service, attempt: int) -> Decision:
        if outcome.state in (JobState.SUCCEEDED, JobState.CANCELLED) or outcome.failure is None:
            return Decision.FINISH
        if outcome.failure == "unavailable":
            return Decision.WAIT
        retryable = outcome.failure == "infrastructure" or (
            service.retry_script_failures and outcome.failure in ("script", "timeout")
        )
        if not retryable:
            return Decision.FINISH
        return Decision.RETRY if attempt <= service.retries else Decision.DEAD

    def delay_s(self, attempt: int) -> float:
        """Exponential in the attempt that failed, with jitter so a burst of failures spreads out."""
        ceiling = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)
