"""The Kubernetes backend: each job is one batch/v1 Job; Kubernetes schedules, Conveyor keeps the ledger.

    submit ─▶ the job opens for staging (supervisor/remote.py: a token for its pod) ─▶ create the Job
    watcher ─▶ ONE list+watch of the Jobs with Conveyor's label ─▶ a Job that ends ─▶ its pod's
               container statuses (the script's exit code) and the script's log ─▶ the job's outcome

Jobs are named from the job id and attempt (manifest.job_name), so a restarted platform finds the
Jobs it created (adopt). While the API server does not answer, nothing is concluded.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self
from urllib.parse import urlsplit

from conveyor.backends.base import Backend, BackendContext, statuses_of
from conveyor.backends.kubernetes import check, connection, manifest
from conveyor.backends.kubernetes.quota import Quota, QuotaGate, is_quota_refusal, quotas_from_api
from conveyor.errors import BackendUnavailable, SubmitError
from conveyor.model.event import ObjectInfo
from conveyor.model.job import CLUSTER, QUOTA, JobHandle, JobOutcome, JobSpec, JobState, JobStatus
from conveyor.model.service import Service
from conveyor.settings import KubernetesSettings
from conveyor.supervisor.remote import RemoteStaging
from conveyor.supervisor.run import JobLog, batch_outcome, shared_outcome

log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 30
"""A watch is opened again after this (the server ends it anyway after a while)."""
POD_WATCH_TIMEOUT_S = 5
"""The pod watch is opened again this often, so that a pod stuck without events is judged in time."""
NEVER_PULLABLE = frozenset({"ErrImageNeverPull", "InvalidImageName"})
"""Waiting reasons that no wait can cure: the job fails at once."""
PULLING = frozenset({"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError"})
"""Waiting reasons that may pass (a registry down, a Secret created late): the job fails after a bound."""
NO_POD_CHECK_S = 5.0
"""A Job without a pod this long has its events read (every this often): a quota may refuse its pod."""
REFUSAL_CACHE_S = 10.0
"""How long apply trusts what it found about the namespace and the permissions."""
DELETED_WAIT_S = 30.0
"""How long a submit waits for an earlier Job of the same name to be gone (one deleted for quota)."""


class _QuotaRefused(Exception):
    """Kubernetes refused the Job for a namespace's ResourceQuota (admission said "exceeded quota")."""


class _ApiDown(Exception):
    """The API server did not answer a submit (no connection, a timeout, a 5xx or 429)."""


@dataclass
class _PodProblem:
    since: float
    message: str
    bound_s: float


@dataclass
class _Tracked:
    spec: JobSpec
    name: str
    cancelled: bool = False
    concluding: bool = False
    outcome: JobOutcome | None = None
    created_at: float = 0.0
    has_pod: bool = False
    events_read_at: float = 0.0


class KubernetesBackend(Backend):
    name = "kubernetes"
    full_per_service = True
    runs_batches = True
    """A batch is one Job: one pod stages every input, runs the script per input (or once, mode
    `directory`) and stores each input's outputs under that input's job."""

    def __init__(self, config: KubernetesSettings, staging: RemoteStaging, api_url: str) -> None:
        super().__init__()
        api_client = connection.api_client(config)  # BackendUnavailable names what to set
        from kubernetes import client

        self.config = config
        self.staging = staging
        self.api_url = config.api_url or api_url
        self._client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        try:
            self._version = client.VersionApi(api_client).get_code(_request_timeout=10).git_version
        except Exception as error:
            raise BackendUnavailable(
                f"the Kubernetes API at {api_client.configuration.host} does not answer: {error}"
            ) from error
        self._jobs: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._api_down_since: float | None = None
        self._pod_problems: dict[str, _PodProblem] = {}
        self._ended_pods: dict[str, Any] = {}
        """The pod watch's last word on pods that ended, by job id, until their Job's end is concluded."""
        self.quota = QuotaGate(self._read_quotas)
        self._refusal: tuple[float, str | None] | None = None
        self._threads = [
            threading.Thread(target=self._watch_jobs, name="kubernetes-jobs", daemon=True),
            threading.Thread(target=self._watch_pods, name="kubernetes-pods", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @classmethod
    def create(cls, context: BackendContext) -> Self:
        if context.staging is None or context.api_url is None:
            raise BackendUnavailable("the Kubernetes backend needs the platform's API (to stage files for pods)")
        return cls(context.settings.kubernetes, context.staging, context.api_url)

    # ---- the interface -------------------------------------------------------------------

    def describe(self) -> str:
        return (
            f"kubernetes: {self._version} at {self._client.configuration.host}, namespace {self.config.namespace}; "
            f"pods stage through {self.api_url}; at most {self.config.max_pending_per_service} Jobs per service"
        )

    def notices(self) -> list[str]:
        host = urlsplit(self.api_url).hostname or ""
        if not self.config.host_network and (host in ("localhost", "::1") or host.startswith("127.")):
            return [
                f"kubernetes: pods stage through {self.api_url}, a loopback address they cannot reach: set "
                "[api] public_url or [kubernetes] api_url to an address the pods reach (or host_network = true)"
            ]
        return []

    def problem(self) -> str | None:
        down_since = self._api_down_since
        if down_since is None:
            return None
        return f"the Kubernetes API has not answered for {time.monotonic() - down_since:.0f} s; Jobs run on"

    def refusal_for(self, service: Service) -> str | None:
        """A namespace that does not exist or permissions Conveyor lacks there refuse the service at
        apply (read again after REFUSAL_CACHE_S, so a fix counts at the next apply); an API that does
        not answer refuses nothing (its jobs wait)."""
        from kubernetes import client

        with self._lock:
            cached = self._refusal
            if cached is not None and time.monotonic() - cached[0] < REFUSAL_CACHE_S:
                return cached[1]
        try:
            refusal = check.missing_namespace(self.core, self.config.namespace)
            if refusal is not None:
                refusal = f"the Kubernetes namespace {refusal}"
            else:
                denied = check.denied_permissions(client.AuthorizationV1Api(self._client), self.config.namespace)
                refusal = f"Conveyor's Kubernetes account is {denied}" if denied else None
        except Exception as error:
            log.info("could not check the Kubernetes namespace and permissions: %s", error)
            return None
        with self._lock:
            self._refusal = (time.monotonic(), refusal)
        return refusal

    def can_accept(self, job: JobSpec) -> bool:
        with self._lock:
            mine = sum(1 for t in self._jobs.values() if t.spec.service.name == job.service.name and not t.outcome)
        if mine >= self.config.max_pending_per_service or self._api_down_since is not None:
            return False
        return self.quota.shortfall(manifest.quota_usage(job)) is None

    def _read_quotas(self) -> list[Quota]:
        from kubernetes.client.exceptions import ApiException

        try:
            listing = self.core.list_namespaced_resource_quota(self.config.namespace, _request_timeout=5)
        except ApiException as error:
            if error.status == 403:
                raise PermissionError(_reason(error)) from error
            raise
        return quotas_from_api(listing.items)

    def submit(self, job: JobSpec) -> JobHandle:
        token = self.staging.open_job(job)
        members = [
            manifest.BatchInput(member, self.staging.open_job(member), self.staging.input_name(member))
            for member in job.batch
        ]
        body = manifest.build_job(job, self.config, self.api_url, token, self.staging.input_name(job), members)
        tracked = _Tracked(spec=job, name=body["metadata"]["name"], created_at=time.monotonic())
        with self._lock:
            self._jobs[job.job_id] = tracked  # before the Job exists: the watch may see its end at once
        try:
            self._create(job, body)
            self.quota.admitted(manifest.quota_usage(job))
        except _QuotaRefused as refusal:
            self._close_staging(job)
            self._wait_for_quota(tracked, f"Kubernetes refused Job {tracked.name}: {refusal}")
        except _ApiDown as error:
            self._close_staging(job)
            if self._api_down_since is None:
                self._api_down_since = time.monotonic()
            message = f"creating Kubernetes Job {tracked.name} failed: {error}; it waits for the API"
            with self._lock:
                tracked.outcome = JobOutcome(
                    state=JobState.FAILED, failure="unavailable", waiting_for=CLUSTER, message=message
                )
            self._listener()
        except Exception:
            with self._lock:
                self._jobs.pop(job.job_id, None)
            self._close_staging(job)
            raise
        return JobHandle(job_id=job.job_id, backend=self.name, native_id=tracked.name)

    def _close_staging(self, job: JobSpec) -> dict[str, list[ObjectInfo]]:
        """No more staging for the job and the rest of its batch; the outputs each one's pod stored."""
        return {member.job_id: self.staging.close_job(member.job_id) for member in job.inputs}

    def _create(self, job: JobSpec, body: dict[str, Any]) -> None:
        """The Secret (when the service has secrets), then the Job, which then owns the Secret."""
        from kubernetes.client.exceptions import ApiException

        name, namespace = body["metadata"]["name"], self.config.namespace
        secret = manifest.build_secret(job, self.config)
        try:
            if secret is not None:
                try:
                    self.core.create_namespaced_secret(namespace, secret, _request_timeout=30)
                except ApiException as error:
                    if error.status != 409:
                        raise
            created = self._create_job(body)
        except ApiException as error:
            if secret is not None:
                self._delete_secret(name)
            if is_quota_refusal(error.status, error.body):
                raise _QuotaRefused(_reason(error)) from error
            if error.status in (429, 500, 502, 503, 504) or not error.status:
                raise _ApiDown(_reason(error)) from error
            raise SubmitError(f"Kubernetes refused Job {name}: {_reason(error)}") from error
        except Exception as error:  # no connection, a timeout: the API does not answer
            raise _ApiDown(str(error)) from error
        if secret is not None:  # garbage-collected with its Job
            owner = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": created.metadata.uid,
                "blockOwnerDeletion": False,
            }
            try:
                self.core.patch_namespaced_secret(
                    name, namespace, {"metadata": {"ownerReferences": [owner]}}, _request_timeout=30
                )
            except ApiException as error:
                log.warning("Secret %s stays until the job ends: %s", name, _reason(error))

    def _create_job(self, body: dict[str, Any]) -> Any:
        """Create the Job; one of that name that exists is an earlier submit that did not hear back,
        unless it is being deleted (for quota): then wait until it is gone and create it anew."""
        from kubernetes.client.exceptions import ApiException

        name, namespace = body["metadata"]["name"], self.config.namespace
        deadline = time.monotonic() + DELETED_WAIT_S
        while True:
            try:
                return self.batch.create_namespaced_job(namespace, body, _request_timeout=30)
            except ApiException as error:
                if error.status != 409:
                    raise
            try:
                found = self.batch.read_namespaced_job(name, namespace, _request_timeout=30)
            except ApiException as error:
                if error.status == 404:
                    continue
                raise
            if found.metadata.deletion_timestamp is None or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def _wait_for_quota(self, tracked: _Tracked, message: str) -> None:
        """The job goes back to the queue, waiting (not an attempt); no more Jobs until the quota has room."""
        log.info("%s; the job waits for room", message)
        self.quota.refused(message)
        JobLog(Path(tracked.spec.log_path), tracked.spec.service.log_level).write(
            "WARNING", f"{message}; the job waits for room in the namespace's quota"
        )
        with self._lock:
            tracked.outcome = JobOutcome(
                state=JobState.FAILED, failure="unavailable", waiting_for=QUOTA, message=f"{message}; it waits"
            )
        self._listener()

    def _delete_secret(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_secret(name, self.config.namespace, _request_timeout=30)
        except ApiException as error:
            if error.status != 404:
                log.warning("deleting Secret %s failed: %s", name, _reason(error))

    def adopt(self, job: JobSpec) -> JobHandle | None:
        """A Job an earlier platform created: found again by its name."""
        from kubernetes.client.exceptions import ApiException

        name = manifest.job_name(job)
        try:
            found = self.batch.read_namespaced_job(name, self.config.namespace, _request_timeout=30)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        self.staging.open_job(job)
        tracked = _Tracked(spec=job, name=name, created_at=time.monotonic())
        with self._lock:
            self._jobs[job.job_id] = tracked
        self._seen(found)
        return JobHandle(job_id=job.job_id, backend=self.name, native_id=name)

    def status(self, handles: list[JobHandle]) -> list[JobStatus]:
        with self._lock:
            return statuses_of(handles, self._jobs)

    def cancel(self, handles: list[JobHandle]) -> list[bool]:
        answers, names = [], []
        with self._lock:
            for handle in handles:
                tracked = self._jobs.get(handle.job_id)
                if tracked is None or tracked.outcome is not None or tracked.concluding:
                    answers.append(False)
                    continue
                tracked.cancelled = True
                tracked.outcome = JobOutcome(state=JobState.CANCELLED, message="cancelled on request")
                answers.append(True)
                names.append(tracked)
        for tracked in names:
            self._close_staging(tracked.spec)
            parts = self._script_log_so_far(tracked.name)
            self._delete(tracked.name)
            _append(tracked.spec, parts, f"cancelled on request: Job {tracked.name} deleted", "WARNING")
        self._listener()
        return answers

    def close(self) -> None:
        """Stop watching; Jobs run on in the cluster, and the next start adopts them."""
        self._stopping.set()
        for thread in self._threads:  # a watch notices at its next event or timeout; they are daemons
            thread.join(0.2)

    # ---- watching ------------------------------------------------------------------------

    def _watch_jobs(self) -> None:
        self._watch(self.batch.list_namespaced_job, self._job_event, self._job_deleted, WATCH_TIMEOUT_S, lambda: None)

    def _watch_pods(self) -> None:
        """Pods tell what Jobs do not: an image that cannot be pulled, a pod nobody can schedule."""
        self._watch(self.core.list_namespaced_pod, self._pod_event, self._pod_gone, POD_WATCH_TIMEOUT_S, self._sweep)

    def _model(self, raw: dict[str, Any], kind: str) -> Any:
        """The client's model of a raw object, built only for the events that need one: a model costs
        ~9 ms of CPU per pod (bench/kubernetes_throughput.py, py-spy), json.loads ~0.1 ms."""
        return self._client.deserialize(SimpleNamespace(data=json.dumps(raw)), kind)

    def _job_event(self, raw: dict[str, Any]) -> None:
        if _ended_raw(raw):
            self._seen(self._model(raw, "V1Job"))

    def _job_deleted(self, raw: dict[str, Any]) -> None:
        if _raw_job_id(raw) in self._jobs:
            self._deleted(self._model(raw, "V1Job"))

    def _pod_event(self, raw: dict[str, Any]) -> None:
        """A model for the pods that ended or may be stuck (_pod_seen); for the rest, only that they exist."""
        phase = (raw.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or _may_be_stuck(raw):
            self._pod_seen(self._model(raw, "V1Pod"))
            return
        job_id = _raw_job_id(raw)
        with self._lock:
            self._pod_problems.pop(job_id, None)
            tracked = self._jobs.get(job_id)
            if tracked is not None and not (tracked.outcome or tracked.concluding):
                tracked.has_pod = True

    def _watch(
        self,
        list_function: Callable[..., Any],
        seen: Callable[[Any], None],
        deleted: Callable[[Any], None],
        timeout_s: int,
        between: Callable[[], None],
    ) -> None:
        """List, then watch from the listing's version; list again when it expired; never give up.
        Objects come as raw JSON (dicts): `seen` and `deleted` build a model only when they need one."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        namespace, selector = self.config.namespace, manifest.SELECTOR
        resource_version: str | None = None
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    response = list_function(
                        namespace, label_selector=selector, _request_timeout=30, _preload_content=False
                    )
                    listing = json.loads(response.data)
                    for item in listing.get("items") or []:
                        seen(item)
                    resource_version = listing["metadata"]["resourceVersion"]
                    self._api_down_since = None
                stream = watch.Watch().stream(
                    list_function,
                    namespace,
                    label_selector=selector,
                    resource_version=resource_version,
                    timeout_seconds=timeout_s,
                    _request_timeout=timeout_s + 10,
                    deserialize=False,
                )
                for event in stream:
                    if self._stopping.is_set():
                        return
                    item = event["object"]
                    if event["type"] == "ERROR":  # expired: list again
                        resource_version = None
                        break
                    resource_version = item["metadata"]["resourceVersion"]
                    self._api_down_since = None
                    if event["type"] == "DELETED":
                        deleted(item)
                    else:
                        seen(item)
                    between()
                self._api_down_since = None  # the watch ran its course: the API answered throughout
                between()
            except ApiException as error:
                if error.status == 410:  # the resource version is too old: list again
                    resource_version = None
                    continue
                self._note_api_down(error)
            except KeyError as error:  # the client's raw mode fails on an ERROR event (410 Gone, after an
                log.debug("the watch ended on an error event (%s): listing again", error)  # outage): list again
                resource_version = None
            except Exception as error:  # the watch must outlive any one bad answer or a dead connection
                self._note_api_down(error)

    def _note_api_down(self, error: Exception) -> None:
        if self._api_down_since is None:
            self._api_down_since = time.monotonic()
            log.warning("watching Kubernetes Jobs failed (%s); trying again", error)
        self._stopping.wait(1.0)

    def _tracked_for(self, job: Any) -> _Tracked | None:
        job_id = (job.metadata.annotations or {}).get(manifest.JOB_ID_ANNOTATION)
        with self._lock:
            tracked = self._jobs.get(job_id or "")
            if tracked is None or tracked.name != job.metadata.name or tracked.outcome or tracked.concluding:
                return None
            return tracked

    def _seen(self, job: Any) -> None:
        ended = _ended(job)
        if ended is None:
            return
        tracked = self._tracked_for(job)
        if tracked is None:
            return
        with self._lock:
            if tracked.concluding or tracked.outcome:
                return
            tracked.concluding = True
        try:
            outcome = self._outcome(tracked, job, ended)
        except Exception as error:  # an outcome all the same: the job must not hang
            log.exception("concluding Kubernetes Job %s failed", tracked.name)
            outcome = _failed(f"Kubernetes Job {tracked.name} ended ({ended[0]}) but reading it failed: {error}")
        if manifest.secret_name(tracked.spec) is not None:
            self._delete_secret(tracked.name)  # its Job owns it too; this is for when that link failed
        with self._lock:
            tracked.outcome = outcome
        self._listener()

    def _deleted(self, job: Any) -> None:
        tracked = self._tracked_for(job)
        if tracked is None:
            return
        with self._lock:
            if tracked.concluding or tracked.outcome:
                return
            tracked.outcome = _failed(f"Kubernetes Job {tracked.name} was deleted outside Conveyor; it runs again")
        self._close_staging(tracked.spec)
        _append(tracked.spec, [], tracked.outcome.message, "ERROR")
        self._listener()

    def _pod_seen(self, pod: Any) -> None:
        job_id = (pod.metadata.annotations or {}).get(manifest.JOB_ID_ANNOTATION, "")
        with self._lock:
            tracked = self._jobs.get(job_id)
            if tracked is None or tracked.outcome or tracked.concluding:
                self._pod_problems.pop(job_id, None)
                self._ended_pods.pop(job_id, None)
                return
            tracked.has_pod = True
            ended = pod.status is not None and pod.status.phase in ("Succeeded", "Failed")
            if ended and (pod.metadata.labels or {}).get("job-name") == tracked.name:
                self._ended_pods[job_id] = pod  # what the Job's end needs, without listing its pods again
        problem = self._problem_of(pod, tracked)
        with self._lock:
            if problem is None:
                self._pod_problems.pop(job_id, None)
            elif job_id not in self._pod_problems or self._pod_problems[job_id].message != problem.message:
                earlier = self._pod_problems.get(job_id)
                if earlier is not None:
                    problem.since = earlier.since
                self._pod_problems[job_id] = problem

    def _pod_gone(self, raw: dict[str, Any]) -> None:
        job_id = _raw_job_id(raw)
        with self._lock:
            self._pod_problems.pop(job_id, None)
            self._ended_pods.pop(job_id, None)

    def _problem_of(self, pod: Any, tracked: _Tracked) -> _PodProblem | None:
        """What keeps the pod from running, with how long it may last; None when nothing does."""
        if pod.status is None or pod.spec is None:
            return None
        now = time.monotonic()
        containers = [*(pod.spec.init_containers or []), *pod.spec.containers]
        images = {container.name: container.image for container in containers}
        statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
        for status in statuses:
            waiting = status.state.waiting if status.state is not None else None
            if waiting is None or waiting.reason not in NEVER_PULLABLE | PULLING:
                continue
            image = images.get(status.name, status.image)
            message = f"container {status.name} cannot start: image {image!r}: {waiting.reason}" + (
                f": {waiting.message}" if waiting.message else ""
            )
            bound = 0.0 if waiting.reason in NEVER_PULLABLE else self.config.image_pull_timeout_s
            return _PodProblem(now, message, bound)
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
                message = f"pod {pod.metadata.name} cannot be scheduled: {condition.message or condition.reason}"
                return _PodProblem(now, message, self.config.unschedulable_timeout_s)
        return None

    def _sweep(self) -> None:
        """Fail the jobs whose pods have been stuck longer than their bound; send back to the queue
        the jobs whose pods a quota refused."""
        now = time.monotonic()
        self._requeue_refused_by_quota(now)
        with self._lock:
            due = [(job_id, p) for job_id, p in self._pod_problems.items() if now - p.since >= p.bound_s]
            stuck = []
            for job_id, problem in due:
                del self._pod_problems[job_id]
                tracked = self._jobs.get(job_id)
                if tracked is None or tracked.outcome or tracked.concluding:
                    continue
                waited = f" for {problem.bound_s:g} s" if problem.bound_s else ""
                message = f"Kubernetes Job {tracked.name}: {problem.message}{waited}; the Job is deleted"
                tracked.outcome = _failed(message)
                stuck.append(tracked)
        for tracked in stuck:
            self._close_staging(tracked.spec)
            self._delete(tracked.name)
            assert tracked.outcome is not None
            _append(tracked.spec, [], f"job {tracked.outcome.state}: {tracked.outcome.message}", "ERROR")
        if stuck:
            self._listener()

    def _requeue_refused_by_quota(self, now: float) -> None:
        """Jobs that have had no pod for NO_POD_CHECK_S: the Job controller's events say whether a
        quota refused the pod; such a Job is deleted (its deadline would run on) and the job waits."""
        with self._lock:
            podless = [
                tracked
                for tracked in self._jobs.values()
                if not (tracked.has_pod or tracked.outcome or tracked.concluding)
                and now - tracked.created_at >= NO_POD_CHECK_S
                and now - tracked.events_read_at >= NO_POD_CHECK_S
            ]
            for tracked in podless:
                tracked.events_read_at = now
        for tracked in podless:
            refusal = self._quota_refusal_of(tracked.name)
            if refusal is None:
                continue
            with self._lock:
                if tracked.has_pod or tracked.outcome or tracked.concluding:
                    continue
                tracked.concluding = True
            self._close_staging(tracked.spec)
            self._delete(tracked.name)  # still `concluding`: its DELETED event must not fail it
            if manifest.secret_name(tracked.spec) is not None:
                self._delete_secret(tracked.name)
            self._wait_for_quota(tracked, f"the pod of Kubernetes Job {tracked.name} was refused: {refusal}")

    def _quota_refusal_of(self, name: str) -> str | None:
        """The message of the Job controller's latest FailedCreate event for quota, if any."""
        try:
            events = self.core.list_namespaced_event(
                self.config.namespace,
                field_selector=f"involvedObject.kind=Job,involvedObject.name={name},reason=FailedCreate",
                _request_timeout=10,
            ).items
        except Exception as error:
            log.debug("reading the events of Job %s failed: %s", name, error)
            return None
        for event in sorted(events, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp):
            if "exceeded quota" in (event.message or ""):
                return event.message
        return None

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.batch.delete_namespaced_job(
                name, self.config.namespace, propagation_policy="Background", _request_timeout=30
            )
        except ApiException as error:
            if error.status != 404:
                log.warning("deleting Kubernetes Job %s failed: %s", name, _reason(error))

    # ---- a Job's end ---------------------------------------------------------------------

    def _outcome(self, tracked: _Tracked, job: Any, ended: tuple[str, str, str]) -> JobOutcome:
        """What the Job's conditions, its pod's container statuses and logs say; the logs go to the job's log."""
        kind, reason, message = ended
        pod = self._ended_pods.pop(tracked.spec.job_id, None) or self._pod_of(tracked.name)
        statuses = _container_states(pod)
        script = statuses.get(manifest.SCRIPT_CONTAINER)
        exit_code = script.exit_code if script is not None else None
        parts, script_output = [], b""
        for container in (manifest.SCRIPT_CONTAINER, manifest.STAGER_CONTAINER):
            if container not in statuses or (container == manifest.STAGER_CONTAINER and kind == "Complete"):
                continue  # a stager that did its work has nothing to tell: one API call less per job
            text = self._log_of(pod, container)
            if container == manifest.SCRIPT_CONTAINER:
                script_output = text
                parts.append(text)
            elif text.strip():
                parts.append(b"--- " + container.encode() + b" ---\n" + text)
        response = self.staging.response(tracked.spec.job_id, script_output) if tracked.spec.sync else None
        stored = self._close_staging(tracked.spec)
        outputs = stored[tracked.spec.job_id]
        started, finished = job.status.start_time, job.status.completion_time or _condition_time(job)
        where = f"Kubernetes Job {tracked.name}"
        if kind == "Complete":
            outcome = JobOutcome(
                state=JobState.SUCCEEDED,
                exit_code=0,
                message=f"{len(outputs)} output(s) stored",
                outputs=outputs,
                response=response,
            )
        elif reason == "DeadlineExceeded":
            deadline = tracked.spec.service.timeout * len(tracked.spec.inputs) + self.config.time_margin_s
            outcome = JobOutcome(
                state=JobState.TIMED_OUT,
                failure="timeout",
                exit_code=exit_code,
                message=f"{where} passed its deadline ({deadline} s: the service's timeout plus the staging margin)",
                outputs=outputs,
            )
        elif (disruption := pod_disruption(pod)) is not None:  # not the script's doing, whatever its exit code
            outcome = _failed(f"{where} failed: {disruption}")
            outcome.exit_code = exit_code
        elif exit_code not in (None, 0):
            why = f" ({script.reason})" if script is not None and script.reason not in (None, "Error") else ""
            outcome = JobOutcome(
                state=JobState.FAILED,
                failure="script",
                exit_code=exit_code,
                message=f"the script exited with code {exit_code}{why}; nothing was uploaded",
            )
        else:
            broken = [f"{name}: {state.describe()}" for name, state in statuses.items() if state.failed]
            details = "; ".join(broken) or f"{reason}: {message}"
            stager = statuses.get(manifest.STAGER_CONTAINER)
            if stager is not None and stager.exit_code == manifest.STAGE_IN_FAILED:
                stage = "stage-in (the script did not run)"
            else:
                stage = "stage-out" if exit_code == 0 else "the pod"
            outcome = _failed(f"{where} failed in {stage}: {details}")
            outcome.exit_code = exit_code
            outcome.outputs = outputs
        outcome.started_at, outcome.finished_at = started, finished
        _append(
            tracked.spec,
            parts,
            f"job {outcome.state}: {outcome.message}",
            "INFO" if outcome.state == JobState.SUCCEEDED else "ERROR",
            first=f"job {tracked.spec.job_id} (attempt {tracked.spec.attempt}) ran as {where}",
        )
        if tracked.spec.batch:
            return _batch_outcome(tracked.spec, outcome, stored, script_output, where)
        return outcome

    def _script_log_so_far(self, name: str) -> list[bytes]:
        """What the script printed until now (best effort: the pod may not have started)."""
        try:
            pod = self._pod_of(name)
            if pod is None or manifest.SCRIPT_CONTAINER not in _container_states(pod):
                return []
            return [self._log_of(pod, manifest.SCRIPT_CONTAINER)]
        except Exception as error:
            return [f"(the script's log could not be read: {error})\n".encode()]

    def _pod_of(self, name: str) -> Any | None:
        pods = self.core.list_namespaced_pod(
            self.config.namespace, label_selector=f"job-name={name}", _request_timeout=30
        ).items
        if not pods:
            return None
        return max(pods, key=lambda pod: pod.metadata.creation_timestamp)

    def _log_of(self, pod: Any, container: str) -> bytes:
        from kubernetes.client.exceptions import ApiException

        try:
            text = self.core.read_namespaced_pod_log(
                pod.metadata.name, self.config.namespace, container=container, _request_timeout=30
            )
        except ApiException as error:
            return f"(the log of container {container} could not be read: {_reason(error)})\n".encode()
        return text.encode() if isinstance(text, str) else bytes(text)


def _batch_outcome(
    spec: JobSpec, run: JobOutcome, stored: dict[str, list[ObjectInfo]], script_output: bytes, where: str
) -> JobOutcome:
    """Each input's outcome of a batch's Job. Mode `each`: from the exit code the wrapper printed for
    it (manifest.RUN_EACH); an input it never reached, or one whose run ended with the Job, shares the
    Job's failure. Mode `directory`: the run's outcome, its outputs recorded on the lead job."""
    if spec.service.batch is not None and spec.service.batch.mode == "directory":
        members = {spec.job_id: run}
        for member in spec.batch:
            members[member.job_id] = shared_outcome(run, spec.job_id, len(spec.inputs))
            note = f"ran in one batch with job {spec.job_id} as {where}: its log has the script output"
            _append(member, [], note, "INFO")
        return batch_outcome(members)
    codes, parts = _split_batch_log(script_output, len(spec.inputs))
    members = {}
    for index, member in enumerate(spec.inputs):
        code = codes.get(index)
        if code == 0 and run.state == JobState.SUCCEEDED:
            own = JobOutcome(
                state=JobState.SUCCEEDED, exit_code=0, message=f"{len(stored[member.job_id])} output(s) stored"
            )
            own.outputs = stored[member.job_id]
        elif code not in (None, 0):
            message = f"the script exited with code {code}; nothing was uploaded"
            own = JobOutcome(state=JobState.FAILED, failure="script", exit_code=code, message=message)
        else:
            own = run.model_copy(update={"outputs": stored[member.job_id], "exit_code": code})
        own.started_at, own.finished_at = run.started_at, run.finished_at
        members[member.job_id] = own
        if index:
            first = f"job {member.job_id} ran as input {index} of a batch led by job {spec.job_id}, as {where}"
            level = "INFO" if own.state == JobState.SUCCEEDED else "ERROR"
            _append(member, [parts.get(index, b"")], f"job {own.state}: {own.message}", level, first=first)
    return batch_outcome(members)


def _split_batch_log(output: bytes, inputs: int) -> tuple[dict[int, int], dict[int, bytes]]:
    """The exit code and the log of each input, from the marks manifest.RUN_EACH prints."""
    mark = manifest.BATCH_MARK.encode() + b" "
    codes: dict[int, int] = {}
    parts: dict[int, list[bytes]] = {}
    current: int | None = None
    for line in output.splitlines(keepends=True):
        if line.startswith(mark):
            words = line[len(mark) :].split()
            if len(words) >= 2 and words[0].isdigit() and int(words[0]) < inputs:
                index = int(words[0])
                if words[1] == b"start":
                    current = index
                    parts.setdefault(index, [])
                    continue
                if words[1] == b"exit" and len(words) == 3 and words[2].lstrip(b"-").isdigit():
                    codes[index] = int(words[2])
                    current = None
                    continue
        if current is not None:
            parts[current].append(line)
    return codes, {index: b"".join(lines) for index, lines in parts.items()}


@dataclass
class _ContainerState:
    exit_code: int | None
    reason: str | None
    message: str | None
    waiting: bool = False

    @property
    def failed(self) -> bool:
        return self.waiting or (self.exit_code not in (None, 0))

    def describe(self) -> str:
        code = f"exit code {self.exit_code}" if self.exit_code is not None else "never ran"
        return ", ".join(part for part in (code, self.reason, self.message) if part)


def _container_states(pod: Any | None) -> dict[str, _ContainerState]:
    if pod is None or pod.status is None:
        return {}
    found = {}
    for status in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]:
        state = status.state
        if state is not None and state.terminated is not None:
            term = state.terminated
            found[status.name] = _ContainerState(term.exit_code, term.reason, term.message)
        elif state is not None and state.waiting is not None:
            found[status.name] = _ContainerState(None, state.waiting.reason, state.waiting.message, waiting=True)
        elif state is not None and state.running is not None:  # being stopped (a deadline, a delete): it has a log
            found[status.name] = _ContainerState(None, "Running", None)
    return found


_ENDED = {"SuccessCriteriaMet": "Complete", "Complete": "Complete", "FailureTarget": "Failed", "Failed": "Failed"}
"""Job conditions that settle its end. The Job controller sets FailureTarget (SuccessCriteriaMet) first and
Failed (Complete) only once the pods are gone: e.g. after a deadline, the pods' grace period later, with
their logs."""


def _ended(job: Any) -> tuple[str, str, str] | None:
    """(Complete or Failed, reason, message) of a Job that ended; None while it runs."""
    for condition in (job.status.conditions or []) if job.status else []:
        if condition.type in _ENDED and condition.status == "True":
            return _ENDED[condition.type], condition.reason or "", condition.message or ""
    return None


DISRUPTIONS = {
    "EvictionByEvictionAPI": "was evicted",
    "PreemptionByScheduler": "was preempted for a pod of higher priority",
    "DeletionByTaintManager": "was deleted because its node is not ready or unreachable",
    "DeletionByPodGC": "was deleted because its node is gone",
    "TerminationByKubelet": "was evicted by its node's kubelet",
}
"""What each reason of a pod's DisruptionTarget condition means, as the job's log says it."""


def pod_disruption(pod: Any | None) -> str | None:
    """What stopped a failed Job's pod from outside the job (an eviction, a delete, a lost node); None
    when nothing did, so the script's exit code and the containers' states tell. A pod no longer there
    was deleted (its Job's finalizer lets only a delete remove it before the Job ends)."""
    if pod is None:
        return "its pod is gone: deleted outside Conveyor, or its node was lost"
    name, status = pod.metadata.name, pod.status
    for condition in (status.conditions or []) if status is not None else []:
        if condition.type == "DisruptionTarget" and condition.status == "True":
            what = DISRUPTIONS.get(condition.reason or "", "was disrupted")
            details = ": ".join(part for part in (condition.reason, condition.message) if part)
            return f"pod {name} {what}" + (f" ({details})" if details else "")
    if status is not None and status.reason == "Evicted":  # the kubelet's own eviction (node pressure)
        return f"pod {name} was evicted by its node" + (f" ({status.message})" if status.message else "")
    if pod.metadata.deletion_timestamp is not None:
        return f"pod {name} was deleted outside Conveyor"
    return None


def _ended_raw(raw: dict[str, Any]) -> bool:
    """_ended of a raw Job: whether it ended."""
    conditions = (raw.get("status") or {}).get("conditions") or []
    return any(c.get("type") in _ENDED and c.get("status") == "True" for c in conditions)


def _raw_job_id(raw: dict[str, Any]) -> str:
    return str(((raw.get("metadata") or {}).get("annotations") or {}).get(manifest.JOB_ID_ANNOTATION, ""))


def _may_be_stuck(raw: dict[str, Any]) -> bool:
    """Whether _problem_of may find a problem in this raw pod (else it finds none)."""
    status = raw.get("status") or {}
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if ((container.get("state") or {}).get("waiting") or {}).get("reason") in NEVER_PULLABLE | PULLING:
            return True
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or []
    )


def _condition_time(job: Any) -> datetime | None:
    for condition in job.status.conditions or []:
        if condition.type in _ENDED and condition.status == "True":
            return condition.last_transition_time
    return None


def _reason(error: Any) -> str:
    return f"{error.status} {error.reason}: {(error.body or '').strip()[:500]}"


def _failed(message: str) -> JobOutcome:
    return JobOutcome(state=JobState.FAILED, failure="infrastructure", message=message)


def _append(spec: JobSpec, parts: list[bytes], last: str, level: str, first: str | None = None) -> None:
    """The pod's output into the job's log, between two supervisor lines."""
    log_file = JobLog(Path(spec.log_path), spec.service.log_level)
    if first:
        log_file.write("INFO", first)
    with spec.log_path.open("ab") as out:
        for part in parts:
            out.write(part if part.endswith(b"\n") or not part else part + b"\n")
    log_file.write(level, last)
