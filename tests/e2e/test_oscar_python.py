"""The official OSCAR Python client (oscar-python 2.2.0) against a running platform, through its public API only.

Every action goes through `oscar_python`, so what these tests see is what a user of the client sees; only some
checks look at the store directly, and the presigned URLs are used with httpx. The client returns
`requests.Response` objects and raises `requests.HTTPError` for error statuses (reference §4.1).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import yaml
from oscar_python.client import Client
from oscar_python.client_anon import AnonymousClient

from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory

pytestmark = pytest.mark.e2e

CLUSTER_ID = "conveyor-test"
SAMPLES = Path(__file__).parent / "samples" / "oscar"
SHOUT_FDL = SAMPLES / "shout.yaml"
TOKEN_RE = re.compile(r"^[0-9a-f]{64}$")
FINISHED = {"Succeeded", "Failed"}


def oscar_client(platform: Platform) -> Client:
    return Client(
        {
            "cluster_id": CLUSTER_ID,
            "endpoint": platform.api_url,
            "user": platform.credentials.admin_user,
            "password": platform.credentials.admin_password,
            "ssl": False,
        }
    )


def anonymous_client(platform: Platform) -> AnonymousClient:
    return AnonymousClient({"cluster_id": CLUSTER_ID, "endpoint": platform.api_url, "ssl": False})


def definition(
    name: str, script: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (), **fields: Any
) -> dict[str, Any]:
    """A service as a user of the client writes it: a plain dict in OSCAR's shape."""
    return {
        "name": name,
        "image": "docker.io/library/alpine:3.20",
        "script": script,
        "input": [{"storage_provider": "minio.default", "path": path} for path in inputs],
        "output": [{"storage_provider": "minio.default", "path": path} for path in outputs],
        **fields,
    }


def http_error(raised: pytest.ExceptionInfo[requests.HTTPError]) -> tuple[int, str]:
    response = raised.value.response
    assert response is not None
    return response.status_code, response.text


def wait_for_jobs(client: Client, service: str, count: int, timeout_s: float = 60.0) -> dict[str, dict[str, str]]:
    """Poll `list_jobs` until the service has `count` finished jobs and nothing else; return them."""
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = client.list_jobs(service).json()["jobs"]
        finished = {job: info for job, info in jobs.items() if info["status"] in FINISHED}
        if len(finished) >= count and len(finished) == len(jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"{service}: expected {count} finished jobs within {timeout_s} s, have {jobs}")
        time.sleep(0.1)


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} has no time zone"
    return moment


# ---- services --------------------------------------------------------------------------------------------------


def test_a_service_from_a_dict_is_listed_read_updated_and_removed(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = oscar_client(platform)
    script = 'echo "$GREETING, the key has ${#API_KEY} characters"'
    greet = definition(
        "greet",
        script,
        inputs=("greet/in",),
        outputs=("greet/out",),
        environment={"variables": {"GREETING": "hello"}, "secrets": {"API_KEY": "s3cr3t"}},
    )

    created = client.create_service(greet)
    assert (created.status_code, created.text) == (201, "")
    with pytest.raises(ValueError, match="already present"):
        client.create_service(greet)

    listed = client.list_services()
    assert listed.status_code == 200
    assert [s["name"] for s in listed.json()] == ["greet"]

    shown = client.get_service("greet").json()
    token = shown["token"]
    assert TOKEN_RE.match(token), token
    assert shown["environment"]["secrets"] == {"API_KEY": ""}
    assert shown["environment"]["variables"] == {"GREETING": "hello"}
    assert "s3cr3t" not in client.get_service("greet").text
    assert (shown["memory"], shown["cpu"]) == ("256Mi", "0.2")
    assert shown["script"] == script
    assert [(io["storage_provider"], io["path"]) for io in shown["input"]] == [("minio.default", "greet/in")]
    assert [(io["storage_provider"], io["path"]) for io in shown["output"]] == [("minio.default", "greet/out")]
    assert client.run_service("greet", input="x").text == "hello, the key has 6 characters\n"

    secrets = {"API_KEY": "s3cr3t"}
    changed = greet | {
        "memory": "512Mi",
        "cpu": "0.5",
        "environment": {"variables": {"GREETING": "bye"}, "secrets": secrets},
    }
    updated = client.update_service("greet", changed)
    assert 200 <= updated.status_code < 300
    again = client.get_service("greet").json()
    assert again["token"] == token
    assert (again["memory"], again["cpu"]) == ("512Mi", "0.5")
    assert again["environment"]["secrets"] == {"API_KEY": ""}
    assert client.run_service("greet", input="x").text == "bye, the key has 6 characters\n"
    with pytest.raises(ValueError, match="not present"):
        client.update_service("missing", changed | {"name": "missing"})

    removed = client.remove_service("greet")
    assert removed.status_code == 204
    with pytest.raises(requests.HTTPError) as gone:
        client.get_service("greet")
    assert http_error(gone) == (404, "")
    with pytest.raises(requests.HTTPError) as gone_again:
        client.remove_service("greet")
    assert http_error(gone_again)[0] == 404
    with pytest.raises(requests.HTTPError) as no_token:  # run_service first reads the service for its token
        client.run_service("greet", input="x")
    assert http_error(no_token)[0] == 404
    assert client.list_services().json() == []


def test_a_service_from_an_fdl_file_embeds_its_script_and_is_updated_from_an_fdl(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    client = oscar_client(platform)

    created = client.create_service(str(SHOUT_FDL))
    assert created.status_code == 201
    shown = client.get_service("shout").json()
    assert shown["script"] == (SAMPLES / "shout.sh").read_text()
    assert (shown["memory"], shown["cpu"]) == ("128Mi", "0.5")  # the FDL's number 0.5 arrives as "0.5"
    assert shown["environment"]["variables"] == {"SUFFIX": "!"}
    token = shown["token"]
    assert TOKEN_RE.match(token)

    answer = client.run_service("shout", input="fdl works")
    assert base64.b64decode(answer.text) == b"FDL WORKS!\n"

    # The same FDL elsewhere, with its script next to it and new values: `script:` is read relative to the FDL.
    fdl = yaml.safe_load(SHOUT_FDL.read_text())
    fields = fdl["functions"]["oscar"][0][CLUSTER_ID]
    fields.update(memory="1Gi", cpu=1, environment={"variables": {"SUFFIX": "?"}})
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(SAMPLES / "shout.sh", moved / "shout.sh")
    (moved / "shout.yaml").write_text(yaml.safe_dump(fdl))
    updated = client.update_service("shout", str(moved / "shout.yaml"))
    assert 200 <= updated.status_code < 300
    again = client.get_service("shout").json()
    assert (again["memory"], again["cpu"], again["token"]) == ("1Gi", "1", token)
    assert base64.b64decode(client.run_service("shout", input="again").text) == b"AGAIN?\n"

    # What a user sees from the client's own checks, before any request: a foreign cluster id, or no `cpu`.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(SAMPLES / "shout.sh", foreign / "shout.sh")
    other = {"functions": {"oscar": [{"another-cluster": {**fields, "name": "foreign"}}]}}
    (foreign / "shout.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(Exception, match="clusterID does not match"):
        client.create_service(str(foreign / "shout.yaml"))
    no_cpu = {
        "functions": {"oscar": [{CLUSTER_ID: {k: v for k, v in fields.items() if k != "cpu"} | {"name": "nocpu"}}]}
    }
    (foreign / "nocpu.yaml").write_text(yaml.safe_dump(no_cpu))
    with pytest.raises(KeyError, match="cpu"):
        client.create_service(str(foreign / "nocpu.yaml"))
    assert [s["name"] for s in client.list_services().json()] == ["shout"]


# ---- invocation ------------------------------------------------------------------------------------------------


def test_run_service_returns_the_output_file_a_zip_or_the_printed_output(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    client = oscar_client(platform)
    client.create_service(definition("upper", 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/upper.txt"'))
    client.create_service(definition("copy", 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/result.bin"'))
    several = (
        'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/a.txt"; mkdir "$TMP_OUTPUT_DIR/d"; echo b > "$TMP_OUTPUT_DIR/d/b.txt"'
    )
    client.create_service(definition("pack", several))
    client.create_service(definition("say", 'echo "you said: $(cat "$INPUT_FILE_PATH")"'))

    text = client.run_service("upper", input="hello oscar")
    assert text.status_code == 200
    assert base64.b64decode(text.text) == b"HELLO OSCAR"
    client.run_service("upper", input="into a file", output=str(tmp_path / "upper.txt"))
    assert (tmp_path / "upper.txt").read_text() == "INTO A FILE"

    binary = bytes(range(256)) * 64
    (tmp_path / "input.bin").write_bytes(binary)
    copied = client.run_service("copy", input=str(tmp_path / "input.bin"), output=str(tmp_path / "result.bin"))
    assert copied.status_code == 200
    assert (tmp_path / "result.bin").read_bytes() == binary

    client.run_service("pack", input="zip me", output=str(tmp_path / "result.zip"))
    archive = zipfile.ZipFile(io.BytesIO((tmp_path / "result.zip").read_bytes()))
    assert sorted(archive.namelist()) == ["a.txt", "d/b.txt"]
    assert archive.read("a.txt") == b"zip me"
    assert archive.read("d/b.txt") == b"b\n"

    printed = client.run_service("say", input="hi", output=str(tmp_path / "said.txt"))
    assert printed.text == "you said: hi\n"
    # Not base64 even to the client's lenient check, so the text is written as it came.
    assert (tmp_path / "said.txt").read_text() == "you said: hi\n"


def test_async_runs_are_listed_logged_and_removed(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = oscar_client(platform)
    script = 'echo "processing $(cat "$INPUT_FILE_PATH")"; case "$(cat "$INPUT_FILE_PATH")" in fail*) exit 1;; esac'
    client.create_service(definition("echoer", script))

    accepted = client.run_service("echoer", input="first", async_call=True)
    assert (accepted.status_code, accepted.text) == (201, "")
    jobs = wait_for_jobs(client, "echoer", 1)
    [(job_id, info)] = jobs.items()
    assert info["status"] == "Succeeded"
    assert parse_time(info["creation_time"]) <= parse_time(info["finish_time"])
    logs = client.get_job_logs("echoer", job_id)
    assert logs.status_code == 200
    assert "processing first" in logs.text

    assert client.remove_job("echoer", job_id).status_code == 204
    assert client.list_jobs("echoer").json()["jobs"] == {}
    with pytest.raises(requests.HTTPError) as missing:
        client.get_job_logs("echoer", job_id)
    assert http_error(missing)[0] == 404

    for word in ("second", "third", "fail-me"):
        assert client.run_service("echoer", input=word, async_call=True).status_code == 201
    jobs = wait_for_jobs(client, "echoer", 3)
    assert sorted(info["status"] for info in jobs.values()) == ["Failed", "Succeeded", "Succeeded"]
    logs_text = [client.get_job_logs("echoer", job).text for job in jobs]
    assert sorted(line for text in logs_text for line in text.splitlines() if line.startswith("processing")) == [
        "processing fail-me",
        "processing second",
        "processing third",
    ]

    # Without `all`, OSCAR deletes only the succeeded jobs.
    assert client.remove_all_jobs("echoer").status_code == 204
    left = client.list_jobs("echoer").json()["jobs"]
    assert [info["status"] for info in left.values()] == ["Failed"]


# ---- storage ---------------------------------------------------------------------------------------------------


def test_an_upload_through_the_storage_client_triggers_the_service(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    client = oscar_client(platform)
    client.create_service(str(SHOUT_FDL))
    storage = client.create_storage_client("shout")
    (tmp_path / "note.txt").write_text("quiet please")

    storage.upload_file("minio.default", str(tmp_path / "note.txt"), "shout/in")

    jobs = wait_for_jobs(client, "shout", 1)
    assert [info["status"] for info in jobs.values()] == ["Succeeded"]
    inputs = storage.list_files_from_path("minio.default", "shout/in")
    assert "in/note.txt" in [entry["Key"] for entry in inputs.get("Contents", [])]
    outputs = storage.list_files_from_path("minio.default", "shout/out")
    assert "out/note.txt" in [entry["Key"] for entry in outputs.get("Contents", [])]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    storage.download_file("minio.default", str(downloads), "shout/out/note.txt")
    assert (downloads / "note.txt").read_text() == "QUIET PLEASE!\n"


# ---- cluster ---------------------------------------------------------------------------------------------------


def test_cluster_info_config_status_and_health(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = oscar_client(platform)

    health = client.health_check()
    assert (health.status_code, health.text) == (200, "Ok")

    info = client.get_cluster_info().json()
    for key in ("version", "git_commit", "architecture", "kubernetes_version"):
        assert isinstance(info[key], str), key
    assert info["version"]

    config = client.get_cluster_config().json()
    provider = config["minio_provider"]
    assert set(provider) == {"endpoint", "verify", "access_key", "secret_key", "region"}
    assert {key: type(value) for key, value in provider.items()} == {
        "endpoint": str,
        "verify": bool,
        "access_key": str,
        "secret_key": str,
        "region": str,
    }
    assert provider["endpoint"] == platform.s3_endpoint
    assert isinstance(config["config"], dict)

    status = client.get_cluster_status()
    assert status.status_code == 200
    shown = status.json()  # OSCAR's StatusInfo: {cluster, oscar, minio}
    assert isinstance(shown["cluster"]["nodes_count"], int)
    assert {"cpu", "memory", "gpu"} <= set(shown["cluster"]["metrics"])
    assert isinstance(shown["cluster"]["nodes"], list)
    assert isinstance(shown["oscar"]["jobs_count"], int)
    assert isinstance(shown["minio"]["buckets_count"], int)


def test_a_service_token_opens_only_its_own_service(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = oscar_client(platform)
    client.create_service(definition("alpha", "echo alpha"))
    client.create_service(definition("beta", "echo beta"))
    alpha_token = client.get_service("alpha").json()["token"]
    beta_token = client.get_service("beta").json()["token"]
    assert alpha_token != beta_token

    assert client.run_service("alpha", input="x", token=alpha_token).text == "alpha\n"
    assert client.run_service("beta", input="x").text == "beta\n"  # Basic auth: the client fetches beta's token
    with pytest.raises(requests.HTTPError) as refused:
        client.run_service("beta", input="x", token=alpha_token)
    assert http_error(refused)[0] == 401
    with pytest.raises(requests.HTTPError) as refused_async:
        client.run_service("beta", input="x", token=alpha_token, async_call=True)
    assert http_error(refused_async)[0] == 401

    anonymous = anonymous_client(platform)
    assert anonymous.run_service("alpha", input="x", token=alpha_token).text == "alpha\n"
    assert anonymous.run_service("beta", input="x", token=beta_token).text == "beta\n"
    for name, token in (("beta", alpha_token), ("alpha", beta_token), ("alpha", "0" * 64)):
        with pytest.raises(requests.HTTPError) as wrong:
            anonymous.run_service(name, input="x", token=token)
        assert http_error(wrong)[0] == 401, (name, token)


# ---- buckets ---------------------------------------------------------------------------------------------------


def presigned(answer: dict[str, Any], operation: str, key: str, expires_s: int) -> str:
    assert answer["object_key"] == key
    assert answer["operation"] == operation
    assert answer["method"] == {"upload": "PUT", "download": "GET"}[operation]
    left = (parse_time(answer["expires_at"]) - datetime.now(UTC)).total_seconds()
    assert expires_s - 60 <= left <= expires_s + 5, f"expires in {left:.0f} s, expected {expires_s}"
    return answer["url"]


def test_buckets_are_created_listed_updated_presigned_and_deleted(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = oscar_client(platform)

    created = client.create_bucket("reports")
    assert created.status_code == 201
    assert "reports" in platform.storage.default.list_buckets()
    with pytest.raises(requests.HTTPError) as twice:
        client.create_bucket("reports")
    assert http_error(twice)[0] == 400

    listed = client.list_buckets()
    assert listed.status_code == 200
    [entry] = [b for b in listed.json() if b["bucket_name"] == "reports"]
    assert entry["visibility"] == "private"
    shown = client.get_bucket("reports").json()
    assert shown["bucket_name"] == "reports"
    assert shown["visibility"] == "private"
    assert not shown.get("objects")

    updated = client.update_bucket("reports", "private")
    assert updated.status_code == 204
    assert client.get_bucket("reports").json()["visibility"] == "private"
    # One account, so only `private` buckets: other visibilities are refused with the reason (501), not ignored.
    for visibility in ("public", "restricted"):
        with pytest.raises(requests.HTTPError) as refused:
            client.update_bucket("reports", visibility, allowed_users=["someone"])
        status, reason = http_error(refused)
        assert status == 501 and "visibility" in reason, (status, reason)
    with pytest.raises(requests.HTTPError) as refused_create:
        client.create_bucket("shared", visibility="public")
    assert http_error(refused_create)[0] == 501
    assert "shared" not in platform.storage.default.list_buckets()
    assert client.get_bucket("reports").json()["visibility"] == "private"

    # oscar-python sends `expires`; OSCAR reads `expires_in`. Both are honoured here, and 0 means the default 900 s.
    upload = client.presign_bucket("reports", "data/hello.txt", operation="upload", expires=120)
    assert upload.status_code == 200
    url = presigned(upload.json(), "upload", "data/hello.txt", 120)
    put = httpx.put(url, content=b"hello presigned", headers=upload.json().get("headers") or {})
    assert put.status_code == 200, put.text
    objects = client.get_bucket("reports").json()["objects"]
    assert [(o["object_name"], o["size_bytes"]) for o in objects] == [("data/hello.txt", 15)]

    default = client.presign_bucket("reports", "data/hello.txt")
    url = presigned(default.json(), "download", "data/hello.txt", 900)
    assert httpx.get(url).content == b"hello presigned"
    auth = (platform.credentials.admin_user, platform.credentials.admin_password)
    body = {"object_key": "data/hello.txt", "operation": "download", "expires_in": 300}
    direct = httpx.post(f"{platform.api_url}/system/buckets/reports/presign", json=body, auth=auth)
    assert direct.status_code == 200, direct.text
    assert httpx.get(presigned(direct.json(), "download", "data/hello.txt", 300)).content == b"hello presigned"

    deleted = client.delete_bucket("reports")
    assert deleted.status_code == 204
    assert "reports" not in platform.storage.default.list_buckets()
    with pytest.raises(requests.HTTPError) as gone:
        client.get_bucket("reports")
    assert http_error(gone)[0] == 404
    with pytest.raises(requests.HTTPError) as gone_again:
        client.delete_bucket("reports")
    assert http_error(gone_again)[0] == 404
