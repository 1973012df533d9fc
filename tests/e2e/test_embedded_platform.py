"""The embedded platform end to end with host processes: real SeaweedFS, real events, real jobs."""

from __future__ import annotations

import base64
import io
import itertools
import json
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest

from conveyor.errors import DefinitionError
from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.platform import keys_under, put_text, read_text, service, wait_for_jobs, wait_for_state

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'


def admin(platform: Platform) -> tuple[str, str]:
    return platform.credentials.admin_user, platform.credentials.admin_password


def test_hundred_files_make_exactly_hundred_jobs_and_outputs(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    platform.catalog.apply([service("copy", COPY, ["data/in"], ["data/out"])])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: put_text(platform, f"data/in/file-{i:03d}.txt", f"payload {i}"), range(100)))

    jobs = wait_for_jobs(platform, "copy", 100, timeout_s=120)
    assert len(jobs) == 100
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert sorted(job.trigger.ref.key for job in jobs) == [f"in/file-{i:03d}.txt" for i in range(100)]
    assert keys_under(platform, "data/out/") == [f"out/file-{i:03d}.txt" for i in range(100)]


def test_two_services_chain_through_a_bucket(make_platform: PlatformFactory, tmp_path: Path) -> None:
    platform = make_platform()
    upper = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
    exclaim = 'sed "s/$/!/" "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
    platform.catalog.apply(
        [
            service("upper", upper, ["chain/in"], ["chain/mid"]),
            service("exclaim", exclaim, ["chain/mid"], ["chain/out"]),
        ]
    )
    put_text(platform, "chain/in/a.txt", "hello")

    wait_for_jobs(platform, "upper", 1)
    second = wait_for_jobs(platform, "exclaim", 1)

    assert read_text(platform, "chain/out/a.txt", tmp_path) == "HELLO!"
    assert second[0].trigger.ref.key == "mid/a.txt"
    assert [str(o.ref) for o in second[0].outputs] == ["chain/out/a.txt"]


def test_outputs_go_only_where_prefix_and_suffix_filters_allow(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    script = (
        'cd "$TMP_OUTPUT_DIR"; mkdir sub; echo 1 > result-a.jpg; echo 2 > result-b.png; '
        "echo 3 > other.jpg; echo 4 > sub/result-c.jpg; echo 5 > notes.txt"
    )
    outputs = [
        {"path": "filters/images", "suffix": [".jpg", ".png"], "prefix": ["result-"]},
        {"path": "filters/all"},
        {"path": "filters/text", "suffix": ".txt"},
    ]
    platform.catalog.apply([service("filters", script, ["filters/in"], outputs)])
    put_text(platform, "filters/in/x", "go")

    job = wait_for_jobs(platform, "filters", 1)[0]

    assert job.state == JobState.SUCCEEDED
    assert keys_under(platform, "filters/images/") == ["images/result-a.jpg", "images/result-b.png"]
    assert keys_under(platform, "filters/text/") == ["text/notes.txt"]
    assert keys_under(platform, "filters/all/") == [
        "all/notes.txt",
        "all/other.jpg",
        "all/result-a.jpg",
        "all/result-b.png",
        "all/sub/result-c.jpg",
    ]
    assert len(job.outputs) == 8


def test_a_failing_script_fails_its_job_keeps_its_log_and_uploads_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    script = 'echo "about to fail"; echo partial > "$TMP_OUTPUT_DIR/partial.txt"; exit 3'
    platform.catalog.apply([service("broken", script, ["fail/in"], ["fail/out"])])
    put_text(platform, "fail/in/x.txt", "x")

    job = wait_for_jobs(platform, "broken", 1)[0]

    assert job.state == JobState.FAILED
    assert job.exit_code == 3
    assert "exited with code 3" in job.message
    assert keys_under(platform, "fail/out/") == []
    log = platform.jobs.read_log("broken", job.job_id)
    assert log is not None and "about to fail" in log
    oscar_view = httpx.get(f"{platform.api_url}/system/logs/broken", auth=admin(platform)).json()
    assert oscar_view["jobs"][job.job_id]["status"] == "Failed"


def test_a_job_past_its_timeout_is_killed_and_recorded_as_timed_out(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    platform.catalog.apply([service("sleepy", "sleep 60 & sleep 60", ["slow/in"], ["slow/out"], timeout=1)])
    put_text(platform, "slow/in/x", "x")
    started = time.monotonic()

    job = wait_for_jobs(platform, "sleepy", 1, timeout_s=20)[0]

    assert job.state == JobState.TIMED_OUT
    assert time.monotonic() - started < 10
    assert "timeout" in job.message


def test_the_script_sees_the_supervisor_contract(make_platform: PlatformFactory, tmp_path: Path) -> None:
    platform = make_platform()
    script = (
        "for v in INPUT_FILE_PATH TMP_INPUT_DIR TMP_OUTPUT_DIR STORAGE_OBJECT_KEY EVENT_TIME JOB_UUID GREETING TOKEN; "
        "do "
        'eval "echo $v=\\$$v"; done > "$TMP_OUTPUT_DIR/env.txt"; printf "%s" "$EVENT" > "$TMP_OUTPUT_DIR/event.json"; '
        'cat "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/input-copy"'
    )
    svc = service(
        "contract",
        script,
        ["contract/in"],
        ["contract/out"],
        environment={"variables": {"GREETING": "hola"}, "secrets": {"TOKEN": "s3cr3t"}},
    )
    platform.catalog.apply([svc])
    put_text(platform, "contract/in/sub dir/photo 1+2.txt", "content")

    job = wait_for_jobs(platform, "contract", 1)[0]
    assert job.state == JobState.SUCCEEDED, job.message

    env = dict(line.split("=", 1) for line in read_text(platform, "contract/out/env.txt", tmp_path).splitlines())
    assert env["INPUT_FILE_PATH"] == f"{env['TMP_INPUT_DIR']}/photo 1+2.txt"
    assert env["STORAGE_OBJECT_KEY"] == "in/sub dir/photo 1+2.txt"
    assert env["JOB_UUID"] == job.job_id
    assert env["GREETING"] == "hola"
    assert env["TOKEN"] == "s3cr3t"
    assert env["EVENT_TIME"].endswith("Z")
    event = json.loads(read_text(platform, "contract/out/event.json", tmp_path))
    record = event["Records"][0]
    assert record["eventSource"] == "minio:s3"
    assert record["s3"]["bucket"]["name"] == "contract"
    assert unquote_plus(record["s3"]["object"]["key"]) == "in/sub dir/photo 1+2.txt"
    assert read_text(platform, "contract/out/input-copy", tmp_path) == "content"

    shown = httpx.get(f"{platform.api_url}/system/services/contract", auth=admin(platform)).json()
    assert shown["environment"]["secrets"] == {"TOKEN": ""}
    assert "s3cr3t" not in platform.jobs.read_log("contract", job.job_id)


def test_the_same_object_version_never_runs_twice_but_a_new_version_does(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    platform.catalog.apply([service("once", COPY, ["once/in"], ["once/out"])])
    put_text(platform, "once/in/a.txt", "v1")
    first = wait_for_jobs(platform, "once", 1)[0]

    # A re-sent notification for the same version (what at-least-once delivery does) ...
    event_for_same_version = {
        "event_type": "create",
        "key": "/buckets/once/in/a.txt",
        "message": {
            "new_entry": {"name": "a.txt", "attributes": {"file_size": 2, "mtime": 1}},
            "new_parent_path": "/buckets/once/in",
        },
    }
    etag = first.trigger.etag
    event_for_same_version["message"]["new_entry"]["extended"] = {
        "Seaweed-X-Amz-ETag": base64.b64encode(etag.encode()).decode()
    }
    url = platform.api_url + "/conveyor/v1/events/seaweedfs"
    headers = {"Authorization": f"Bearer {platform.credentials.webhook_token}"}
    for _ in range(3):
        assert httpx.post(url, json=event_for_same_version, headers=headers).json() == {"jobs": []}
    # ... while new content under the same key is a new event.
    put_text(platform, "once/in/a.txt", "v2")

    jobs = wait_for_jobs(platform, "once", 2)
    assert len(jobs) == 2
    assert {j.trigger.etag for j in jobs} == {etag, jobs[0].trigger.etag} and jobs[0].trigger.etag != etag


def test_the_webhook_refuses_callers_without_the_store_token(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    answer = httpx.post(platform.api_url + "/conveyor/v1/events/seaweedfs", json={"event_type": "create"})
    assert answer.status_code == 401


def test_the_webhook_drops_events_no_service_reads_and_refuses_bodies_that_are_not_json(
    make_platform: PlatformFactory,
) -> None:
    platform = make_platform()
    platform.catalog.apply([service("only", COPY, ["only/in"], ["only/out"])])
    url = platform.api_url + "/conveyor/v1/events/seaweedfs"
    headers = {"Authorization": f"Bearer {platform.credentials.webhook_token}"}
    elsewhere = {
        "event_type": "create",
        "message": {
            "new_entry": {"name": "x.txt", "attributes": {"file_size": 1, "mtime": 1}},
            "new_parent_path": "/buckets/only/out",
        },
    }

    assert httpx.post(url, json=elsewhere, headers=headers).json() == {"jobs": []}
    not_json = httpx.post(url, content=b"{not json", headers=headers)
    assert not_json.status_code == 400 and "not JSON" in not_json.text
    assert platform.ledger.count_jobs() == {}


def test_a_restart_finds_services_jobs_and_files_where_they_were(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "kept"
    first = make_platform(data_dir=data_dir)
    first.catalog.apply([service("keep", COPY, ["keep/in"], ["keep/out"])])
    put_text(first, "keep/in/before.txt", "before")
    wait_for_jobs(first, "keep", 1)
    s3_endpoint, password = first.s3_endpoint, first.credentials.admin_password
    first.stop()

    second = make_platform(data_dir=data_dir)

    assert second.s3_endpoint == s3_endpoint
    assert second.credentials.admin_password == password
    assert [s.name for s in second.ledger.list_services()] == ["keep"]
    assert keys_under(second, "keep/out/") == ["out/before.txt"]
    put_text(second, "keep/in/after.txt", "after")
    jobs = wait_for_jobs(second, "keep", 2)
    assert sorted(j.trigger.ref.key for j in jobs) == ["in/after.txt", "in/before.txt"]
    assert keys_under(second, "keep/out/") == ["out/after.txt", "out/before.txt"]


def test_run_answers_with_the_output_file_a_zip_or_the_script_output(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    one = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/upper.txt"'
    two = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/a"; mkdir "$TMP_OUTPUT_DIR/d"; echo b > "$TMP_OUTPUT_DIR/d/b"'
    none = 'echo "you said: $(cat "$INPUT_FILE_PATH")"'
    platform.catalog.apply(
        [
            service("one", one, ["sync/one"], ["sync/one-out"]),
            service("two", two, ["sync/two"], ["sync/two-out"]),
            service("none", none, ["sync/none"], []),
        ]
    )
    body = base64.b64encode(b"hello")
    auth = admin(platform)

    single = httpx.post(f"{platform.api_url}/run/one", content=body, auth=auth, timeout=60)
    assert single.status_code == 200
    assert base64.b64decode(single.text) == b"HELLO"
    assert keys_under(platform, "sync/one-out/") == ["one-out/upper.txt"]

    several = httpx.post(f"{platform.api_url}/run/two", content=body, auth=auth, timeout=60)
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(several.text)))
    assert sorted(archive.namelist()) == ["a", "d/b"]
    assert archive.read("a") == b"hello"

    printed = httpx.post(f"{platform.api_url}/run/none", content=body, auth=auth, timeout=60)
    assert printed.text == "you said: hello\n"


def test_run_and_job_accept_the_service_token_and_refuse_others(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    platform.catalog.apply([service("tok", 'cat "$INPUT_FILE_PATH"', ["tok/in"], [])])
    token = platform.ledger.fetch_service("tok").token
    assert len(token) == 64

    ok = httpx.post(f"{platform.api_url}/run/tok", content=b"aGk=", headers={"Authorization": f"Bearer {token}"})
    assert (ok.status_code, ok.text) == (200, "hi")
    wrong = httpx.post(f"{platform.api_url}/run/tok", content=b"aGk=", headers={"Authorization": "Bearer " + "0" * 64})
    assert wrong.status_code == 401

    accepted = httpx.post(f"{platform.api_url}/job/tok", content=b"aGk=", headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 201 and accepted.text == ""
    job_id = accepted.headers["x-conveyor-job-id"]
    record = wait_for_state(platform, job_id, {"succeeded", "failed"})
    assert record.state == JobState.SUCCEEDED
    assert platform.jobs.read_log("tok", job_id).count("hi") == 1


def test_jobs_wait_when_the_machine_is_full(make_platform: PlatformFactory, tmp_path: Path) -> None:
    platform = make_platform(cpus=2.0)
    script = 'date +%s.%N > "$TMP_OUTPUT_DIR/start"; sleep 0.4; date +%s.%N > "$TMP_OUTPUT_DIR/end"'
    platform.catalog.apply([service("big", script, ["full/in"], [{"path": "full/out"}], cpu="2")])
    for i in range(3):
        put_text(platform, f"full/in/{i}", "x")

    jobs = wait_for_jobs(platform, "big", 3, timeout_s=60)

    spans = sorted((j.started_at, j.finished_at) for j in jobs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "a job needing the whole machine started while another ran"


def test_a_storage_outage_during_stage_out_makes_the_job_wait_and_loses_nothing(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    """The store stops while the script runs: the job waits for it, at the same attempt, and then
    runs to the end; no retry is spent (retries=0: an ordinary failure would make it a dead letter)."""
    platform = make_platform(dispatch={"retry_base_s": 2.0})
    platform.catalog.apply([service("outage", f"sleep 2; {COPY}", ["outage/in"], ["outage/out"], retries=0)])
    put_text(platform, "outage/in/precious.txt", "keep me")
    job_id = _first_job_id(platform, "outage")
    wait_for_state(platform, job_id, {"running"})
    _wait_for_log(platform, "outage", job_id, "INPUT_FILE_PATH variable set")  # stage-in done: the script sleeps

    platform.store.stop()
    _wait_for_message(platform, job_id, "waiting for minio.default, which does not answer")
    platform.store.start()
    done = wait_for_state(platform, job_id, {"succeeded", "dead", "failed"}, timeout_s=120)

    assert (done.state, done.attempt) == (JobState.SUCCEEDED, 1)
    assert read_text(platform, "outage/in/precious.txt", tmp_path) == "keep me"
    assert read_text(platform, "outage/out/precious.txt", tmp_path) == "keep me"
    log = platform.jobs.read_log("outage", job_id)
    assert "job failed: stage-out failed uploading 'precious.txt'" in log, "the run the outage cut is in the log"
    assert log.count("(attempt 1)") == 2, "both runs are logged; waiting is not an attempt"


def _wait_for_log(platform: Platform, service_name: str, job_id: str, text: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (platform.jobs.read_log(service_name, job_id) or ""):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log of {job_id}"
        time.sleep(0.02)


def _wait_for_message(platform: Platform, job_id: str, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (record := platform.ledger.fetch_job(job_id)) is None or text not in record.message:
        assert time.monotonic() < deadline, f"job {job_id} never said {text!r}: {record}"
        time.sleep(0.05)


def _first_job_id(platform: Platform, service_name: str, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = platform.ledger.list_jobs(service_name, limit=1)
        if jobs:
            return jobs[0][1].job_id
        time.sleep(0.02)
    raise AssertionError(f"no job for {service_name}")


def test_without_a_container_engine_jobs_run_as_host_processes(make_platform: PlatformFactory, tmp_path: Path) -> None:
    platform = make_platform(runtime="auto", docker_host=f"unix://{tmp_path}/no-engine.sock")

    assert any("running jobs as host processes" in w for w in platform.warnings)
    report = platform.catalog.apply(
        [service("fallback", COPY, ["fallback/in"], ["fallback/out"], image="some/image:1")]
    )
    assert report.warnings == [
        "fallback: image 'some/image:1' is ignored: jobs run as host processes (runtime: process)"
    ]
    put_text(platform, "fallback/in/x.txt", "x")
    assert wait_for_jobs(platform, "fallback", 1)[0].state == JobState.SUCCEEDED


def test_an_output_under_the_input_is_refused_and_nothing_is_deployed(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    good = service("good", COPY, ["loop/a"], ["loop/b"])
    looping = service("looping", COPY, ["loop/in"], ["loop/in/out"])
    with pytest.raises(DefinitionError) as refused:
        platform.catalog.apply([good, looping])

    assert [p.field for p in refused.value.problems] == ["looping.output[0].path"]
    assert platform.ledger.list_services() == []


def test_oscar_status_counts_buckets_and_objects_without_listing_them(
    make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figures come from the store's counters: the answer costs the same for 4 objects or 4 million."""
    platform = make_platform()
    store = platform.storage.default
    for bucket in ("counted", "others"):
        store.ensure_bucket(bucket)
    for path in ("counted/a/1.txt", "counted/a/2.txt", "counted/b.txt", "others/c.txt"):
        put_text(platform, path, "some bytes")

    def no_listing(*_: object, **__: object) -> None:
        raise AssertionError("/system/status listed the store")

    monkeypatch.setattr(type(store), "list", no_listing)
    monkeypatch.setattr(type(store), "list_page", no_listing)
    answer = httpx.get(f"{platform.api_url}/system/status", auth=admin(platform))
    assert answer.status_code == 200, answer.text
    assert answer.json()["minio"] == {"buckets_count": 2, "total_objects": 4}
