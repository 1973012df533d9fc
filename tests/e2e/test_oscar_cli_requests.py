"""The exact requests oscar-cli sends (reference §4.3), replayed with httpx, and every documented error status.

oscar-cli (master and v1.12.2) is built on OSCAR v3.3.0 types: service bodies carry the v3 `expose` block of
scalars, `environment.Variables`, the legacy `replicas`/`delegation`/`rescheduler_threshold` keys, and `/run`
bodies are streamed base64 with chunked transfer-encoding and no Content-Type.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory

pytestmark = pytest.mark.e2e

CHALLENGE = 'Basic realm="Authorization Required"'
JOB_STATES = {"Pending", "Running", "Succeeded", "Failed", "Unknown", "Suspended"}
V3_EXPOSE = {
    "min_scale": 0,
    "max_scale": 0,
    "cpu_threshold": 0,
    "rewrite_target": False,
    "nodePort": 0,
    "default_command": False,
    "set_auth": False,
}


def admin(platform: Platform) -> tuple[str, str]:
    return platform.credentials.admin_user, platform.credentials.admin_password


def api(platform: Platform) -> httpx.Client:
    return httpx.Client(base_url=platform.api_url, auth=admin(platform), timeout=60)


def cli_service(platform: Platform, name: str, script: str, **changes: Any) -> dict[str, Any]:
    """A service as oscar-cli serializes it: every v3.3.0 field, zero values included."""
    return {
        "name": name,
        "cluster_id": "oscar-cluster",
        "memory": "256Mi",
        "cpu": 0.5,
        "total_memory": "",
        "total_cpu": "",
        "enable_gpu": False,
        "enable_sgx": False,
        "image_prefetch": False,
        "synchronous": {"min_scale": 0, "max_scale": 0},
        "replicas": None,
        "rescheduler_threshold": 0,
        "delegation": "",
        "log_level": "CRITICAL",
        "image": "ghcr.io/grycap/alpine",
        "alpine": False,
        "token": "",
        "file_stage_in": False,
        "input": [{"storage_provider": "minio.default", "path": f"{name}/in"}],
        "output": [{"storage_provider": "minio.default", "path": f"{name}/out", "suffix": None, "prefix": None}],
        "script": script,
        "image_pull_secrets": None,
        "expose": {**V3_EXPOSE, "api_port": 8080},
        "environment": {"Variables": {"GREETING": "hola"}},
        "annotations": None,
        "labels": None,
        "vo": "",
        "clusters": {
            "oscar-cluster": {
                "endpoint": platform.api_url,
                "auth_user": platform.credentials.admin_user,
                "auth_password": platform.credentials.admin_password,
                "ssl_verify": False,
            }
        },
        "owner": "",
        "interlink_node_name": "",
        "allowed_users": None,
        "isolation_level": "",
        "bucket_list": None,
        "mount": {"storage_provider": "", "path": ""},
        **changes,
    }


def streamed_base64(payload: bytes, chunk: int = 1000) -> Iterator[bytes]:
    """What oscar-cli's io.Pipe + base64 encoder produce: base64 in pieces that ignore 4-byte boundaries."""
    encoded = base64.b64encode(payload)
    for start in range(0, len(encoded), chunk):
        yield encoded[start : start + chunk]


def post_streamed(platform: Platform, path: str, payload: bytes, **auth: Any) -> httpx.Response:
    answer = httpx.post(f"{platform.api_url}{path}", content=streamed_base64(payload), timeout=60, **auth)
    assert "content-type" not in answer.request.headers
    assert answer.request.headers["transfer-encoding"] == "chunked"
    return answer


def bearer(token: str) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Bearer {token}"}}


def wait_for_jobs(client: httpx.Client, service: str, count: int, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = client.get(f"/system/logs/{service}").json()["jobs"]
        finished = [info for info in jobs.values() if info["status"] in ("Succeeded", "Failed")]
        if len(finished) >= count and len(finished) == len(jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"{service}: expected {count} finished jobs within {timeout_s} s, have {jobs}")
        time.sleep(0.1)


def is_plain_text(answer: httpx.Response) -> bool:
    return answer.headers.get("content-type", "").startswith("text/plain")


# ---- what `oscar-cli apply`, `service run`, `service job` and `service logs` send ----------------------------------


def test_apply_creates_and_updates_a_service_from_v3_bodies(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = api(platform)
    script = 'echo "$GREETING from $(cat "$INPUT_FILE_PATH")"'

    # apply: GET /system/config, GET the service (404: absent), then POST.
    assert client.get("/system/config").status_code == 200
    absent = client.get("/system/services/cli-svc")
    assert (absent.status_code, absent.content) == (404, b"")
    created = client.post("/system/services", json=cli_service(platform, "cli-svc", script))
    assert (created.status_code, created.text) == (201, ""), created.text

    shown = client.get("/system/services/cli-svc")
    assert shown.status_code == 200
    service = shown.json()
    assert service["environment"]["variables"] == {"GREETING": "hola"}
    assert service["cpu"] == "0.5"
    assert service["memory"] == "256Mi"
    token = service["token"]
    assert re.fullmatch(r"[0-9a-f]{64}", token), token
    # The CLI decodes this answer into v3 types: `api_port`/`nodePort` must stay scalars, or the next apply
    # believes the service is missing and POSTs again.
    for key in ("api_port", "nodePort"):
        assert not isinstance(service.get("expose", {}).get(key), list), service.get("expose")
    ran = httpx.post(f"{platform.api_url}/run/cli-svc", content=base64.b64encode(b"the cli"), **bearer(token))
    assert (ran.status_code, ran.text) == (200, "hola from the cli\n")

    # apply again: GET succeeds, so PUT, with other values and a legacy replica.
    replica = {"type": "oscar", "cluster_id": "other", "service_name": "cli-svc", "priority": 0, "ssl_verify": True}
    changed = cli_service(
        platform,
        "cli-svc",
        script,
        memory="512Mi",
        cpu=1,
        replicas=[replica],
        delegation="static",
        rescheduler_threshold=30,
        expose={**V3_EXPOSE, "api_port": 9090},
        environment={"Variables": {"GREETING": "adios"}},
    )
    updated = client.put("/system/services", json=changed)
    assert updated.status_code == 204, updated.text
    again = client.get("/system/services/cli-svc").json()
    assert (again["memory"], again["cpu"], again["token"]) == ("512Mi", "1", token)
    assert again["environment"]["variables"] == {"GREETING": "adios"}
    ran = httpx.post(f"{platform.api_url}/run/cli-svc", content=base64.b64encode(b"the cli"), **bearer(token))
    assert ran.text == "adios from the cli\n"

    # `oscar-cli delete`
    assert client.delete("/system/services/cli-svc").status_code == 204
    assert client.get("/system/services/cli-svc").status_code == 404


def test_config_with_a_trailing_slash_redirects_to_the_json(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    answer = api(platform).get("/system/config/", follow_redirects=True)

    assert answer.status_code == 200
    assert [step.status_code in (301, 307, 308) for step in answer.history] == [True]
    provider = answer.json()["minio_provider"]
    # oscar-cli type-asserts these as string, string, string, string, bool.
    types = {key: type(provider.get(key)) for key in ("endpoint", "region", "access_key", "secret_key", "verify")}
    assert types == {"endpoint": str, "region": str, "access_key": str, "secret_key": str, "verify": bool}


def test_run_takes_a_chunked_base64_body_without_content_type(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = api(platform)
    created = client.post(
        "/system/services", json=cli_service(platform, "cli-run", 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/result"')
    )
    assert created.status_code == 201
    payload = bytes(range(256)) * 700  # 175 KiB, so the body arrives in many chunks

    # Newer oscar-cli (master, PR #60): the cluster's Basic credentials.
    with_basic = post_streamed(platform, "/run/cli-run", payload, auth=admin(platform))
    assert with_basic.status_code == 200, with_basic.text
    assert base64.b64decode(with_basic.text) == payload

    # oscar-cli v1.12.2: GET the service, then its token as Bearer.
    token = client.get("/system/services/cli-run").json()["token"]
    with_token = post_streamed(platform, "/run/cli-run", payload, **bearer(token))
    assert with_token.status_code == 200, with_token.text
    assert base64.b64decode(with_token.text) == payload

    # `service job` sends the same body to /job and ignores the answer's body.
    queued = post_streamed(platform, "/job/cli-run", b"async", **bearer(token))
    assert (queued.status_code, queued.text) == (201, "")
    assert {info["status"] for info in wait_for_jobs(client, "cli-run", 1).values()} == {"Succeeded"}

    for auth in ({"auth": ("oscar", "wrong")}, bearer("0" * 64), bearer("not-a-token"), {}):
        refused = post_streamed(platform, "/run/cli-run", payload, **auth)
        assert refused.status_code == 401, (auth, refused.status_code)


def test_job_logs_come_in_the_envelope_and_delete_all_removes_every_job(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = api(platform)
    script = 'echo "processing $(cat "$INPUT_FILE_PATH")"; case "$(cat "$INPUT_FILE_PATH")" in fail*) exit 1;; esac'
    assert client.post("/system/services", json=cli_service(platform, "cli-log", script)).status_code == 201
    token = client.get("/system/services/cli-log").json()["token"]
    for word in (b"one", b"two", b"fail"):
        assert post_streamed(platform, "/job/cli-log", word, **bearer(token)).status_code == 201

    wait_for_jobs(client, "cli-log", 3)
    listing = client.get("/system/logs/cli-log", params={"page": ""})
    assert listing.status_code == 200
    envelope = listing.json()
    assert set(envelope) <= {"jobs", "next_page", "remaining_jobs"} and "jobs" in envelope
    assert isinstance(envelope.get("next_page", ""), str)
    assert isinstance(envelope.get("remaining_jobs", 0), int)
    jobs = envelope["jobs"]
    assert len(jobs) == 3
    for info in jobs.values():
        assert info["status"] in JOB_STATES
        for key in ("creation_time", "start_time", "finish_time"):
            if key in info:
                assert datetime.fromisoformat(info[key]).tzinfo is not None, info
    assert sorted(info["status"] for info in jobs.values()) == ["Failed", "Succeeded", "Succeeded"]

    # `service logs get N JOB` (oscar-cli picks the newest by `creation_time` when JOB is left out).
    logs = [client.get(f"/system/logs/cli-log/{job}", params={"timestamps": "true"}) for job in jobs]
    assert all(log.status_code == 200 and is_plain_text(log) for log in logs)
    printed = sorted(line for log in logs for line in log.text.splitlines() if line.startswith("processing"))
    assert printed == ["processing fail", "processing one", "processing two"]
    missing = client.get("/system/logs/cli-log/no-such-job")
    assert missing.status_code == 404

    # `--succeeded` (no query) leaves the failed job; `--all` removes everything.
    assert client.delete("/system/logs/cli-log").status_code == 204
    assert [info["status"] for info in client.get("/system/logs/cli-log").json()["jobs"].values()] == ["Failed"]
    assert client.delete("/system/logs/cli-log", params={"all": "true"}).status_code == 204
    assert client.get("/system/logs/cli-log").json()["jobs"] == {}

    # `service logs delete N JOB`
    assert post_streamed(platform, "/job/cli-log", b"three", **bearer(token)).status_code == 201
    [job] = wait_for_jobs(client, "cli-log", 1)
    assert client.delete(f"/system/logs/cli-log/{job}").status_code == 204
    assert client.get("/system/logs/cli-log").json()["jobs"] == {}
    assert client.delete(f"/system/logs/cli-log/{job}").status_code == 404


# ---- status codes ------------------------------------------------------------------------------------------------

SYSTEM_ROUTES = [
    ("GET", "/system/info"),
    ("GET", "/system/config"),
    ("PUT", "/system/config"),
    ("GET", "/system/status"),
    ("GET", "/system/services"),
    ("POST", "/system/services"),
    ("PUT", "/system/services"),
    ("GET", "/system/services/some-svc"),
    ("DELETE", "/system/services/some-svc"),
    ("GET", "/system/services/some-svc/deployment"),
    ("GET", "/system/services/some-svc/deployment/logs"),
    ("POST", "/system/services/some-svc/stop"),
    ("GET", "/system/logs"),
    ("GET", "/system/logs/some-svc"),
    ("DELETE", "/system/logs/some-svc"),
    ("GET", "/system/logs/some-svc/some-job"),
    ("DELETE", "/system/logs/some-svc/some-job"),
    ("GET", "/system/buckets"),
    ("POST", "/system/buckets"),
    ("PUT", "/system/buckets"),
    ("GET", "/system/buckets/some-bucket"),
    ("DELETE", "/system/buckets/some-bucket"),
    ("POST", "/system/buckets/some-bucket/presign"),
    ("GET", "/system/volumes"),
    ("GET", "/system/quotas/user"),
    ("GET", "/system/metrics"),
    ("GET", "/system/federation/some-svc"),
]


def test_every_system_route_asks_for_basic_credentials(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    user = platform.credentials.admin_user
    callers = {"no credentials": None, "a wrong password": (user, "wrong"), "an unknown user": ("nobody", "x")}
    problems = []
    for method, path in SYSTEM_ROUTES:
        body = {} if method in ("POST", "PUT") else None
        for who, auth in callers.items():
            answer = httpx.request(method, platform.api_url + path, json=body, auth=auth)
            shape = (answer.status_code, answer.headers.get("www-authenticate"), answer.text)
            if shape != (401, CHALLENGE, ""):
                problems.append(f"{method} {path} with {who}: {shape}")
    # Authentication comes before the body is read, so a malformed body cannot reveal anything either.
    malformed = httpx.post(
        platform.api_url + "/system/services", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    if malformed.status_code != 401:
        problems.append(f"POST /system/services with a malformed body and no credentials: {malformed.status_code}")
    assert not problems, "\n".join(problems)


API_DOCUMENTS = {"/docs", "/docs-assets", "/openapi.json"}
PROBES = {"/health", "/ready"}
"""Liveness and readiness: what probes ask, without credentials (readiness names parts, no reasons)."""


def test_only_health_and_the_api_documents_are_open(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    health = httpx.get(platform.api_url + "/health")
    assert (health.status_code, health.text) == (200, "Ok")
    ready = httpx.get(platform.api_url + "/ready")
    assert (ready.status_code, ready.text) == (200, "ready")
    docs = httpx.get(platform.api_url + "/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text and "/docs-assets/swagger-ui-bundle.js" in docs.text, "the page works offline"
    assert httpx.get(platform.api_url + "/docs-assets/swagger-ui-bundle.js").status_code == 200

    # Every route the application has, documented or not, asked without credentials.
    open_routes = []
    for route in platform.api.app.routes:
        path = getattr(route, "path", "")
        if path in PROBES or path in API_DOCUMENTS:
            continue
        concrete = re.sub(r"\{[^}]+\}", "some-name", path)
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            body = {} if method in ("POST", "PUT", "PATCH") else None
            answer = httpx.request(method, platform.api_url + concrete, json=body)
            if answer.status_code != 401:
                open_routes.append(f"{method} {path}: {answer.status_code} {answer.text[:80]!r}")
    assert not open_routes, "answered without credentials:\n" + "\n".join(open_routes)

    spec = httpx.get(platform.api_url + "/openapi.json")
    assert spec.status_code == 200, spec.text
    operation_ids = [op["operationId"] for ops in spec.json()["paths"].values() for op in ops.values()]
    assert sorted(i for i in set(operation_ids) if operation_ids.count(i) > 1) == []


def test_a_missing_service_is_404_with_an_empty_body(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = api(platform)

    read = client.get("/system/services/missing")
    assert (read.status_code, read.content) == (404, b"")
    update = client.put("/system/services", json=cli_service(platform, "missing", "echo"))
    assert update.status_code == 404
    delete = client.delete("/system/services/missing")
    assert delete.status_code == 404
    assert client.get("/system/services").json() == []
    # A 64-character token for a service that does not exist is refused like a wrong one (OSCAR §1.4).
    run = httpx.post(f"{platform.api_url}/run/missing", content=b"aGk=", **bearer("0" * 64))
    assert run.status_code == 401


BadBody = tuple[str, bytes | dict[str, Any], str, bool]


def bad_bodies(platform: Platform) -> list[BadBody]:
    """(case, body, a word the plain-text reason must contain, whether the body itself is malformed).

    Each case names its own buckets, `bad-<n>`. A body that parses but cannot be deployed is only POSTed: a PUT
    of a service that does not exist is a 404 first (OSCAR reads the service before checking such values).
    """

    def body(n: int, **changes: Any) -> dict[str, Any]:
        paths = {
            "input": [{"storage_provider": "minio.default", "path": f"bad-{n}/in"}],
            "output": [{"storage_provider": "minio.default", "path": f"bad-{n}/out"}],
        }
        fields = cli_service(platform, f"bad-{n}", "echo") | paths | changes
        return {k: v for k, v in fields.items() if v is not ...}

    return [
        ("malformed JSON", b'{"name": "bad-0", "image": ', "", True),
        ("a JSON array", b"[]", "", True),
        ("a JSON string", b'"bad-1"', "", True),
        ("memory 5.5x", body(2, memory="5.5x"), "memory", True),
        ("memory lots", body(3, memory="lots"), "memory", True),
        ("cpu lots", body(4, cpu="lots"), "cpu", True),
        ("a number as name", body(5, name=12345), "name", True),
        ("input as a string", body(6, input="bad-6/in"), "input", True),
        ("environment as a list", body(7, environment=["A=1"]), "environment", True),
        ("an uppercase name", body(8, name="Bad-Upper"), "name", True),
        ("a 40-character name", body(9, name="b" * 40), "name", True),
        ("an underscore in the name", body(10, name="bad_under"), "name", True),
        ("an empty name", body(11, name=""), "name", True),
        ("no image", body(12, image=...), "image", True),
        # No `script` is not a bad body: OSCAR accepts it (exposed and model-serving services), and so does
        # Conveyor, with a warning (tests/unit/model/test_service.py).
        ("an empty input path", body(15, input=[{"storage_provider": "minio.default", "path": ""}]), "path", True),
        ("an output inside its own input", body(16, output=[{"path": "bad-16/in/out"}]), "input", False),
        ("an undefined provider", body(17, output=[{"storage_provider": "s3.nowhere", "path": "x/y"}]), "s3", False),
    ]


def test_bad_service_bodies_are_400_with_a_plain_text_reason_and_leave_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = api(platform)
    buckets_before = set(platform.storage.default.list_buckets())

    problems = []
    for case, body, word, malformed in bad_bodies(platform):
        for method in ("POST", "PUT") if malformed else ("POST",):
            if isinstance(body, bytes):
                answer = client.request(
                    method, "/system/services", content=body, headers={"Content-Type": "application/json"}
                )
            else:
                answer = client.request(method, "/system/services", json=body)
            if answer.status_code != 400 or not is_plain_text(answer) or not answer.text.strip():
                problems.append(
                    f"{method} {case}: {answer.status_code} {answer.headers.get('content-type')} {answer.text!r}"
                )
            elif word.lower() not in answer.text.lower():
                problems.append(f"{method} {case}: the reason {answer.text!r} does not mention {word!r}")
    assert not problems, "\n".join(problems)

    assert client.get("/system/services").json() == []
    assert set(platform.storage.default.list_buckets()) == buckets_before


def test_a_duplicate_create_is_400_and_changes_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    client = api(platform)
    first = cli_service(
        platform, "dup", "echo first", input=[{"storage_provider": "minio.default", "path": "dup-a/in"}]
    )
    assert client.post("/system/services", json=first).status_code == 201
    buckets_before = set(platform.storage.default.list_buckets())
    assert "dup-a" in buckets_before

    second = cli_service(
        platform,
        "dup",
        "echo second",
        input=[{"storage_provider": "minio.default", "path": "dup-b/in"}],
        output=[{"storage_provider": "minio.default", "path": "dup-c/out"}],
    )
    refused = client.post("/system/services", json=second)

    assert refused.status_code == 400
    assert is_plain_text(refused)
    assert "already exists" in refused.text
    assert set(platform.storage.default.list_buckets()) == buckets_before
    shown = client.get("/system/services/dup").json()
    assert shown["script"] == "echo first"
    assert [io["path"] for io in shown["input"]] == ["dup-a/in"]


def test_a_create_whose_storage_fails_is_rolled_back(make_platform: PlatformFactory) -> None:
    """OSCAR answers 500 when a bucket cannot be made and removes what it made; any error will do, but nothing
    may be left: no service, and no bucket created for the inputs before the failing output."""
    platform = make_platform()
    client = api(platform)
    buckets_before = set(platform.storage.default.list_buckets())
    unreachable = {
        "endpoint": "http://127.0.0.1:9",
        "verify": False,
        "access_key": "a",
        "secret_key": "b",
        "region": "",
    }
    body = cli_service(
        platform,
        "rollback",
        "echo",
        input=[{"storage_provider": "minio.default", "path": "rollback-in/in"}],
        output=[
            {"storage_provider": "minio.default", "path": "rollback-out/out"},
            {"storage_provider": "minio.elsewhere", "path": "far-away/out"},
        ],
        storage_providers={"minio": {"elsewhere": unreachable}},
    )

    answer = client.post("/system/services", json=body)

    assert answer.status_code >= 400
    assert is_plain_text(answer) and answer.text.strip()
    assert client.get("/system/services/rollback").status_code == 404
    assert set(platform.storage.default.list_buckets()) == buckets_before


def test_bodies_over_the_limit_are_refused_with_413(make_platform: PlatformFactory) -> None:
    platform = make_platform(api={"max_body_mb": 1})
    auth = (platform.credentials.admin_user, platform.credentials.admin_password)
    platform.catalog.apply([Service(name="big", image="x", script="true", input=[{"path": "big/in"}])])
    too_big = b"A" * (2 * 2**20)

    declared = httpx.post(f"{platform.api_url}/run/big", content=too_big, auth=auth)
    streamed = httpx.post(
        f"{platform.api_url}/job/big",
        content=(too_big[i : i + 65536] for i in range(0, len(too_big), 65536)),
        auth=auth,
    )

    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert "1 MiB" in answer.text
    assert platform.ledger.list_jobs("big") == []
