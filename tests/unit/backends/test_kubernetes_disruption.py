"""What stopped a failed Job's pod from outside (pod_disruption): the reason the job's log gives when a pod
is evicted, preempted, deleted or lost with its node. tests/e2e/test_kubernetes_workflows.py evicts and
deletes real pods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kubernetes import client

from conveyor.backends.kubernetes.backend import pod_disruption

NAME = "conveyor-0123456789abcdef0123-1-x7k2q"


def _pod(
    conditions: list[client.V1PodCondition] | None = None,
    reason: str | None = None,
    message: str | None = None,
    deleted: bool = False,
) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=NAME, deletion_timestamp=datetime(2026, 1, 1, tzinfo=UTC) if deleted else None
        ),
        status=client.V1PodStatus(phase="Failed", conditions=conditions, reason=reason, message=message),
    )


def _target(reason: str, message: str, status: str = "True") -> client.V1PodCondition:
    return client.V1PodCondition(type="DisruptionTarget", status=status, reason=reason, message=message)


def test_an_eviction_through_the_api_says_the_pod_was_evicted() -> None:
    pod = _pod([_target("EvictionByEvictionAPI", "Eviction API: evicting")], deleted=True)

    assert pod_disruption(pod) == f"pod {NAME} was evicted (EvictionByEvictionAPI: Eviction API: evicting)"


@pytest.mark.parametrize(
    ("reason", "says"),
    [
        ("PreemptionByScheduler", "was preempted for a pod of higher priority"),
        ("DeletionByTaintManager", "was deleted because its node is not ready or unreachable"),
        ("DeletionByPodGC", "was deleted because its node is gone"),
        ("TerminationByKubelet", "was evicted by its node's kubelet"),
        ("SomethingNewer", "was disrupted"),
    ],
)
def test_each_disruption_reason_is_said_in_words(reason: str, says: str) -> None:
    assert pod_disruption(_pod([_target(reason, "why")])) == f"pod {NAME} {says} ({reason}: why)"


def test_the_kubelets_own_eviction_names_the_pressure() -> None:
    pod = _pod(reason="Evicted", message="The node was low on resource: memory.")

    assert pod_disruption(pod) == f"pod {NAME} was evicted by its node (The node was low on resource: memory.)"


def test_a_pod_deleted_from_outside_says_so() -> None:
    assert pod_disruption(_pod(deleted=True)) == f"pod {NAME} was deleted outside Conveyor"


def test_a_pod_that_is_gone_was_deleted_or_lost_with_its_node() -> None:
    assert pod_disruption(None) == "its pod is gone: deleted outside Conveyor, or its node was lost"


def test_a_pod_that_failed_on_its_own_is_no_disruption() -> None:
    ready = client.V1PodCondition(type="Ready", status="False", reason="PodFailed")

    assert pod_disruption(_pod([ready, _target("EvictionByEvictionAPI", "x", status="False")])) is None
    assert pod_disruption(client.V1Pod(metadata=client.V1ObjectMeta(name=NAME))) is None
