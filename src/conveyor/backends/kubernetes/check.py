"""`conveyor kubernetes check`: can Conveyor run its jobs in this cluster? One finding per line.

    API reachable (version) ─ namespace exists ─ RBAC allows each verb Conveyor uses ─ a probe Job's pod
    (the stager image, the pod settings) reaches the platform's API

A probe Job is created only when everything before it holds; it is deleted at the end.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

from pydantic import BaseModel

from conveyor.backends.kubernetes import connection, manifest
from conveyor.errors import BackendUnavailable
from conveyor.settings import KubernetesSettings

NEEDED = (
    ("batch", "jobs", "create"),
    ("batch", "jobs", "get"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("batch", "jobs", "delete"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods/log", "get"),
    ("", "secrets", "create"),
    ("", "secrets", "patch"),
    ("", "secrets", "delete"),
)
"""(API group, resource, verb): every call the backend makes in its namespace."""


class Finding(BaseModel):
    what: str
    ok: bool
    detail: str


class CheckReport(BaseModel):
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return all(finding.ok for finding in self.findings)


def check_cluster(config: KubernetesSettings, api_url: str | None, timeout_s: float = 120.0) -> CheckReport:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    findings: list[Finding] = []

    def note(what: str, ok: bool, detail: str) -> bool:
        findings.append(Finding(what=what, ok=ok, detail=detail))
        return ok

    try:
        api_client = connection.api_client(config)
    except BackendUnavailable as error:
        note("kubeconfig", False, str(error))
        return CheckReport(findings=findings)
    host = api_client.configuration.host
    try:
        version = client.VersionApi(api_client).get_code(_request_timeout=10).git_version
    except Exception as error:
        note("API", False, f"{host} does not answer: {error}")
        return CheckReport(findings=findings)
    note("API", True, f"{host}: Kubernetes {version}")
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    namespace = config.namespace
    missing = missing_namespace(core, namespace)
    if missing is not None:
        return _stop(findings, "namespace", missing)
    note("namespace", True, namespace)
    denied = denied_permissions(client.AuthorizationV1Api(api_client), namespace)
    if denied:
        return _stop(findings, "RBAC", denied)
    note("RBAC", True, f"{len(NEEDED)} permissions Conveyor needs in {namespace}")
    if not api_url:
        note("probe", False, "no platform API URL: start `conveyor up` or set [kubernetes] api_url")
        return CheckReport(findings=findings)
    name = f"conveyor-check-{uuid.uuid4().hex[:8]}"
    body = _probe_job(config, name, api_url)
    try:
        batch.create_namespaced_job(namespace, body, _request_timeout=30)
        note("probe", *_wait_for_probe(core, batch, namespace, name, api_url, timeout_s))
    finally:
        with contextlib.suppress(ApiException):
            batch.delete_namespaced_job(name, namespace, propagation_policy="Background", _request_timeout=30)
    return CheckReport(findings=findings)


def missing_namespace(core: Any, namespace: str) -> str | None:
    """What to do when the namespace does not exist; None when it does (or may: not readable)."""
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespace(namespace, _request_timeout=10)
    except ApiException as error:
        if error.status == 404:
            return f"{namespace} does not exist: kubectl create namespace {namespace}"
    return None


def denied_permissions(authorization: Any, namespace: str) -> str | None:
    """The permissions Conveyor needs in the namespace (NEEDED) that its account lacks, in words; None
    when it has them all."""
    denied = []
    for group, resource, verb in NEEDED:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {"namespace": namespace, "group": group, "resource": resource, "verb": verb}
            },
        }
        answer = authorization.create_self_subject_access_review(review, _request_timeout=10)
        if not answer.status.allowed:
            denied.append(f"{verb} {resource}" + (f".{group}" if group else ""))
    return f"not allowed in {namespace}: {', '.join(denied)}" if denied else None


def _stop(findings: list[Finding], what: str, detail: str) -> CheckReport:
    findings.append(Finding(what=what, ok=False, detail=detail))
    return CheckReport(findings=findings)


def _probe_job(config: KubernetesSettings, name: str, api_url: str) -> dict[str, Any]:
    pull = {"imagePullPolicy": config.image_pull_policy} if config.image_pull_policy else {}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostNetwork": config.host_network,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "containers": [
            {
                "name": "probe",
                "image": config.stager_image,
                "command": ["/bin/sh", "-c", 'wget -q -O - "$URL/health" && echo " <- $URL/health"'],
                "env": [{"name": "URL", "value": api_url.rstrip("/")}],
                **pull,
            }
        ],
    }
    pod.update(manifest.placement(config))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"conveyor.check": "probe"}},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 60, "template": {"spec": pod}},
    }


def _wait_for_probe(
    core: Any, batch: Any, namespace: str, name: str, api_url: str, timeout_s: float
) -> tuple[bool, str]:
    """(ok, detail) once the probe's pod ended, or what kept it from running."""
    deadline = time.monotonic() + timeout_s
    last = "no pod yet"
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={name}", _request_timeout=10).items
        for pod in pods:
            for status in pod.status.container_statuses or []:
                state = status.state
                if state.terminated is not None:
                    output = core.read_namespaced_pod_log(pod.metadata.name, namespace, _request_timeout=10).strip()
                    if state.terminated.exit_code == 0:
                        return True, f"a pod with {status.image} reached {api_url}"
                    return False, f"a pod could not reach {api_url}/health: {output or state.terminated.reason}"
                if state.waiting is not None and state.waiting.reason in ("ErrImageNeverPull", "ImagePullBackOff"):
                    return False, f"the stager image cannot start: {state.waiting.reason}: {state.waiting.message}"
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.status == "False":
                    last = f"unschedulable: {condition.message}"
        time.sleep(0.5)
    return False, f"the probe pod did not end within {timeout_s:g} s ({last})"
