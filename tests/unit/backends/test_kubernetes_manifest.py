"""The Job a job becomes (a pure function of the JobSpec and the settings), and the job-scoped staging
its pod talks to. tests/e2e/test_kubernetes.py runs both against a real cluster."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.kubernetes import manifest
from conveyor.errors import NotFound, UnsafeKeyError
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef
from conveyor.model.job import JobSpec
from conveyor.model.service import Service
from conveyor.settings import KubernetesSettings
from conveyor.storage.registry import ProviderRegistry
from conveyor.supervisor import contract
from conveyor.supervisor.remote import RemoteStaging


def _spec(tmp_path: Path, job_id: str = "svc-0b8a1c2d-aaaa-bbbb-cccc-0123456789ab", **fields: Any) -> JobSpec:
    service = Service.model_validate(
        {
            "name": "svc",
            "image": "registry.example/tools:1.2",
            "script": "echo hi",
            "cpu": "0.5",
            "memory": "256Mi",
            "timeout": 120,
            "input": [{"path": "bucket/in"}],
            "output": [{"path": "bucket/out"}],
            "environment": {"variables": {"COLOR": "red", "INPUT_FILE_PATH": "user value loses"}},
            **fields,
        }
    )
    event = ObjectEvent(ref=ObjectRef(bucket="bucket", key="in/sub/cat.jpg"), etag="e", size=3)
    return JobSpec(
        job_id=job_id, service=service, event=event, attempt=2, work_dir=tmp_path / "w", log_path=tmp_path / "j.log"
    )


def _job(tmp_path: Path, config: KubernetesSettings | None = None, **fields: Any) -> dict[str, Any]:
    spec = _spec(tmp_path, **fields)
    return manifest.build_job(spec, config or KubernetesSettings(), "http://api:8080/", "tok", "cat.jpg")


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_the_job_is_named_labelled_and_bounded(tmp_path: Path) -> None:
    job = _job(tmp_path, KubernetesSettings(namespace="work", ttl_s=60, time_margin_s=30))
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == manifest.job_name(_spec(tmp_path)) and len(meta["name"]) <= 63
    assert meta["name"].endswith("-2"), "the attempt is part of the name"
    assert meta["namespace"] == "work"
    assert meta["labels"][manifest.JOB_LABEL] == "svc-0b8a1c2d-aaaa-bbbb-cccc-0123456789ab"
    assert meta["labels"][manifest.SERVICE_LABEL] == "svc"
    assert meta["labels"][manifest.MANAGED_BY] == "conveyor"
    assert meta["annotations"][manifest.JOB_ID_ANNOTATION] == "svc-0b8a1c2d-aaaa-bbbb-cccc-0123456789ab"
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 150
    assert spec["ttlSecondsAfterFinished"] == 60
    assert spec["template"]["metadata"]["labels"] == meta["labels"], "the pods carry the labels too"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_a_long_job_id_gets_a_valid_label(tmp_path: Path) -> None:
    long_id = "a-service-with-a-rather-long-name-0b8a1c2d-aaaa-bbbb-cccc-0123456789ab"
    labels = _job(tmp_path, job_id=long_id)["metadata"]["labels"]
    assert len(labels[manifest.JOB_LABEL]) <= 63 and labels[manifest.JOB_LABEL].startswith("h-")


def test_the_users_image_runs_the_script_with_the_contract(tmp_path: Path) -> None:
    pod = _job(tmp_path)["spec"]["template"]["spec"]
    [stager, script] = pod["containers"]
    assert "initContainers" not in pod, "the stager runs beside the script: no init container's second of delay"
    assert script["name"] == manifest.SCRIPT_CONTAINER
    assert script["image"] == "registry.example/tools:1.2", "the user's image, unchanged"
    assert script["command"][:2] == ["/bin/sh", "-c"]
    env = _env(script)
    assert env[contract.INPUT_FILE_PATH] == "/conveyor/input/cat.jpg"
    assert env[contract.TMP_INPUT_DIR] == "/conveyor/input"
    assert env[contract.TMP_OUTPUT_DIR] == "/conveyor/output"
    assert env[contract.STORAGE_OBJECT_KEY] == "in/sub/cat.jpg"
    assert env[contract.JOB_UUID] == "svc-0b8a1c2d-aaaa-bbbb-cccc-0123456789ab"
    assert env[contract.OSCAR_SERVICE_NAME] == "svc"
    assert '"Key": "bucket/in/sub/cat.jpg"' in env[contract.EVENT]
    assert env["COLOR"] == "red"
    assert "CONVEYOR_TOKEN" not in env, "the script's container gets no staging token"
    assert stager["image"] == "localhost/busybox:local"
    assert (
        _env(stager)["CONVEYOR_JOB_URL"] == "http://api:8080/conveyor/v1/jobs/svc-0b8a1c2d-aaaa-bbbb-cccc-0123456789ab"
    )
    assert _env(stager)["CONVEYOR_TOKEN"] == "tok"
    assert _env(stager)["CONVEYOR_INPUT"] == "/conveyor/input/cat.jpg"
    assert pod["automountServiceAccountToken"] is False


def test_resources_gpu_and_the_cluster_settings(tmp_path: Path) -> None:
    config = KubernetesSettings(
        host_network=True,
        image_pull_policy="Never",
        node_selector={"pool": "gpu"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        service_account="runner",
        image_pull_secrets=["regcred"],
        stager_image="site/stager:1",
    )
    pod = _job(tmp_path, config, enable_gpu=True)["spec"]["template"]["spec"]
    stager, script = pod["containers"]
    limits = script["resources"]["limits"]
    assert limits["cpu"] == "500m" and limits["memory"] == str(256 * 2**20)
    requests = [c["resources"]["requests"] for c in pod["containers"]]
    assert sum(int(r["cpu"].removesuffix("m")) for r in requests) == 500, "the pod requests what the service asks"
    assert sum(int(r["memory"]) for r in requests) == 256 * 2**20
    assert script["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert all(c["imagePullPolicy"] == "Never" for c in pod["containers"])
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "gpu"
    assert pod["serviceAccountName"] == "runner" and pod["automountServiceAccountToken"] is True
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert stager["image"] == "site/stager:1"


def test_the_services_oscar_pull_secrets_labels_and_annotations_reach_the_pod(tmp_path: Path) -> None:
    config = KubernetesSettings(image_pull_secrets=["regcred"])
    job = _job(
        tmp_path, config, image_pull_secrets=["team-cred", "regcred"], labels={"team": "bio"}, annotations={"a": "1"}
    )
    template = job["spec"]["template"]

    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "team-cred"}]
    assert template["metadata"]["annotations"]["team"] == "bio" and template["metadata"]["annotations"]["a"] == "1"


def test_file_stage_in_downloads_nothing(tmp_path: Path) -> None:
    pod = _job(tmp_path, file_stage_in=True)["spec"]["template"]["spec"]
    stager, script = pod["containers"]
    assert _env(stager)["CONVEYOR_INPUT"] == ""
    assert _env(script)[contract.INPUT_FILE_PATH] == "/conveyor/input"


def test_the_shell_snippets_parse() -> None:
    for snippet in (manifest.STAGE, manifest.RUN_SCRIPT, manifest.STAGE_BATCH, manifest.STAGE_EACH, manifest.RUN_EACH):
        subprocess.run(["sh", "-n", "-c", snippet], check=True)


class _Store:
    """Stands for a provider: records uploads."""

    def __init__(self) -> None:
        self.uploaded: dict[str, tuple[bytes, dict[str, str] | None]] = {}

    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        self.uploaded[str(ref)] = (path.read_bytes(), metadata)
        return ObjectInfo(ref=ref, etag="x", size=path.stat().st_size)

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        dest.write_bytes(b"input bytes")
        return dest


@pytest.fixture
def staging() -> tuple[RemoteStaging, _Store]:
    store = _Store()
    return RemoteStaging(ProviderRegistry(store), "platform secret"), store  # type: ignore[arg-type]


def test_staging_is_for_the_jobs_own_token_only(tmp_path: Path, staging: tuple[RemoteStaging, _Store]) -> None:
    desk, _ = staging
    spec = _spec(tmp_path)
    token = desk.open_job(spec)
    assert token == RemoteStaging(desk.storage, "platform secret").token_for(spec), "a restart recognises it"
    assert token != RemoteStaging(desk.storage, "other secret").token_for(spec)
    assert desk.read_script(spec.job_id, token) == b"echo hi"
    assert b"".join(desk.read_input(spec.job_id, token)) == b"input bytes"
    for wrong in (None, "", token[:-1] + ("0" if token[-1] != "0" else "1")):
        with pytest.raises(NotFound):
            desk.read_script(spec.job_id, wrong)
    desk.close_job(spec.job_id)
    with pytest.raises(NotFound):
        desk.read_script(spec.job_id, token)


def test_an_output_is_stored_as_stage_out_stores_it(tmp_path: Path, staging: tuple[RemoteStaging, _Store]) -> None:
    desk, store = staging
    spec = _spec(tmp_path)
    token = desk.open_job(spec)
    desk.store_output(spec.job_id, token, "deep dir/r.txt", io.BytesIO(b"result"))
    data, metadata = store.uploaded["bucket/out/deep dir/r.txt"]
    assert data == b"result"
    assert metadata == {contract.PRODUCER_JOB_METADATA: spec.job_id, contract.PRODUCER_DEPTH_METADATA: "0"}
    for hostile in ("../x", "/etc/passwd", "a/../../x", "", "a//b", "./a"):
        with pytest.raises(UnsafeKeyError):
            desk.store_output(spec.job_id, token, hostile, io.BytesIO(b"x"))
    assert [str(info.ref) for info in desk.close_job(spec.job_id)] == ["bucket/out/deep dir/r.txt"]


def test_secrets_travel_in_a_secret_by_reference(tmp_path: Path) -> None:
    fields = {"environment": {"variables": {"A": "1"}, "secrets": {"API_KEY": "s3cr3t", "weird name": "x"}}}
    spec = _spec(tmp_path, **fields)
    job = manifest.build_job(spec, KubernetesSettings(), "http://api", "tok", "cat.jpg")
    env = {item["name"]: item for item in job["spec"]["template"]["spec"]["containers"][1]["env"]}
    assert env["API_KEY"] == {
        "name": "API_KEY",
        "valueFrom": {"secretKeyRef": {"name": job["metadata"]["name"], "key": "s0"}},
    }
    assert "s3cr3t" not in str(job), "no secret value in the Job"
    assert env["A"]["value"] == "1"
    secret = manifest.build_secret(spec, KubernetesSettings())
    assert secret is not None and secret["stringData"] == {"s0": "s3cr3t", "s1": "x"}
    assert secret["metadata"]["name"] == job["metadata"]["name"]
    assert manifest.build_secret(_spec(tmp_path), KubernetesSettings()) is None


def test_the_contract_wins_over_user_values_once(tmp_path: Path) -> None:
    env = _job(tmp_path)["spec"]["template"]["spec"]["containers"][1]["env"]
    names = [item["name"] for item in env]
    assert len(names) == len(set(names)), "each name once: Kubernetes would take the last"
    assert {item["name"]: item.get("value") for item in env}[contract.INPUT_FILE_PATH] == "/conveyor/input/cat.jpg"
