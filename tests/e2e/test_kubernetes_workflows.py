"""Kubernetes among the other backends, and pods that go away under a running script: a workflow chained
through buckets across the local, Kubernetes and Slurm backends; a pod evicted through the Eviction API
and a pod deleted from outside (what a lost node looks like to Conveyor) are retried and say why."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from conveyor.backends.kubernetes import manifest
from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState
from tests.conftest import PlatformFactory
from tests.support.kubernetes import BUSYBOX, Kubernetes
from tests.support.platform import keys_under, put_text, read_text, service, wait_for_jobs
from tests.support.slurm import Slurm

pytestmark = pytest.mark.e2e

SLURM_FAST = {"poll_interval_s": 0.5, "forget_after_s": 3.0, "time_margin_s": 60}


def _batch(cluster: Kubernetes) -> client.BatchV1Api:
    return client.BatchV1Api(config.new_client_from_config(str(cluster.kubeconfig)))


def _core(cluster: Kubernetes) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))


def _running_pod(core: client.CoreV1Api, service_name: str, timeout_s: float = 90.0) -> Any:
    """The service's pod once its script container runs (stage-in is done)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod("default", label_selector=f"{manifest.SERVICE_LABEL}={service_name}").items
        for pod in pods:
            states = {s.name: s.state for s in pod.status.container_statuses or []}
            script = states.get(manifest.SCRIPT_CONTAINER)
            if pod.metadata.deletion_timestamp is None and script is not None and script.running is not None:
                return pod
        time.sleep(0.1)
    raise AssertionError(f"no pod of {service_name} ran its script within {timeout_s} s")


WHERE = 'echo "where: kubernetes=${KUBERNETES_SERVICE_HOST:-none}"'
"""The kubelet sets KUBERNETES_SERVICE_HOST in every pod; the local and Slurm runners give a script a small
environment of their own (SLURM_JOB_ID is not in it)."""
OUT = '"$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'

FILES = {
    "a.txt": b"hello conveyor\nsecond line\n",
    "b c.txt": "caf\u00e9 na\u00efve \u00fcber 42\n".encode(),
    "d.txt": b"x\n\ny z\n",
}


def _through_the_chain(data: bytes) -> bytes:
    """local: upper-case ASCII; Kubernetes: `k8s:` before each line; Slurm: `;slurm` after each line."""
    upper = bytes(c - 32 if 97 <= c <= 122 else c for c in data)
    return b"".join(b"k8s:" + line + b";slurm\n" for line in upper.splitlines())


def test_a_workflow_chains_a_local_a_kubernetes_and_a_slurm_service_through_buckets(
    kubernetes: Kubernetes, slurm: Slurm, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), slurm=SLURM_FAST)
    services = [
        service("mix-local", f'tr a-z A-Z < "$INPUT_FILE_PATH" > {OUT}; {WHERE}', ["mix/in"], ["mix/upper"]),
        service(
            "mix-k8s",
            f"sed 's/^/k8s:/' < \"$INPUT_FILE_PATH\" > {OUT}; {WHERE}",
            ["mix/upper"],
            ["mix/tagged"],
            image=BUSYBOX,
            backend="kubernetes",
        ),
        service(
            "mix-slurm",
            f"sed 's/$/;slurm/' < \"$INPUT_FILE_PATH\" > {OUT}; {WHERE}",
            ["mix/tagged"],
            ["mix/out"],
            backend="slurm",
        ),
    ]
    platform.catalog.apply(services)
    started = time.monotonic()
    for name, data in FILES.items():
        platform.storage.default.put_bytes(ObjectRef.parse(f"mix/in/{name}"), data)

    jobs = {
        name: wait_for_jobs(platform, name, len(FILES), timeout_s=180) for name in ("mix-local", "mix-k8s", "mix-slurm")
    }
    print(f"{len(FILES)} files through local, Kubernetes and Slurm: {time.monotonic() - started:.1f} s")

    logs = {
        name: {job.job_id: platform.jobs.read_log(name, job.job_id) or "" for job in records}
        for name, records in jobs.items()
    }
    for name, records in jobs.items():
        assert [job.state for job in records] == [JobState.SUCCEEDED] * len(FILES), logs[name]
        assert sorted(job.trigger.ref.key.rsplit("/", 1)[1] for job in records if job.trigger) == sorted(FILES)
    # Where each job ran, as the clusters themselves recorded it: Slurm names its jobs conveyor.<job>.<attempt>
    # (squeue keeps finished ones for MinJobAge), each Kubernetes Job carries the job id in an annotation.
    in_slurm = {name: state for _, name, state in slurm.queue()}
    in_kubernetes = {
        (j.metadata.annotations or {}).get(manifest.JOB_ID_ANNOTATION): j.metadata.name
        for j in _batch(kubernetes).list_namespaced_job("default", label_selector=manifest.SELECTOR).items
    }
    for name, records in jobs.items():
        for job in records:
            log = logs[name][job.job_id]
            slurm_state = in_slurm.get(f"conveyor.{job.job_id}.{job.attempt}")
            kube_job = in_kubernetes.get(job.job_id)
            if name == "mix-local":
                assert slurm_state is None and kube_job is None, (slurm_state, kube_job)
                assert "where: kubernetes=none" in log and "Kubernetes Job" not in log, log
            elif name == "mix-k8s":
                assert slurm_state is None and kube_job is not None, (slurm_state, kube_job)
                assert f"ran as Kubernetes Job {kube_job}" in log, log
                assert re.search(r"where: kubernetes=\S*\d", log), log
            else:
                assert slurm_state == "COMPLETED" and kube_job is None, (slurm_state, kube_job, in_slurm)
                assert "where: kubernetes=none" in log and "Kubernetes Job" not in log, log
    for index, (name, data) in enumerate(FILES.items()):
        target = tmp_path / f"out-{index}"
        platform.storage.default.download(ObjectRef.parse(f"mix/out/{name}"), target)
        assert target.read_bytes() == _through_the_chain(data), name
    assert keys_under(platform, "mix/out") == sorted(f"out/{name}" for name in FILES)


# The first attempt is stopped while it sleeps; the second sleeps as long and succeeds.
NAP_THEN_COPY = 'echo "script started"; sleep 6; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"; echo copied'


def test_an_evicted_pod_is_retried_and_the_log_says_it_was_evicted(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    platform.catalog.apply([service("evicted", NAP_THEN_COPY, ["k8sevict/in"], ["k8sevict/out"], image=BUSYBOX)])
    put_text(platform, "k8sevict/in/a.txt", "evict me")
    core = _core(kubernetes)
    pod = _running_pod(core, "evicted")

    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace="default"))
    core.create_namespaced_pod_eviction(pod.metadata.name, "default", eviction)

    [job] = wait_for_jobs(platform, "evicted", 1, timeout_s=120)
    log = platform.jobs.read_log("evicted", job.job_id) or ""
    assert job.state == JobState.SUCCEEDED, log
    assert job.attempt == 2, log
    assert read_text(platform, "k8sevict/out/a.txt", tmp_path) == "evict me"
    first_attempt = log.split("(attempt 2)")[0]
    assert "script started" in first_attempt, "evicted while its script ran"
    assert f"pod {pod.metadata.name} was evicted (EvictionByEvictionAPI" in first_attempt, log


@pytest.mark.parametrize("grace_s", [None, 0], ids=["graceful", "forced"])
def test_a_pod_deleted_from_outside_is_retried_and_the_log_says_so(
    kubernetes: Kubernetes, make_platform: PlatformFactory, grace_s: int | None
) -> None:
    """A forced delete is what the pod garbage collector does to the pods of a node that is gone."""
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    name = f"vanished-{'forced' if grace_s == 0 else 'graceful'}"
    bucket = f"k8s{name.replace('-', '')}"
    platform.catalog.apply([service(name, NAP_THEN_COPY, [f"{bucket}/in"], [f"{bucket}/out"], image=BUSYBOX)])
    put_text(platform, f"{bucket}/in/a.txt", "delete my pod")
    core = _core(kubernetes)
    pod = _running_pod(core, name)

    core.delete_namespaced_pod(pod.metadata.name, "default", grace_period_seconds=grace_s)

    [job] = wait_for_jobs(platform, name, 1, timeout_s=120)
    log = platform.jobs.read_log(name, job.job_id) or ""
    assert job.state == JobState.SUCCEEDED, log
    assert job.attempt == 2, log
    assert keys_under(platform, f"{bucket}/out") == ["out/a.txt"]
    first_attempt = log.split("(attempt 2)")[0]
    if grace_s is None:  # a forced delete takes the pod's logs with it
        assert "script started" in first_attempt, "deleted while its script ran"
    assert (
        f"pod {pod.metadata.name} was deleted outside Conveyor" in first_attempt
        or "its pod is gone: deleted outside Conveyor, or its node was lost" in first_attempt
    ), log
