"""What a job's pod counts against a namespace's ResourceQuotas, and when the gate holds jobs back.
tests/e2e/test_kubernetes.py checks both against a real quota admission."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from conveyor.backends.kubernetes import manifest
from conveyor.backends.kubernetes.quota import Quota, QuotaGate, is_quota_refusal, pod_usage, shortfall
from tests.unit.backends.test_kubernetes_manifest import _spec


def _quota(name: str, hard: dict[str, str], used: dict[str, str]) -> Quota:
    from conveyor.backends.kubernetes.quota import parse_quantity

    return Quota(name, {k: parse_quantity(v) for k, v in hard.items()}, {k: parse_quantity(v) for k, v in used.items()})


def test_a_pods_usage_is_the_sum_of_its_containers_or_its_largest_init_container() -> None:
    containers = [
        {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
        {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
    ]
    init = [{"resources": {"requests": {"cpu": "2", "memory": "16Mi"}}}]

    usage = pod_usage(containers, init)

    assert usage["requests.cpu"] == usage["cpu"] == Decimal(2), "the init container needs more cpu than the rest"
    assert usage["requests.memory"] == usage["memory"] == Decimal(2**30 + 16 * 2**20)
    assert usage["limits.cpu"] == Decimal(1)
    assert usage["pods"] == usage["count/jobs.batch"] == Decimal(1)
    assert "limits.memory" not in usage


def test_a_jobs_usage_counts_its_stagers_and_its_gpu(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec.service.enable_gpu = True

    usage = manifest.quota_usage(spec)

    assert usage["requests.cpu"] == Decimal("0.5"), "the script's and the stager's requests add up to the service's"
    assert usage["limits.nvidia.com/gpu"] == Decimal(1)


def test_shortfall_names_the_quota_and_the_resource() -> None:
    quotas = [_quota("compute", {"requests.cpu": "1", "pods": "10"}, {"requests.cpu": "800m", "pods": "2"})]

    assert shortfall(quotas, {"requests.cpu": Decimal("0.2"), "pods": Decimal(1)}) is None
    why = shortfall(quotas, {"requests.cpu": Decimal("0.3"), "pods": Decimal(1)})
    assert why == "ResourceQuota compute: requests.cpu used 0.8 of 1, a pod of this job needs 0.3"
    assert shortfall(quotas, {"memory": Decimal(10**12)}) is None, "a resource the quota does not limit"


def test_quota_refusals_are_told_from_other_refusals() -> None:
    assert is_quota_refusal(403, 'jobs.batch "x" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1')
    assert not is_quota_refusal(403, 'jobs.batch is forbidden: User "x" cannot create resource "jobs"')
    assert not is_quota_refusal(422, "exceeded quota")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_gate_reads_quotas_at_most_every_refresh_and_at_once_after_a_refusal() -> None:
    clock, reads = _Clock(), []
    used = {"pods": "1"}

    def read() -> list[Quota]:
        reads.append(clock.now)
        return [_quota("pods", {"pods": "1"}, used)]

    gate = QuotaGate(read, clock)
    pod = {"pods": Decimal(1)}
    assert gate.shortfall(pod) == "ResourceQuota pods: pods used 1 of 1, a pod of this job needs 1"
    used["pods"] = "0"
    clock.now = 1.0
    assert gate.shortfall(pod) is not None, "the quotas read a second ago still hold"
    clock.now = 2.5
    assert gate.shortfall(pod) is None
    gate.refused("exceeded quota: pods")
    assert gate.shortfall(pod) is None and reads == [0.0, 2.5, 2.5], "a refusal makes the gate read again"


def test_a_gate_that_cannot_read_quotas_holds_jobs_only_briefly_after_a_refusal() -> None:
    clock = _Clock()

    def forbidden() -> list[Quota]:
        raise PermissionError("403 Forbidden: cannot list resourcequotas")

    gate = QuotaGate(forbidden, clock)
    assert gate.shortfall({"pods": Decimal(1)}) is None
    gate.refused("exceeded quota: pods")
    assert gate.shortfall({"pods": Decimal(1)}) == "exceeded quota: pods"
    clock.now = 6.0
    assert gate.shortfall({"pods": Decimal(1)}) is None


def test_the_gate_counts_what_it_admitted_until_it_reads_the_quotas_again() -> None:
    clock = _Clock()
    gate = QuotaGate(lambda: [_quota("pods", {"pods": "2"}, {"pods": "0"})], clock)
    pod = {"pods": Decimal(1)}
    assert gate.shortfall(pod) is None
    gate.admitted(pod)
    assert gate.shortfall(pod) is None
    gate.admitted(pod)
    assert gate.shortfall(pod) == "ResourceQuota pods: pods used 2 of 2, a pod of this job needs 1"
    clock.now = 3.0
    assert gate.shortfall(pod) is None, "read again: the quota's own count"
