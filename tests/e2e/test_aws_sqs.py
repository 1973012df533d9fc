"""The AWS workflow against moto: a file put in S3 → S3 notification → SQS → job → output in another bucket.

The platform is real (API, ledger, dispatcher, host processes); S3 and SQS are moto's, at one
endpoint, with `events: sqs` on the provider (without an endpoint, AWS S3 gets SQS by default).
The reconciler is off, so every job here came through the queue.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from conveyor.model.event import utcnow
from conveyor.model.job import JobState
from conveyor.model.service import Service
from tests.conftest import PlatformFactory
from tests.support.moto import MotoServer, run_moto
from tests.support.platform import wait_for_jobs

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
INBOX, OUTBOX = "aws-inbox", "aws-outbox"
NO_RECONCILER = {"reconcile_interval_s": 0}


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    with run_moto() as server:
        yield server


def aws_service(moto: MotoServer, name: str = "copy-aws") -> Service:
    return Service.model_validate(
        {
            "name": name,
            "image": "-",
            "script": COPY,
            "input": [{"storage_provider": "s3.aws", "path": f"{INBOX}/in"}],
            "output": [{"storage_provider": "s3.aws", "path": f"{OUTBOX}/out"}],
            "storage_providers": {"s3": {"aws": moto.provider_settings(events="sqs", sqs_visibility_timeout=5)}},
        }
    )


def queue_names(moto: MotoServer) -> list[str]:
    return [url.rsplit("/", 1)[-1] for url in moto.client("sqs").list_queues().get("QueueUrls", [])]


def test_a_file_put_in_s3_runs_a_job_whose_output_lands_in_another_bucket(
    make_platform: PlatformFactory, moto: MotoServer
) -> None:
    platform = make_platform(dispatch=NO_RECONCILER)
    service = aws_service(moto)
    platform.catalog.apply([service])
    s3 = moto.client("s3")
    assert [q["Id"] for q in s3.get_bucket_notification_configuration(Bucket=INBOX)["QueueConfigurations"]] == [
        queue := queue_names(moto)[0]
    ]
    assert platform.sources.describe(service, service.input[0]) == f"SQS queue {queue} on {moto.endpoint}"

    s3.put_object(Bucket=INBOX, Key="in/hello world.txt", Body=b"hello from S3")

    [job] = wait_for_jobs(platform, "copy-aws", 1)
    assert job.state == JobState.SUCCEEDED, job.message
    assert (job.trigger.ref.provider, job.trigger.ref.key) == ("s3.aws", "in/hello world.txt")
    assert s3.get_object(Bucket=OUTBOX, Key="out/hello world.txt")["Body"].read() == b"hello from S3"
    assert [(o.ref.provider, o.ref.bucket, o.ref.key) for o in job.outputs] == [
        ("s3.aws", OUTBOX, "out/hello world.txt")
    ]

    platform.catalog.delete("copy-aws")
    assert queue_names(moto) == []
    assert "QueueConfigurations" not in s3.get_bucket_notification_configuration(Bucket=INBOX)


def test_files_put_while_conveyor_is_down_wait_in_the_queue(
    make_platform: PlatformFactory, moto: MotoServer, tmp_path: Path
) -> None:
    """The restarted platform wires its services again, which tells the source which queues to read."""
    data_dir = tmp_path / "restart"
    first = make_platform(data_dir=data_dir, dispatch=NO_RECONCILER)
    first.catalog.apply([aws_service(moto)])
    first.stop()
    moto.client("s3").put_object(Bucket=INBOX, Key="in/while-down.txt", Body=b"late")

    second = make_platform(data_dir=data_dir, dispatch=NO_RECONCILER)

    [job] = wait_for_jobs(second, "copy-aws", 1)
    assert job.state == JobState.SUCCEEDED and job.trigger.ref.key == "in/while-down.txt"
    assert moto.client("s3").get_object(Bucket=OUTBOX, Key="out/while-down.txt")["Body"].read() == b"late"


def test_event_to_job_latency_over_fifty_puts(make_platform: PlatformFactory, moto: MotoServer) -> None:
    """From the start of each PUT to the job's creation in the ledger (bench/event_latency_sqs.py
    measures the same with more PUTs and writes bench/results/)."""
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply([aws_service(moto)])
    s3 = moto.client("s3")
    put_at: dict[str, datetime] = {}
    for i in range(50):
        key = f"in/f{i:03d}.txt"
        put_at[key] = utcnow()
        s3.put_object(Bucket=INBOX, Key=key, Body=b"x")
        time.sleep(0.02)

    jobs = wait_for_jobs(platform, "copy-aws", 50, timeout_s=120)

    latencies = sorted((job.created_at - put_at[job.trigger.ref.key]).total_seconds() for job in jobs)
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))]
    print(f"SQS event → job over {len(latencies)} PUTs: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert len(latencies) == 50 and {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert latencies[0] > 0 and p99 < 2.0
