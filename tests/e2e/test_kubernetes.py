"""Services on a real single-node Kubernetes (scripts/kubernetes-up.sh, a real kubelet on containerd): each
job is one batch/v1 Job whose pod stages through the platform's API, with busybox only."""

from __future__ import annotations

import base64
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client, config

from conveyor.backends.kubernetes import manifest
from conveyor.backends.kubernetes.check import check_cluster
from conveyor.errors import DefinitionError
from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from conveyor.settings import KubernetesSettings
from tests.conftest import PlatformFactory
from tests.support.cli import Cli, cli_environment, start_up, stop_up
from tests.support.crash import job_counts, s3_client
from tests.support.kubernetes import BUSYBOX, Kubernetes
from tests.support.platform import (
    keys_under,
    put_text,
    read_text,
    service,
    wait_for_jobs,
    wait_for_queued,
    wait_for_state,
)

pytestmark = pytest.mark.e2e


def _batch(cluster: Kubernetes) -> client.BatchV1Api:
    return client.BatchV1Api(config.new_client_from_config(str(cluster.kubeconfig)))


def test_a_file_runs_as_a_kubernetes_job_and_its_output_is_stored(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    upper = service(
        "upper",
        'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'
        'mkdir -p "$TMP_OUTPUT_DIR/deep dir"\n'
        'echo "$STORAGE_OBJECT_KEY $JOB_UUID" > "$TMP_OUTPUT_DIR/deep dir/k.txt"\n'
        'echo "ran on $(hostname) as $OSCAR_SERVICE_NAME with $GREETING and $API_KEY"',
        ["k8s/in"],
        ["k8s/out"],
        image=BUSYBOX,
        environment={"variables": {"GREETING": "hi"}, "secrets": {"API_KEY": "k-123"}},
    )
    platform.catalog.apply([upper])
    put_text(platform, "k8s/in/a.txt", "hello kubernetes")

    [job] = wait_for_jobs(platform, "upper", 1, timeout_s=90)

    log = platform.jobs.read_log("upper", job.job_id) or ""
    assert job.state == JobState.SUCCEEDED, log
    assert job.exit_code == 0
    assert read_text(platform, "k8s/out/a.txt", tmp_path) == "HELLO KUBERNETES"
    assert read_text(platform, "k8s/out/deep dir/k.txt", tmp_path).strip() == f"in/a.txt {job.job_id}"
    assert "ran on " in log and "as upper with hi and k-123" in log, log
    assert {f"{o.ref}" for o in job.outputs} == {"k8s/out/a.txt", "k8s/out/deep dir/k.txt"}


def test_a_failing_script_fails_its_job_with_its_exit_code_and_log(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    failing = service(
        "failing",
        'echo "about to fail on $INPUT_FILE_PATH"; echo partial > "$TMP_OUTPUT_DIR/partial.txt"; exit 3',
        ["k8sfail/in"],
        ["k8sfail/out"],
        image=BUSYBOX,
    )
    platform.catalog.apply([failing])
    put_text(platform, "k8sfail/in/b.txt", "x")

    [job] = wait_for_jobs(platform, "failing", 1, timeout_s=90)

    log = platform.jobs.read_log("failing", job.job_id) or ""
    assert job.state in (JobState.FAILED, JobState.DEAD), log
    assert job.exit_code == 3, (job, log)
    assert "about to fail on /conveyor/input/b.txt" in log, log
    assert "exited with code 3" in job.message
    assert keys_under(platform, "k8sfail/out") == [], "a failed script uploads nothing"


def test_cancel_deletes_the_kubernetes_job(kubernetes: Kubernetes, make_platform: PlatformFactory) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    sleeper = service("sleeper", "echo started; sleep 300", ["k8ssleep/in"], ["k8ssleep/out"], image=BUSYBOX)
    platform.catalog.apply([sleeper])
    put_text(platform, "k8ssleep/in/c.txt", "x")
    batch = _batch(kubernetes)

    deadline = time.monotonic() + 60
    names: list[str] = []
    while time.monotonic() < deadline and not names:
        jobs = batch.list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=sleeper").items
        names = [job.metadata.name for job in jobs]
        time.sleep(0.2)
    assert names, "the job became a Kubernetes Job"
    [record] = [r for _, r in platform.ledger.list_jobs("sleeper", limit=10)]
    wait_for_state(platform, record.job_id, {"running"})

    answers = platform.jobs.cancel("sleeper", [record.job_id])

    assert answers, answers
    final = wait_for_state(platform, record.job_id, {"cancelled"}, timeout_s=30)
    assert final.state == JobState.CANCELLED
    log = platform.jobs.read_log("sleeper", record.job_id) or ""
    assert "cancelled on request" in log, log
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = batch.list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=sleeper").items
        if not left:
            break
        time.sleep(0.2)
    assert not left, [job.metadata.name for job in left]


def test_a_job_past_its_deadline_times_out(kubernetes: Kubernetes, make_platform: PlatformFactory) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(time_margin_s=1), backend="kubernetes")
    # The deadline counts from the Job's start, staging and pod start included: room for the script to begin.
    slow = service("slow", "echo begun; sleep 60", ["k8sslow/in"], ["k8sslow/out"], image=BUSYBOX, timeout=8)
    platform.catalog.apply([slow])
    put_text(platform, "k8sslow/in/d.txt", "x")

    [job] = wait_for_jobs(platform, "slow", 1, timeout_s=60)

    assert job.state == JobState.TIMED_OUT, (job, platform.jobs.read_log("slow", job.job_id))
    assert "passed its deadline (9 s" in job.message
    log = platform.jobs.read_log("slow", job.job_id) or ""
    assert "begun" in log, log


def test_an_image_that_cannot_be_pulled_fails_the_job_naming_it(
    kubernetes: Kubernetes, make_platform: PlatformFactory
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    missing = service(
        "missing", "echo never", ["k8smiss/in"], ["k8smiss/out"], image="localhost/never-built:local", retries=0
    )
    platform.catalog.apply([missing])
    put_text(platform, "k8smiss/in/e.txt", "x")

    [job] = wait_for_jobs(platform, "missing", 1, timeout_s=60)

    log = platform.jobs.read_log("missing", job.job_id) or ""
    assert job.state in (JobState.FAILED, JobState.DEAD), (job, log)
    assert "localhost/never-built:local" in job.message and "ErrImageNeverPull" in job.message, job.message
    assert "ErrImageNeverPull" in log, log
    assert (
        not _batch(kubernetes).list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=missing").items
    )


def test_a_restarted_platform_adopts_the_jobs_it_left_in_kubernetes(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "adopt"
    # The pod stages through the API's URL: the platform must come back on the same port.
    api = {"port": _free_port()}
    first = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes", data_dir=data_dir, api=api)
    # The script outlives the first platform and ends once the second one is up.
    script = 'sleep 10; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"; echo copied'
    first.catalog.apply([service("keep", script, ["k8skeep/in"], ["k8skeep/out"], image=BUSYBOX)])
    put_text(first, "k8skeep/in/a.txt", "kept")
    _wait_until_running(kubernetes, "keep")
    first.stop()

    second = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes", data_dir=data_dir, api=api)
    [job] = wait_for_jobs(second, "keep", 1, timeout_s=60)

    log = second.jobs.read_log("keep", job.job_id) or ""
    assert second.adopted == 1
    assert job.state == JobState.SUCCEEDED and job.attempt == 1, log
    assert read_text(second, "k8skeep/out/a.txt", tmp_path) == "kept"
    assert "copied" in log, log


def _wait_until_running(cluster: Kubernetes, service_name: str, timeout_s: float = 60.0) -> None:
    core = client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod("default", label_selector=f"{manifest.SERVICE_LABEL}={service_name}").items
        if any(pod.status.phase == "Running" for pod in pods):
            return
        time.sleep(0.1)
    raise AssertionError(f"no pod of {service_name} ran within {timeout_s} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_job_deleted_outside_conveyor_fails_and_says_so(
    kubernetes: Kubernetes, make_platform: PlatformFactory
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    sleeper = service("gone", "sleep 300", ["k8sgone/in"], ["k8sgone/out"], image=BUSYBOX, retries=0)
    platform.catalog.apply([sleeper])
    put_text(platform, "k8sgone/in/f.txt", "x")
    _wait_until_running(kubernetes, "gone")
    batch = _batch(kubernetes)
    [name] = [
        j.metadata.name
        for j in batch.list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=gone").items
    ]

    batch.delete_namespaced_job(name, "default", propagation_policy="Background")

    [job] = wait_for_jobs(platform, "gone", 1, timeout_s=30)
    assert job.state in (JobState.FAILED, JobState.DEAD), job
    assert "deleted outside Conveyor" in job.message, job.message


def test_a_pod_nobody_can_schedule_fails_its_job_after_the_bound(
    kubernetes: Kubernetes, make_platform: PlatformFactory
) -> None:
    settings = kubernetes.settings(unschedulable_timeout_s=2)
    platform = make_platform(kubernetes=settings, backend="kubernetes")
    huge = service("huge", "echo never", ["k8shuge/in"], ["k8shuge/out"], image=BUSYBOX, memory="4000Gi", retries=0)
    platform.catalog.apply([huge])
    put_text(platform, "k8shuge/in/g.txt", "x")

    [job] = wait_for_jobs(platform, "huge", 1, timeout_s=30)

    assert job.state in (JobState.FAILED, JobState.DEAD), job
    assert "cannot be scheduled" in job.message and "Insufficient memory" in job.message, job.message
    assert not _batch(kubernetes).list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=huge").items


def test_the_staging_routes_want_the_jobs_own_token(kubernetes: Kubernetes, make_platform: PlatformFactory) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    sleeper = service("guarded", "sleep 300", ["k8sguard/in"], ["k8sguard/out"], image=BUSYBOX)
    platform.catalog.apply([sleeper])
    put_text(platform, "k8sguard/in/h.txt", "secret input")
    _wait_until_running(kubernetes, "guarded")
    [record] = [r for _, r in platform.ledger.list_jobs("guarded", limit=10)]
    base = f"{platform.api_url}/conveyor/v1/jobs/{record.job_id}"
    admin = (platform.credentials.admin_user, platform.credentials.admin_password)

    assert httpx.get(f"{base}/input").status_code == 404
    assert httpx.get(f"{base}/input", auth=admin).status_code == 404, "the admin's password is no job token"
    assert httpx.get(f"{base}/input", headers={"Authorization": "Bearer nope"}).status_code == 404
    assert httpx.post(f"{base}/outputs/x.txt", content=b"x", headers={"Authorization": "Bearer no"}).status_code == 404
    [kube_job] = (
        _batch(kubernetes).list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=guarded").items
    )
    [stager] = [c for c in kube_job.spec.template.spec.containers if c.name == manifest.STAGER_CONTAINER]
    [token] = [e.value for e in stager.env if e.name == "CONVEYOR_TOKEN"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/input", headers=bearer).content == b"secret input"
    assert httpx.post(f"{base}/outputs/..%2Fescape", content=b"x", headers=bearer).status_code == 400
    platform.jobs.cancel("guarded", [record.job_id])


def test_kubernetes_check_reports_each_finding(kubernetes: Kubernetes, make_platform: PlatformFactory) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    good = KubernetesSettings.model_validate(kubernetes.settings())

    report = check_cluster(good, platform.api_url, timeout_s=60)

    assert report.ok, report
    assert [f.what for f in report.findings] == ["API", "namespace", "RBAC", "probe"]
    assert "Kubernetes v1.34" in report.findings[0].detail
    assert f"reached {platform.api_url}" in report.findings[3].detail

    missing = check_cluster(good.model_copy(update={"namespace": "nowhere"}), platform.api_url, timeout_s=10)
    assert not missing.ok and "nowhere does not exist" in missing.findings[-1].detail, missing


def test_the_kubernetes_check_command(kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    env = cli_environment(
        tmp_path,
        CONVEYOR_KUBERNETES__KUBECONFIG=str(kubernetes.kubeconfig),
        CONVEYOR_KUBERNETES__HOST_NETWORK="true",
        CONVEYOR_KUBERNETES__IMAGE_PULL_POLICY="Never",
        CONVEYOR_KUBERNETES__API_URL=platform.api_url,
    )

    done = Cli(env, tmp_path)("kubernetes", "check", "--timeout", "60")

    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["ok API", "ok namespace", "ok RBAC", "ok probe"], done.stdout
    refused = Cli(env | {"CONVEYOR_KUBERNETES__NAMESPACE": "nowhere"}, tmp_path)("kubernetes", "check", check=False)
    assert refused.returncode == 1
    assert "problem namespace: nowhere does not exist" in refused.stdout, refused.stdout


def test_jobs_survive_30_s_without_the_api_server(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    script = 'sleep 6; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"; echo copied'
    platform.catalog.apply([service("steady", script, ["k8ssteady/in"], ["k8ssteady/out"], image=BUSYBOX)])
    put_text(platform, "k8ssteady/in/a.txt", "steady")
    _wait_until_running(kubernetes, "steady")

    backend, seen = platform.backends["kubernetes"], []

    def meanwhile() -> None:  # a file arrives while the API is away; what the platform says then
        put_text(platform, "k8ssteady/in/b.txt", "arrived during the outage")
        time.sleep(10)
        seen.append(backend.problem())

    arrival = threading.Timer(8, meanwhile)
    arrival.start()
    kubernetes.restart_apiserver(down_s=30)  # the issue: API server unreachable for 30 s
    arrival.join()

    jobs = wait_for_jobs(platform, "steady", 2, timeout_s=120)
    logs = [platform.jobs.read_log("steady", job.job_id) or "" for job in jobs]
    assert [(job.state, job.attempt) for job in jobs] == [(JobState.SUCCEEDED, 1)] * 2, logs
    assert read_text(platform, "k8ssteady/out/a.txt", tmp_path) == "steady"
    assert read_text(platform, "k8ssteady/out/b.txt", tmp_path) == "arrived during the outage"
    assert all("copied" in log for log in logs), logs
    assert seen[0] is not None and "the Kubernetes API has not answered for" in seen[0], seen
    assert backend.problem() is None


def test_a_burst_waits_in_the_ledger_under_the_admission_limit(
    kubernetes: Kubernetes, make_platform: PlatformFactory
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(max_pending_per_service=4), backend="kubernetes")
    copy = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'
    platform.catalog.apply([service("burst", copy, ["k8sburst/in"], ["k8sburst/out"], image=BUSYBOX)])
    batch = _batch(kubernetes)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            jobs = batch.list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=burst").items
            peak[0] = max(peak[0], sum(1 for job in jobs if not (job.status.conditions or [])))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    for index in range(20):
        put_text(platform, f"k8sburst/in/{index:02}.txt", f"file {index}")
    jobs = wait_for_jobs(platform, "burst", 20, timeout_s=240)
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()

    assert [job.state for job in jobs] == [JobState.SUCCEEDED] * 20
    assert len(keys_under(platform, "k8sburst/out")) == 20
    assert 1 <= peak[0] <= 4, f"at most 4 Jobs of the service in the cluster at once, saw {peak[0]}"
    print(f"20 jobs, 4 at a time: {elapsed:.1f} s")


def test_http_invocations_run_on_kubernetes(kubernetes: Kubernetes, make_platform: PlatformFactory) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(), backend="kubernetes")
    script = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/out.txt"; echo "event: $EVENT"'
    platform.catalog.apply([service("shout", script, [], [], image=BUSYBOX)])
    auth = (platform.credentials.admin_user, platform.credentials.admin_password)

    answer = httpx.post(f"{platform.api_url}/run/shout", content=b"aGkgdGhlcmU=", auth=auth, timeout=90)

    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.text) == b"HI THERE", "the one output file, base64, as OSCAR answers"
    accepted = httpx.post(f"{platform.api_url}/job/shout", content=b"aGk=", auth=auth)
    assert accepted.status_code == 201
    record = wait_for_state(platform, accepted.headers["x-conveyor-job-id"], {"succeeded", "failed", "dead"}, 90)
    log = platform.jobs.read_log("shout", record.job_id) or ""
    assert record.state == JobState.SUCCEEDED and "event: aGk=" in log, log


@pytest.mark.parametrize(
    ("namespace", "scopes"),
    [
        ("quota-foreseen", None),  # Conveyor reads the quota and holds the jobs back
        ("quota-refused", ["NotBestEffort"]),  # a scope it does not model: the pods are refused, the jobs wait
    ],
)
def test_a_full_resource_quota_makes_jobs_wait_not_fail(
    kubernetes: Kubernetes, make_platform: PlatformFactory, namespace: str, scopes: list[str] | None
) -> None:
    core = client.CoreV1Api(config.new_client_from_config(str(kubernetes.kubeconfig)))
    core.create_namespace({"metadata": {"name": namespace}})
    quota = {"metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}, **({"scopes": scopes} if scopes else {})}}
    core.create_namespaced_resource_quota(namespace, quota)
    _wait_for_service_account(core, namespace)
    platform = make_platform(kubernetes=kubernetes.settings(namespace=namespace), backend="kubernetes")
    script = 'sleep 2; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'
    name = namespace.replace("-", "")
    platform.catalog.apply([service(name, script, [f"{name}/in"], [f"{name}/out"], image=BUSYBOX)])
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pods = core.list_namespaced_pod(namespace).items
            peak[0] = max(peak[0], sum(1 for pod in pods if pod.status.phase in ("Pending", "Running")))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for index in range(3):
        put_text(platform, f"{name}/in/{index}.txt", f"file {index}")
    jobs = wait_for_jobs(platform, name, 3, timeout_s=180)
    stop.set()
    sampler.join()

    logs = [platform.jobs.read_log(name, job.job_id) or "" for job in jobs]
    assert [(job.state, job.attempt) for job in jobs] == [(JobState.SUCCEEDED, 1)] * 3, logs
    assert len(keys_under(platform, f"{name}/out")) == 3
    assert peak[0] == 1, "the quota admits one pod at a time"
    if scopes:
        waited = [log for log in logs if "exceeded quota" in log and "waits for room" in log]
        assert waited, f"at least one pod was refused and its job waited: {logs}"


def _wait_for_service_account(core: client.CoreV1Api, namespace: str) -> None:
    """A new namespace's `default` service account comes from a controller, a moment later."""
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(namespace, field_selector="metadata.name=default").items:
        assert time.monotonic() < deadline, f"no default service account in {namespace}"
        time.sleep(0.2)


def _hold_and_queue(cluster: Kubernetes, platform: Platform, name: str, files: dict[str, str]) -> None:
    """A first upload takes the service's one Job slot (its script sleeps); `files` queue behind it."""
    put_text(platform, f"{name}/in/first.txt", "first")
    _wait_until_running(cluster, name)
    for file, text in files.items():
        put_text(platform, f"{name}/in/{file}", text)
    wait_for_queued(platform, name, len(files))


def test_a_batch_runs_as_one_job_each_input_with_its_own_outcome(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(max_pending_per_service=1), backend="kubernetes")
    script = (
        'case "$INPUT_FILE_PATH" in *first*) sleep 4;; *bad*) echo "no good: $STORAGE_OBJECT_KEY"; exit 3;; esac\n'
        'name=$(basename "$INPUT_FILE_PATH"); tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$name"\n'
        'printf "\\000\\001%s" "$name" > "$TMP_OUTPUT_DIR/$name.bin"; echo "did $JOB_UUID"'
    )
    batch = {"max_files": 10, "mode": "each"}
    platform.catalog.apply([service("k8sbatch", script, ["k8sbatch/in"], ["k8sbatch/out"], image=BUSYBOX, batch=batch)])
    files = {f"f{index}.txt": f"text {index}" for index in range(5)} | {"bad.txt": "bad"}
    _hold_and_queue(kubernetes, platform, "k8sbatch", files)

    jobs = wait_for_jobs(platform, "k8sbatch", 7, timeout_s=120)

    by_key = {job.trigger.ref.key: job for job in jobs if job.trigger}
    assert by_key["in/bad.txt"].state == JobState.FAILED and by_key["in/bad.txt"].exit_code == 3
    assert [by_key[f"in/{file}"].state for file in files if file != "bad.txt"] == [JobState.SUCCEEDED] * 5
    for file, text in files.items():
        if file != "bad.txt":
            assert read_text(platform, f"k8sbatch/out/{file}", tmp_path) == text.upper()
            job = by_key[f"in/{file}"]
            assert sorted(o.ref.key for o in job.outputs) == [f"out/{file}", f"out/{file}.bin"], "its own outputs"
            binary = platform.storage.default.download(ObjectRef.parse(f"k8sbatch/out/{file}.bin"), tmp_path / file)
            assert binary.read_bytes() == b"\x00\x01" + file.encode(), "binary outputs arrive whole"
            log = platform.jobs.read_log("k8sbatch", job.job_id) or ""
            assert f"did {job.job_id}" in log, log
    bad_log = platform.jobs.read_log("k8sbatch", by_key["in/bad.txt"].job_id) or ""
    assert "no good: in/bad.txt" in bad_log and "did " not in bad_log, bad_log
    names = {
        job.metadata.name
        for job in _batch(kubernetes)
        .list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=k8sbatch")
        .items
    }
    assert len(names) == 2, f"the first upload alone, then one Job for the six queued inputs: {names}"


def test_a_directory_batch_runs_the_script_once_in_one_job(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(kubernetes=kubernetes.settings(max_pending_per_service=1), backend="kubernetes")
    script = (
        'case "$INPUT_FILE_PATH" in *first*) sleep 4;; esac\n'
        'printf "%s\\n" "$INPUT_FILE_PATHS" | while read -r f; do cp "$f" "$TMP_OUTPUT_DIR/"; done; echo run'
    )
    batch = {"max_files": 10, "mode": "directory"}
    platform.catalog.apply([service("k8sdir", script, ["k8sdir/in"], ["k8sdir/out"], image=BUSYBOX, batch=batch)])
    files = {f"f{index}.txt": f"text {index}" for index in range(4)}
    _hold_and_queue(kubernetes, platform, "k8sdir", files)

    jobs = wait_for_jobs(platform, "k8sdir", 5, timeout_s=120)

    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert keys_under(platform, "k8sdir/out") == sorted(f"out/{name}" for name in ["first.txt", *files])
    assert read_text(platform, "k8sdir/out/f2.txt", tmp_path) == "text 2"
    leads = [job for job in jobs if job.trigger and job.trigger.ref.key != "in/first.txt" and job.outputs]
    assert len(leads) == 1 and len(leads[0].outputs) == 4, "the batch's outputs are recorded on the job that led it"


def test_a_200_file_burst_waits_in_the_ledger_not_as_pending_pods(
    kubernetes: Kubernetes, make_platform: PlatformFactory
) -> None:
    """Pods no node may take (a node selector nobody matches) stay Pending: what the cluster holds
    is only what admission let through; the rest waits in the ledger and follows as Jobs end."""
    settings = kubernetes.settings(max_pending_per_service=10, node_selector={"conveyor-test": "nowhere"})
    platform = make_platform(kubernetes=settings, backend="kubernetes")
    platform.catalog.apply([service("flood", "true", ["k8sflood/in"], [], image=BUSYBOX)])
    batch = _batch(kubernetes)

    def jobs_in_cluster() -> set[str]:
        found = batch.list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=flood").items
        return {job.metadata.name for job in found if job.metadata.deletion_timestamp is None}

    def settle(jobs: int, queued: int) -> set[str]:
        deadline = time.monotonic() + 60
        while True:
            names, counts = jobs_in_cluster(), platform.ledger.count_jobs("flood").get("flood", {})
            if len(names) == jobs and counts.get(JobState.QUEUED, 0) == queued:
                return names
            assert time.monotonic() < deadline, f"{len(names)} Jobs, ledger {counts}"
            time.sleep(0.2)

    for index in range(200):
        put_text(platform, f"k8sflood/in/{index:03}.txt", "x")
    first = settle(10, 190)
    for _ in range(10):  # it stays so
        assert len(jobs_in_cluster()) <= 10
        time.sleep(0.2)
    running = [r.job_id for _, r in platform.ledger.list_jobs("flood", limit=1000) if r.state == JobState.RUNNING]
    platform.jobs.cancel("flood", running)
    second = settle(10, 180)

    assert not first & second, "ten Jobs ended (cancelled), ten queued jobs took their place"
    platform.jobs.cancel("flood", queued=True)
    running = [r.job_id for _, r in platform.ledger.list_jobs("flood", limit=1000) if r.state == JobState.RUNNING]
    platform.jobs.cancel("flood", running)
    jobs = wait_for_jobs(platform, "flood", 200, timeout_s=60)
    assert {job.state for job in jobs} == {JobState.CANCELLED}


def test_apply_refuses_a_missing_namespace_and_missing_permissions(
    kubernetes: Kubernetes, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    absent = make_platform(kubernetes=kubernetes.settings(namespace="absent"), backend="kubernetes")
    with pytest.raises(DefinitionError) as refused:
        absent.catalog.apply([service("lost", "true", ["k8slost/in"], [], image=BUSYBOX)])
    assert "the Kubernetes namespace absent does not exist: kubectl create namespace absent" in str(refused.value)

    limited = _limited_kubeconfig(kubernetes, tmp_path / "limited.kubeconfig")
    settings = kubernetes.settings(kubeconfig=str(limited))
    platform = make_platform(kubernetes=settings, backend="kubernetes", data_dir=tmp_path / "limited")
    with pytest.raises(DefinitionError) as refused:
        platform.catalog.apply([service("meek", "true", ["k8smeek/in"], [], image=BUSYBOX)])
    message = str(refused.value)
    assert "Conveyor's Kubernetes account is not allowed in default:" in message, message
    assert "delete jobs.batch" in message and "get pods/log" in message and "create jobs.batch" not in message


def _limited_kubeconfig(cluster: Kubernetes, path: Path) -> Path:
    """A service account that may create and read Jobs only (no delete, no pod logs, no Secrets)."""
    api = config.new_client_from_config(str(cluster.kubeconfig))
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account("default", {"metadata": {"name": "meek"}})
    rule = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}
    rbac.create_namespaced_role("default", {"metadata": {"name": "meek"}, "rules": [rule]})
    binding = {
        "metadata": {"name": "meek"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "meek"},
        "subjects": [{"kind": "ServiceAccount", "name": "meek", "namespace": "default"}],
    }
    rbac.create_namespaced_role_binding("default", binding)
    token = core.create_namespaced_service_account_token("meek", "default", {"spec": {}}).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    limited = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "meek", "user": {"token": token}}],
        "contexts": [{"name": "meek", "context": {"cluster": admin["clusters"][0]["name"], "user": "meek"}}],
        "current-context": "meek",
    }
    path.write_text(yaml.safe_dump(limited))
    return path


def test_kill_9_adopts_the_running_jobs_and_starts_the_queued_ones_once(kubernetes: Kubernetes, tmp_path: Path) -> None:
    """`conveyor up` killed with -9 while two Jobs run and two jobs wait in the ledger (admission limit
    2): the restarted platform adopts the two by name and starts the two others; nothing runs twice."""
    port = _free_port()  # the pods stage through the API's URL: the restart must serve the same one
    env = cli_environment(
        tmp_path,
        CONVEYOR_BACKEND="kubernetes",
        CONVEYOR_KUBERNETES__ENABLED="true",
        CONVEYOR_KUBERNETES__KUBECONFIG=str(kubernetes.kubeconfig),
        CONVEYOR_KUBERNETES__HOST_NETWORK="true",
        CONVEYOR_KUBERNETES__IMAGE_PULL_POLICY="Never",
        CONVEYOR_KUBERNETES__MAX_PENDING_PER_SERVICE="2",
    )
    cli = Cli(env, tmp_path)
    fdl = tmp_path / "survivor.yaml"
    fdl.write_text(
        "functions:\n  oscar:\n  - local:\n      name: survivor\n      image: localhost/busybox:local\n"
        "      script: survivor.sh\n      input: [{path: k8ssurv/in}]\n      output: [{path: k8ssurv/out}]\n"
    )
    (tmp_path / "survivor.sh").write_text('sleep 8; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"; echo copied\n')
    up = start_up(env, tmp_path, ["--port", str(port)])
    try:
        cli("apply", str(fdl))
        store = s3_client(Path(env["CONVEYOR_DATA_DIR"]))
        for index in range(4):
            store.put_object(Bucket="k8ssurv", Key=f"in/{index}.txt", Body=f"survivor {index}".encode())
        _wait_until_running(kubernetes, "survivor")
        deadline = time.monotonic() + 30
        while job_counts(env).get("survivor", {}) != {"running": 2, "queued": 2}:
            assert time.monotonic() < deadline, job_counts(env)
            time.sleep(0.2)
    finally:
        up.kill()  # kill -9: no clean-up of any kind
        up.wait(30)

    up = start_up(env, tmp_path, ["--port", str(port)])
    try:
        deadline = time.monotonic() + 120
        while job_counts(env).get("survivor", {}).get("succeeded", 0) < 4:
            assert time.monotonic() < deadline, job_counts(env)
            time.sleep(0.5)
        jobs = cli.json("jobs", "survivor")
        listing = s3_client(Path(env["CONVEYOR_DATA_DIR"])).list_objects_v2(Bucket="k8ssurv", Prefix="out/")
    finally:
        stop_up(up, tmp_path)

    assert isinstance(jobs, list) and sorted((job["state"], job["attempt"]) for job in jobs) == [("succeeded", 1)] * 4
    names = {
        job.metadata.name
        for job in _batch(kubernetes)
        .list_namespaced_job("default", label_selector=f"{manifest.SERVICE_LABEL}=survivor")
        .items
    }
    assert len(names) == 4, f"four Jobs, one per file: the adopted two were not created again: {names}"
    assert "jobs the last run left running: 2 picked up where they were" in (tmp_path / "up.log").read_text()
    outputs = sorted(o["Key"] for o in listing["Contents"] if not o["Key"].endswith("/"))  # "out/": the folder
    assert outputs == [f"out/{index}.txt" for index in range(4)]
