"""Trivial jobs through Conveyor's Kubernetes backend against the same work done with the kubernetes
client directly, on a real single-node cluster, in the same invocation.

Throughput: N files put into a service's input (backend kubernetes, script `true`), from the first
put until every job succeeded in the ledger; against N equivalent Jobs (busybox, hostNetwork, the
script container's requests and limits, backoffLimit 0) created in a loop with the kubernetes client,
from the first create until every Job is Complete. Conveyor runs with `max_pending_per_service = N`
(admission never throttles the comparison) and once more at the default; `--batch K` adds a run
with the service's `batch: {max_files: K}` (used only when the backend `runs_batches`: the result
says whether it did, and how many Kubernetes Jobs ran the N files).

Latency: the time from a file's upload to its script's first line, which does
`wget http://127.0.0.1:PORT/hit/<id>` to a loopback server of this benchmark (the pods use the
node's network); against a bare pod (same image, hostNetwork) whose command does the same, from its
create call; and a bare Job, for the Job controller's share. One at a time, interleaved.

A watch of the namespace's Jobs and pods notes when this process sees each step (Job created, pod
created, scheduled, initialized, running, ended): the breakdown says where the time goes.

The cluster is scripts/kubernetes-up.sh through tests.support.kubernetes.run_kubernetes (as root;
binaries cached in /var/cache/conveyor/kubernetes/bin), stopped at the end; `--kubeconfig` uses a
running one instead. Results go to bench/results/kubernetes_throughput.{json,md}.

    .venv/bin/python -m bench.kubernetes_throughput --jobs 40 --repeats 3 --latency-runs 5 --batch 10
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.harness import RESULTS, command_line, describe_machine
from conveyor.backends.kubernetes import manifest
from conveyor.model.event import ObjectRef
from conveyor.model.job import TERMINAL_STATES, JobRecord, JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from conveyor.settings import KubernetesSettings, Settings

NAMESPACE = "default"
BUSYBOX = "localhost/busybox:local"
BENCH_LABEL = "conveyor-bench"
"""Label of the baseline's Jobs and pods (Conveyor's watch never sees them)."""
DEFAULT_PENDING = KubernetesSettings().max_pending_per_service
SERVICE_CPU, SERVICE_MEMORY = "0.2", "256Mi"
"""The service's (and so the script container's) requests and limits: Conveyor's defaults, stated."""


# ---- what the cluster shows: a watch of Jobs and pods, stamped with this process's clock --------------


class Timeline:
    """First time this process saw each step of each Job and pod in the namespace (time.monotonic)."""

    POD_STEPS = ("created", "scheduled", "initialized", "running", "ended")

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        self._batch = client.BatchV1Api(config.new_client_from_config(str(kubeconfig)))
        self._core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = [threading.Event(), threading.Event()]
        self.threads = [
            threading.Thread(target=self._run, args=(self._batch.list_namespaced_job, self._job, 0), daemon=True),
            threading.Thread(target=self._run, args=(self._core.list_namespaced_pod, self._pod, 1), daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        for ready in self._ready:
            ready.wait(30)

    def close(self) -> None:
        self._stop.set()

    def _run(self, list_function: Callable[..., Any], seen: Callable[[dict[str, Any]], None], index: int) -> None:
        """Raw JSON, not the client's models: deserializing a pod costs ~9 ms of CPU, json.loads ~0.1 ms."""
        from kubernetes import watch

        def now_version() -> str:
            return str(list_function(NAMESPACE, limit=1).metadata.resource_version)

        version = now_version()
        self._ready[index].set()
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    list_function, NAMESPACE, resource_version=version, timeout_seconds=20, deserialize=False
                ):
                    if event["type"] == "ERROR":
                        version = now_version()
                        break
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "DELETED":
                        seen(event["object"])
            except Exception:  # an expired version or a dropped connection: go on from now
                if self._stop.wait(0.5):
                    return  # closed (the cluster may be gone already)
                try:
                    version = now_version()
                except Exception:
                    continue

    def _note(self, table: dict[str, dict[str, Any]], name: str, step: str, **extra: Any) -> None:
        now = time.monotonic()
        with self._lock:
            entry = table.setdefault(name, {})
            entry.setdefault(step, now)
            for key, value in extra.items():
                entry.setdefault(key, value)

    def _job(self, job: dict[str, Any]) -> None:
        labels = job["metadata"].get("labels") or {}
        group = labels.get(BENCH_LABEL) or labels.get(manifest.SERVICE_LABEL) or "?"
        name = job["metadata"]["name"]
        self._note(self.jobs, name, "created", group=group)
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition["type"] in ("Complete", "SuccessCriteriaMet", "Failed") and condition["status"] == "True":
                self._note(self.jobs, name, "ended", failed=condition["type"] == "Failed")

    def _pod(self, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels") or {}
        group = labels.get(BENCH_LABEL) or labels.get(manifest.SERVICE_LABEL) or "?"
        name = pod["metadata"]["name"]
        self._note(self.pods, name, "created", group=group, job=labels.get("job-name"))
        status = pod.get("status") or {}
        if pod["spec"].get("nodeName"):
            self._note(self.pods, name, "scheduled")
        if any(c["type"] == "Initialized" and c["status"] == "True" for c in status.get("conditions") or []):
            self._note(self.pods, name, "initialized")
        phase = status.get("phase")
        if phase == "Running" or any(
            "running" in (s.get("state") or {}) for s in status.get("containerStatuses") or []
        ):
            self._note(self.pods, name, "running")
        if phase in ("Succeeded", "Failed"):
            self._note(self.pods, name, "ended")

    def steps(
        self, group: str, since: float, before: dict[str, float] | None = None, after: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Median seconds between consecutive steps of the group's pods created after `since`; `before`
        and `after` add a step per Job name ahead of its creation (the put) and after its end (the ledger)."""
        with self._lock:
            pods = [dict(p) for p in self.pods.values() if p.get("group") == group and p["created"] >= since]
            jobs = dict(self.jobs)
        gaps: dict[str, list[float]] = {}
        for pod in pods:
            job_name = pod.get("job") or ""
            job = jobs.get(job_name)
            points = [("put", before[job_name])] if before and job_name in before else []
            points += [("job created", job["created"])] if job else []
            points += [(f"pod {step}", pod[step]) for step in self.POD_STEPS if step in pod]
            if job and "ended" in job:
                points.append(("job ended", job["ended"]))
            if after and job_name in after:
                points.append(("ledger", after[job_name]))
            for (a, t0), (b, t1) in itertools.pairwise(points):
                gaps.setdefault(f"{a} → {b}", []).append(t1 - t0)
        return {key: round(statistics.median(values), 3) for key, values in gaps.items()}

    def job_count(self, group: str, since: float) -> int:
        with self._lock:
            return sum(1 for job in self.jobs.values() if job.get("group") == group and job["created"] >= since)

    def wait_jobs_ended(self, names: list[str], timeout_s: float) -> float:
        """The time the last of `names` was seen ended."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                ends = [self.jobs.get(name, {}).get("ended") for name in names]
            if all(end is not None for end in ends):
                return max(ends)  # type: ignore[type-var]
            time.sleep(0.02)
        raise TimeoutError(f"{sum(e is None for e in ends)} of {len(names)} Jobs did not end in {timeout_s} s")


# ---- CPU: Conveyor's threads, its store, the cluster's daemons ----------------------------------------------


TICK = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds so far of: this process minus the benchmark's own threads (the platform's Python),
    this process's child processes (the embedded SeaweedFS), and the cluster's daemons (kube-apiserver,
    etcd, controller-manager, scheduler, kubelet, containerd; not the per-pod shims and runc)."""

    def __init__(self, cluster_dir: Path, bench_threads: list[threading.Thread]) -> None:
        self.cluster_dir = cluster_dir
        self.bench_threads = bench_threads

    def read(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        own = sum(
            time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            for thread in self.bench_threads
            if thread.ident is not None and thread.is_alive()
        )
        daemons = {}
        for pid_file in sorted((self.cluster_dir / "run").glob("*.pid")):
            try:
                daemons[pid_file.stem] = _cpu_of(int(pid_file.read_text()))
            except (OSError, ValueError):
                continue
        return {
            "conveyor": usage.ru_utime + usage.ru_stime - own,
            "store": sum(_cpu_of(pid) for pid in _children(os.getpid())),
            "cluster": sum(daemons.values()),
            **{f"cluster:{name}": value for name, value in daemons.items()},
        }

    @staticmethod
    def per_job_ms(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
        return {key: round((after[key] - before.get(key, 0.0)) * 1000 / jobs, 1) for key in after}


def _cpu_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# ---- a loopback server the scripts call on their first line ------------------------------------------


class Hits:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self._cond = threading.Condition()
        hits = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                now = time.monotonic()
                with hits._cond:
                    hits.arrived.setdefault(self.path.rsplit("/", 1)[-1], now)
                    hits._cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.thread.start()

    def command(self, hit_id: str) -> str:
        return f"wget -q -O- http://127.0.0.1:{self.port}/hit/{hit_id}"

    def wait(self, hit_id: str, timeout_s: float = 120) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: hit_id in self.arrived, timeout_s):
                raise TimeoutError(f"no hit {hit_id} within {timeout_s} s")
            return self.arrived[hit_id]

    def close(self) -> None:
        self._server.shutdown()


# ---- the cluster -------------------------------------------------------------------------------


@contextmanager
def cluster(kubeconfig: str | None) -> Iterator[Path]:
    if kubeconfig:
        yield Path(kubeconfig)
        return
    if os.geteuid() != 0:
        sys.exit("run as root: the cluster's kubelet and containerd run as root (or give --kubeconfig)")
    from tests.support.kubernetes import run_kubernetes

    with (
        tempfile.TemporaryDirectory(prefix="conveyor-bench-k8s-") as scratch,
        run_kubernetes(Path(scratch) / "k8s") as up,
    ):
        yield up.kubeconfig


def clients(kubeconfig: Path) -> tuple[Any, Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(str(kubeconfig))
    return client.BatchV1Api(api), client.CoreV1Api(api)


def clean(kubeconfig: Path) -> None:
    """Delete every Job and pod in the namespace and wait until no pod is left: each run starts empty."""
    from kubernetes.client.exceptions import ApiException

    batch, core = clients(kubeconfig)
    deletes = [
        *((batch.delete_namespaced_job, job.metadata.name, {"propagation_policy": "Background"})
          for job in batch.list_namespaced_job(NAMESPACE).items),
        *((core.delete_namespaced_pod, pod.metadata.name, {"grace_period_seconds": 0})
          for pod in core.list_namespaced_pod(NAMESPACE).items),
    ]  # fmt: skip
    for delete, name, options in deletes:
        try:
            delete(name, NAMESPACE, **options)
        except ApiException as error:
            if error.status != 404:  # gone already (a Job's pod with its Job)
                raise
    deadline = time.monotonic() + 120
    while core.list_namespaced_pod(NAMESPACE).items or batch.list_namespaced_job(NAMESPACE).items:
        if time.monotonic() > deadline:
            raise TimeoutError("the namespace did not empty within 120 s")
        time.sleep(0.2)


# ---- direct: the kubernetes client, no Conveyor ----------------------------------------------------


def _resources() -> dict[str, dict[str, str]]:
    """What manifest.resources gives the service's script container."""
    probe = _service("probe", "true", "probe/in")
    amounts = {"cpu": f"{max(1, math.ceil(probe.cpu_cores * 1000))}m", "memory": str(probe.memory_bytes)}
    return {"requests": amounts, "limits": dict(amounts)}


_SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
"""A stager's resources (manifest.build_job)."""


def _pod_spec(command: str) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 5,
        "containers": [
            {
                "name": "script",
                "image": BUSYBOX,
                "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", command],
                "resources": _resources(),
            }
        ],
    }


def _pod_body(name: str, group: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {BENCH_LABEL: group}}, "spec": spec}


def _job_body(name: str, group: str, command: str) -> dict[str, Any]:
    labels = {BENCH_LABEL: group}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": 300,
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec(command)},
        },
    }


def direct_throughput(kubeconfig: Path, timeline: Timeline, cpu: CpuMeter, jobs: int, tag: str) -> dict[str, Any]:
    batch, _ = clients(kubeconfig)
    group = f"direct-{tag}"
    names = [f"bench-{tag}-{index:04d}" for index in range(jobs)]
    cpu_before, client_before = cpu.read(), time.thread_time()
    started = time.monotonic()
    for name in names:
        batch.create_namespaced_job(NAMESPACE, _job_body(name, group, "true"))
    created = time.monotonic()
    ended = timeline.wait_jobs_ended(names, timeout_s=600)
    cpu_ms = CpuMeter.per_job_ms(cpu_before, cpu.read(), jobs)
    cpu_ms["client"] = round((time.thread_time() - client_before) * 1000 / jobs, 1)
    del cpu_ms["conveyor"], cpu_ms["store"]
    return {
        "seconds": round(ended - started, 2),
        "create_loop_s": round(created - started, 2),
        "cpu_ms_per_job": cpu_ms,
        "steps": timeline.steps(group, started),
        "k8s_jobs": jobs,
        "succeeded": sum(1 for name in names if not timeline.jobs[name].get("failed")),
    }  # fmt: skip


# ---- Conveyor --------------------------------------------------------------------------------------


def _service(name: str, script: str, path: str, batch: int = 0) -> Service:
    return Service.model_validate(
        {"name": name, "image": BUSYBOX, "script": script, "cpu": SERVICE_CPU, "memory": SERVICE_MEMORY,
         "input": [{"path": path}], "output": [{"path": f"{path.split('/')[0]}/out"}],
         "batch": {"max_files": batch} if batch else None}
    )  # fmt: skip


def _platform(kubeconfig: Path, data_dir: Path, pending: int) -> Platform:
    settings = Settings(
        data_dir=data_dir,
        api={"port": 0},
        storage={"s3_port": 0},
        backend="kubernetes",
        kubernetes={
            "enabled": True,
            "kubeconfig": str(kubeconfig),
            "namespace": NAMESPACE,
            "host_network": True,
            "image_pull_policy": "Never",
            "stager_image": BUSYBOX,
            "max_pending_per_service": pending,
        },
        dispatch={"reconcile_interval_s": 0},
    )
    platform = Platform(settings)
    platform.start()
    return platform


def conveyor_throughput(
    kubeconfig: Path, timeline: Timeline, cpu: CpuMeter, scratch: Path, jobs: int, pending: int, batch: int, tag: str
) -> dict[str, Any]:
    platform = _platform(kubeconfig, scratch / f"data-{tag}", pending)
    try:
        name = f"trivial-{tag}"
        service = _service(name, "true", f"{name}/in", batch)
        platform.catalog.apply([service])
        backend = platform.backends["kubernetes"]
        body = b"x" * 1024
        put_at: dict[str, float] = {}
        ended_at: dict[str, float] = {}
        cpu_before = cpu.read()
        started = time.monotonic()
        for index in range(jobs):
            key = f"in/f{index:05d}.txt"
            put_at[key] = time.monotonic()
            platform.storage.default.put_bytes(ObjectRef.parse(f"{name}/{key}"), body)
        while True:
            records = [record for _, record in platform.ledger.list_jobs(name, limit=jobs * 2)]
            now = time.monotonic()
            for record in records:
                if record.state in TERMINAL_STATES:
                    ended_at.setdefault(record.job_id, now)
            if len(records) >= jobs and all(record.state in TERMINAL_STATES for record in records):
                break
            if now - started > 600:
                raise TimeoutError(f"{name}: not every job ended within 600 s")
            time.sleep(0.1)
        elapsed = max(ended_at.values()) - started
        cpu_ms = CpuMeter.per_job_ms(cpu_before, cpu.read(), jobs)
        # A Job's name from its job id and attempt (manifest.job_name), to join the watch with the ledger.
        names = {
            r.job_id: f"conveyor-{hashlib.sha256(r.job_id.encode()).hexdigest()[:20]}-{r.attempt}" for r in records
        }
        before = {
            names[r.job_id]: put_at[r.trigger.ref.key] for r in records if r.trigger and r.trigger.ref.key in put_at
        }
        after = {names[job_id]: at for job_id, at in ended_at.items()}
        return {
            "seconds": round(elapsed, 2),
            "steps": timeline.steps(name, started, before, after),
            "k8s_jobs": timeline.job_count(name, started),
            "succeeded": sum(record.state == JobState.SUCCEEDED for record in records),
            "runs_batches": bool(backend.runs_batches),
            "cpu_ms_per_job": cpu_ms,
        }
    finally:
        platform.stop()


# ---- latency: upload (or create) → the script's first line --------------------------------------------


def latency(kubeconfig: Path, timeline: Timeline, scratch: Path, runs: int, hits: Hits) -> dict[str, Any]:
    batch, core = clients(kubeconfig)
    platform = _platform(kubeconfig, scratch / "data-latency", DEFAULT_PENDING)
    kinds = ("conveyor", "pod", "pod-init", "pod-sidecar", "job")
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    steps: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    try:
        name = "hit"
        script = f'wget -q -O- "http://127.0.0.1:{hits.port}/hit/$(basename "$INPUT_FILE_PATH" .txt)"\n'
        platform.catalog.apply([_service(name, script, "hit/in")])
        for run in range(runs):
            # Conveyor: a file put → its script's first line
            hit_id = f"c{run}"
            started, wall = time.monotonic(), time.time()
            platform.storage.default.put_bytes(ObjectRef.parse(f"hit/in/{hit_id}.txt"), b"x")
            samples["conveyor"].append(hits.wait(hit_id) - started)
            record = _wait_ledger(platform, name, run + 1, hit_id)
            steps["conveyor"].append(
                {"ledger job created": record.created_at.timestamp() - wall}
                | _pod_steps(timeline, name, started, hits.arrived[hit_id])
            )
            # a bare pod: create → its command's first line
            hit_id = f"p{run}"
            pod_name = f"bench-pod-{run}"
            body = _pod_body(pod_name, "pod", _pod_spec(hits.command(hit_id)))
            started = time.monotonic()
            core.create_namespaced_pod(NAMESPACE, body)
            samples["pod"].append(hits.wait(hit_id) - started)
            _wait_pod_ended(timeline, pod_name)
            steps["pod"].append(_pod_steps(timeline, "pod", started, hits.arrived[hit_id]))
            # the same with an init container that does nothing, as Conveyor's pod has one (stage-in)
            hit_id = f"i{run}"
            pod_name = f"bench-pod-init-{run}"
            spec = _pod_spec(hits.command(hit_id))
            spec["initContainers"] = [
                {**spec["containers"][0], "name": "init", "command": ["true"], "resources": _SMALL}
            ]
            body = _pod_body(pod_name, "pod-init", spec)
            started = time.monotonic()
            core.create_namespaced_pod(NAMESPACE, body)
            samples["pod-init"].append(hits.wait(hit_id) - started)
            _wait_pod_ended(timeline, pod_name)
            steps["pod-init"].append(_pod_steps(timeline, "pod-init", started, hits.arrived[hit_id]))
            # what Conveyor's pod could be without the init container: a second container stages in
            # (here: one wget to the loopback server) while the script waits for its marker
            hit_id = f"s{run}"
            pod_name = f"bench-pod-sidecar-{run}"
            spec = _pod_spec(f"while [ ! -f /w/staged ]; do sleep 0.1; done; {hits.command(hit_id)}")
            stager = {**spec["containers"][0], "name": "stage", "resources": _SMALL}
            stager["command"] = ["/bin/sh", "-c", f"{hits.command('stage-' + hit_id)} >/w/in && touch /w/staged"]
            spec["containers"].insert(0, stager)  # started first: the kubelet starts them in order
            for container in spec["containers"]:
                container["volumeMounts"] = [{"name": "w", "mountPath": "/w"}]
            spec["volumes"] = [{"name": "w", "emptyDir": {}}]
            started = time.monotonic()
            core.create_namespaced_pod(NAMESPACE, _pod_body(pod_name, "pod-sidecar", spec))
            samples["pod-sidecar"].append(hits.wait(hit_id) - started)
            _wait_pod_ended(timeline, pod_name)
            steps["pod-sidecar"].append(_pod_steps(timeline, "pod-sidecar", started, hits.arrived[hit_id]))
            # a bare Job: create → its command's first line (the Job controller's share)
            hit_id = f"j{run}"
            job_name = f"bench-job-{run}"
            started = time.monotonic()
            batch.create_namespaced_job(NAMESPACE, _job_body(job_name, "job", hits.command(hit_id)))
            samples["job"].append(hits.wait(hit_id) - started)
            timeline.wait_jobs_ended([job_name], 120)
            steps["job"].append(_pod_steps(timeline, "job", started, hits.arrived[hit_id]))
            print(
                f"latency run {run}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in samples.items()), flush=True
            )
    finally:
        platform.stop()
    return {
        kind: {
            "median_ms": round(statistics.median(values) * 1000, 1),
            "runs_ms": [round(value * 1000, 1) for value in values],
            "steps_ms": _median_steps(steps[kind]),
        }
        for kind, values in samples.items()
    }


def _wait_ledger(platform: Platform, service: str, count: int, hit_id: str) -> JobRecord:
    """The job of the file `hit_id`, once it and every earlier one ended."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = [r for _, r in platform.ledger.list_jobs(service, limit=1000)]
        if len(records) >= count and all(r.state in TERMINAL_STATES for r in records):
            return next(r for r in records if r.trigger and r.trigger.ref.key.endswith(f"/{hit_id}.txt"))
        time.sleep(0.05)
    raise TimeoutError(f"{service}: job {count} did not end")


def _wait_pod_ended(timeline: Timeline, name: str) -> None:
    deadline = time.monotonic() + 120
    while "ended" not in timeline.pods.get(name, {}):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pod {name} did not end")
        time.sleep(0.02)


def _pod_steps(timeline: Timeline, group: str, started: float, hit: float) -> dict[str, float]:
    """Seconds from `started` to each step this process saw of the one pod (and Job) of `group` since."""
    pods = [p for p in timeline.pods.values() if p.get("group") == group and p["created"] >= started]
    if len(pods) != 1:
        return {}
    pod = pods[0]
    job = timeline.jobs.get(pod.get("job") or "")
    points = {"job created": job["created"]} if job else {}
    points |= {f"pod {step}": pod[step] for step in Timeline.POD_STEPS[:4] if step in pod}
    points["first line"] = hit
    return {key: value - started for key, value in points.items()}


def _median_steps(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [key for key in (runs[0] if runs else {}) if all(key in run for run in runs)]
    return {key: round(statistics.median(run[key] for run in runs) * 1000, 1) for key in keys}


# ---- the report ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40, help="jobs per throughput run (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput rounds, interleaved (default 3)")
    parser.add_argument("--latency-runs", type=int, default=5, help="single uploads / pods / Jobs (default 5)")
    parser.add_argument("--batch", type=int, default=0, metavar="K", help="also run with batch: {max_files: K}")
    parser.add_argument("--kubeconfig", help="use this running cluster instead of starting one")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go (default bench/results)")
    args = parser.parse_args()

    variants: list[tuple[str, str, int, int]] = [
        ("direct", "kubernetes client: create_namespaced_job in a loop, busybox `true`", 0, 0),
        ("conveyor", f"Conveyor, max_pending_per_service = {args.jobs}", args.jobs, 0),
    ]
    if args.jobs != DEFAULT_PENDING:
        variants.append(("conveyor-default", f"Conveyor, max_pending_per_service = {DEFAULT_PENDING} (default)",
                         DEFAULT_PENDING, 0))  # fmt: skip
    if args.batch:
        variants.append(("conveyor-batch", f"Conveyor, batch: {{max_files: {args.batch}}}, max_pending = {args.jobs}",
                         args.jobs, args.batch))  # fmt: skip
    rounds: list[dict[str, dict[str, Any]]] = []
    with cluster(args.kubeconfig) as kubeconfig, tempfile.TemporaryDirectory(prefix="conveyor-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        from kubernetes import client, config

        version = client.VersionApi(config.new_client_from_config(str(kubeconfig))).get_code().git_version
        timeline = Timeline(kubeconfig)
        hits = Hits()
        cpu = CpuMeter(kubeconfig.parent, [threading.main_thread(), *timeline.threads, hits.thread])
        try:
            clean(kubeconfig)
            for repeat in range(args.repeats):
                results: dict[str, dict[str, Any]] = {}
                for key, _, pending, batch in variants:
                    tag = f"{key.replace('conveyor', 'c')}-{repeat}"
                    if key == "direct":
                        results[key] = direct_throughput(kubeconfig, timeline, cpu, args.jobs, tag)
                    else:
                        results[key] = conveyor_throughput(
                            kubeconfig, timeline, cpu, scratch, args.jobs, pending, batch, tag
                        )
                    clean(kubeconfig)
                    print(f"round {repeat} {key}: {json.dumps(results[key])}", flush=True)
                rounds.append(results)
            latencies = latency(kubeconfig, timeline, scratch, args.latency_runs, hits) if args.latency_runs else {}
            clean(kubeconfig)
        finally:
            hits.close()
            timeline.close()

    rows = []
    for key, label, _, batch in variants:
        seconds = [r[key]["seconds"] for r in rounds]
        ratios = [r["direct"]["seconds"] / r[key]["seconds"] for r in rounds]
        row = {
            "key": key,
            "variant": label,
            "seconds": seconds,
            "median_s": round(statistics.median(seconds), 2),
            "jobs_per_s": round(args.jobs / statistics.median(seconds), 2),
            "vs_direct": [round(ratio, 2) for ratio in ratios],
            "median_vs_direct": round(statistics.median(ratios), 2),
            "k8s_jobs": [r[key]["k8s_jobs"] for r in rounds],
            "succeeded": [r[key]["succeeded"] for r in rounds],
            "steps_s": rounds[-1][key]["steps"],
            "cpu_ms_per_job": {
                name: round(statistics.median(r[key]["cpu_ms_per_job"][name] for r in rounds), 1)
                for name in rounds[0][key]["cpu_ms_per_job"]
            },
        }
        if batch:
            row["batches_used"] = any(r[key]["runs_batches"] for r in rounds)
            if not row["batches_used"]:
                row["variant"] += " (not used: the backend's runs_batches is False, one Job per file)"
        rows.append(row)
    result = {
        "benchmark": "kubernetes_throughput",
        "command": command_line("bench.kubernetes_throughput"),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "cluster": f"single-node Kubernetes {version} (scripts/kubernetes-up.sh): kubelet on containerd, "
        f"{BUSYBOX} with imagePullPolicy Never, hostNetwork pods, cpu {SERVICE_CPU} / memory {SERVICE_MEMORY} each",
        "jobs": args.jobs,
        "rows": rows,
        "rounds": rounds,
        "latency": latencies,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kubernetes_throughput.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    table = render(result)
    (args.out / "kubernetes_throughput.md").write_text(table)
    print(table)


def render(result: dict[str, Any]) -> str:
    jobs, rows = result["jobs"], result["rows"]
    lines = [
        f"{jobs} trivial jobs (`true`) on {result['cluster']}; {result['machine']}.",
        "Ratio: the direct run's time ÷ this run's, per round (same round, same cluster); ≥ 0.8 is issue 14's target.",
        "",
        "| variant | wall per round | jobs/s (median) | Kubernetes Jobs | ratio to direct (median; per round) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {', '.join(f'{s} s' for s in row['seconds'])} | {row['jobs_per_s']} | "
            f"{'/'.join(map(str, row['k8s_jobs']))} | **{row['median_vs_direct']}** "
            f"({', '.join(map(str, row['vs_direct']))}) |"
        )
    lines += ["", "Median seconds between the steps this process saw (last round):", ""]
    for row in rows:
        lines.append(f"- {row['key']}: " + ", ".join(f"{k} {v}" for k, v in row["steps_s"].items()))
    lines += [
        "",
        "CPU ms per job (median over rounds): `conveyor` the platform's Python (this process less the benchmark's "
        "threads), `store` the embedded SeaweedFS, `client` the direct run's create loop, `cluster` the daemons "
        "(not the per-pod shims and runc):",
        "",
    ]
    for row in rows:
        lines.append(f"- {row['key']}: " + ", ".join(f"{k} {v}" for k, v in row["cpu_ms_per_job"].items()))
    if latency := result["latency"]:
        base = latency["pod"]["median_ms"]
        lines += [
            "",
            "| latency to the script's first line | median | runs | × bare pod |",
            "|---|---|---|---|",
        ]
        names = {"conveyor": "Conveyor: file put → script", "pod": "bare pod: create → command",
                 "pod-init": "bare pod with an init container (`true`): create → command",
                 "pod-sidecar": "bare pod, a second container stages in (one wget), the script waits: create → command",
                 "job": "bare Job: create → command"}  # fmt: skip
        for kind, values in latency.items():
            lines.append(
                f"| {names[kind]} | {values['median_ms']} ms | {', '.join(map(str, values['runs_ms']))} | "
                f"**{values['median_ms'] / base:.2f}** |"
            )
        lines += ["", "Median ms from the put / create to each step this process saw:", ""]
        for kind, values in latency.items():
            lines.append(f"- {kind}: " + ", ".join(f"{k} {v}" for k, v in values["steps_ms"].items()))
    lines += ["", f"`{result['command']}`, {result['when']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
