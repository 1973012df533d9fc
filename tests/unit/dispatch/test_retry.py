"""RetryPolicy: which failures are tried again, when an attempt is the last, and how long each waits."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.dispatch.retry import Decision, RetryPolicy
from conveyor.model.job import Failure, JobOutcome, JobState
from conveyor.model.service import Service

POLICY = RetryPolicy(base_s=2.0, max_s=300.0)


def service(**fields: Any) -> Service:
    return Service.model_validate({"name": "svc", "image": "busybox", "script": "true", **fields})


def failed(failure: Failure | None, state: JobState = JobState.FAILED) -> JobOutcome:
    return JobOutcome(state=state, failure=failure)


@pytest.mark.parametrize(
    ("outcome", "fields", "attempt", "decision"),
    [
        (JobOutcome(state=JobState.SUCCEEDED), {}, 1, Decision.FINISH),
        (failed("infrastructure", JobState.CANCELLED), {}, 1, Decision.FINISH),
        (failed(None), {}, 1, Decision.FINISH),
        (failed("infrastructure"), {"retries": 2}, 1, Decision.RETRY),
        (failed("infrastructure"), {"retries": 2}, 2, Decision.RETRY),
        (failed("infrastructure"), {"retries": 2}, 3, Decision.DEAD),
        (failed("infrastructure"), {"retries": 0}, 1, Decision.DEAD),
        (failed("input"), {"retries": 5, "retry_script_failures": True}, 1, Decision.FINISH),
        (failed("script"), {"retries": 5}, 1, Decision.FINISH),
        (failed("timeout", JobState.TIMED_OUT), {"retries": 5}, 1, Decision.FINISH),
        (failed("script"), {"retries": 1, "retry_script_failures": True}, 1, Decision.RETRY),
        (failed("timeout", JobState.TIMED_OUT), {"retries": 1, "retry_script_failures": True}, 2, Decision.DEAD),
        (failed("unavailable"), {"retries": 0}, 1, Decision.WAIT),
        (failed("unavailable"), {"retries": 2}, 40, Decision.WAIT),
    ],
)
def test_decide(outcome: JobOutcome, fields: dict[str, Any], attempt: int, decision: Decision) -> None:
    assert POLICY.decide(outcome, service(**fields), attempt) == decision


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0), (9, 300.0), (40, 300.0)])
def test_the_delay_doubles_per_attempt_up_to_the_maximum_with_jitter(attempt: int, ceiling: float) -> None:
    delays = [POLICY.delay_s(attempt) for _ in range(200)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 1  # spread out, so a burst of failures does not retry in step
