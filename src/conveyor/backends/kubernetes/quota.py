"""A namespace's ResourceQuotas: a job whose pod would not fit waits in the ledger instead of failing.

    can_accept ─▶ QuotaGate.shortfall(pod usage) ─▶ the namespace's quotas (read at most every
                  REFRESH_S) ─▶ None: submit; a message: the job stays queued
    a refusal the gate did not foresee (a Job or its pod refused for "exceeded quota") ─▶ the job waits
                  (failure `unavailable`, waiting for QUOTA) and the gate reads the quotas again first

Kubernetes' quota admission raises `used` as it admits, so the quotas read here are close to what
the next admission sees. Quotas with scopes (BestEffort, Terminating, PriorityClass...) are not
modelled here: their refusals take the second path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)

REFRESH_S = 2.0
"""The quotas are read again after this long (and at once after a refusal)."""
UNREADABLE_BACKOFF_S = 5.0
"""After a refusal, when the quotas cannot be read (RBAC): how long jobs wait before trying again."""

_QUANTITY_KEYS = ("cpu", "memory", "nvidia.com/gpu")


@dataclass(frozen=True)
class Quota:
    name: str
    hard: Mapping[str, Decimal]
    used: Mapping[str, Decimal]


def parse_quantity(text: object) -> Decimal:
    from kubernetes.utils import parse_quantity as parse

    return Decimal(parse(str(text)))


Container = Mapping[str, Any]
"""A container of a pod spec, as a dict (only its `resources` matter here)."""


def pod_usage(containers: Sequence[Container], init_containers: Sequence[Container]) -> dict[str, Decimal]:
    """What one pod of a Job counts against quotas: the pod and the Job themselves, and its effective
    requests and limits (the larger of the init containers' largest and the containers' sum)."""
    usage: dict[str, Decimal] = {"pods": Decimal(1), "count/pods": Decimal(1), "count/jobs.batch": Decimal(1)}
    for kind in ("requests", "limits"):
        for key in _QUANTITY_KEYS:
            summed = sum((_amount(c, kind, key) for c in containers), Decimal(0))
            largest_init = max((_amount(c, kind, key) for c in init_containers), default=Decimal(0))
            amount = max(summed, largest_init)
            if amount:
                usage[f"{kind}.{key}"] = amount
    for key in ("cpu", "memory"):  # a bare `cpu` or `memory` in a quota means requests
        if f"requests.{key}" in usage:
            usage[key] = usage[f"requests.{key}"]
    return usage


def _amount(container: Mapping[str, Any], kind: str, key: str) -> Decimal:
    value = ((container.get("resources") or {}).get(kind) or {}).get(key)
    return parse_quantity(value) if value is not None else Decimal(0)


def shortfall(quotas: Iterable[Quota], usage: Mapping[str, Decimal]) -> str | None:
    """Why a pod with `usage` would be refused (the first quota and resource it exceeds), or None."""
    for quota in quotas:
        for resource, hard in quota.hard.items():
            wanted = usage.get(resource)
            if wanted is None:
                continue
            used = quota.used.get(resource, Decimal(0))
            if used + wanted > hard:
                return (
                    f"ResourceQuota {quota.name}: {resource} used {_show(used)} of {_show(hard)}, "
                    f"a pod of this job needs {_show(wanted)}"
                )
    return None


def _show(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


def is_quota_refusal(status: int | None, body: str | None) -> bool:
    """A 403 of quota admission ("exceeded quota: NAME, requested: ..., used: ..., limited: ...")."""
    return status == 403 and "exceeded quota" in (body or "")


class QuotaGate:
    """The namespace's quotas as last read, and whether jobs must wait for room."""

    def __init__(self, read: Callable[[], list[Quota]], clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._quotas: list[Quota] = []
        self._read_at: float | None = None
        self._readable = True
        self._held_until = 0.0
        self._refusal: str | None = None

    def shortfall(self, usage: Mapping[str, Decimal]) -> str | None:
        """None when a pod with `usage` fits the quotas; else why it must wait."""
        quotas = self._current()
        if quotas is None:  # unreadable: only a recent refusal holds jobs back
            with self._lock:
                return self._refusal if self._clock() < self._held_until else None
        return shortfall(quotas, usage)

    def admitted(self, usage: Mapping[str, Decimal]) -> None:
        """A pod of `usage` was just submitted: count it until the quotas are read again, so that a
        burst within REFRESH_S does not overrun what was read."""
        with self._lock:
            self._quotas = [_with_usage(quota, usage) for quota in self._quotas]

    def refused(self, message: str) -> None:
        """Kubernetes refused a Job or pod for quota: read the quotas again before the next submit."""
        with self._lock:
            self._read_at = None
            self._refusal = message
            self._held_until = self._clock() + UNREADABLE_BACKOFF_S

    def _current(self) -> list[Quota] | None:
        with self._lock:
            if not self._readable:
                return None
            if self._read_at is not None and self._clock() - self._read_at < REFRESH_S:
                return self._quotas
        try:
            quotas = self._read()
        except PermissionError as error:
            log.warning("ResourceQuotas cannot be read (%s): jobs are submitted until Kubernetes refuses one", error)
            with self._lock:
                self._readable = False
            return None
        except Exception as error:  # the API is down: the watch says so; keep what was read last
            log.debug("reading ResourceQuotas failed: %s", error)
            with self._lock:
                return self._quotas
        with self._lock:
            self._quotas, self._read_at = quotas, self._clock()
            return quotas


def _with_usage(quota: Quota, usage: Mapping[str, Decimal]) -> Quota:
    """`quota` with `usage` added to what it limits."""
    added = {key: quota.used.get(key, Decimal(0)) + usage[key] for key in quota.hard if key in usage}
    return Quota(quota.name, quota.hard, {**quota.used, **added})


def quotas_from_api(items: Iterable[Any]) -> list[Quota]:
    """The unscoped quotas of a ResourceQuota listing, with hard and used parsed."""
    found = []
    for item in items:
        spec, status = item.spec, item.status
        if spec is None or spec.scopes or spec.scope_selector:
            continue
        hard = (status.hard if status is not None and status.hard else None) or spec.hard or {}
        used = (status.used if status is not None else None) or {}
        found.append(
            Quota(
                name=item.metadata.name,
                hard={key: parse_quantity(value) for key, value in hard.items()},
                used={key: parse_quantity(value) for key, value in used.items()},
            )
        )
    return found
