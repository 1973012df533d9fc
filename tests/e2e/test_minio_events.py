"""MinIO's webhook bodies through a real platform, with moto as the S3 store behind `minio.lab`.

No MinIO server can run here, so MinIO's two halves are tested apart. Its notifications are the
recorded bodies below, posted as MinIO's webhook target posts them, to the provider's receiver and
to OSCAR's `/job/<service>`; the objects they name really are in the store (moto, S3-compatible),
so stage-in, the script and stage-out all run. The provider says `events: poll` because MinIO's
webhook cannot be wired on moto (tests/integration/events/test_minio_wire.py covers wiring); the
reconciler is off, so every job here came from a posted body.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from conveyor.errors import DeployError
from conveyor.model.job import JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.moto import MotoServer, run_moto
from tests.support.platform import wait_for_jobs

pytestmark = pytest.mark.e2e

BUCKET = "lab-photos"
COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
NO_RECONCILER = {"reconcile_interval_s": 0}

# A MinIO webhook body as MinIO (RELEASE.2023) sends it for a PUT, with the shape of
# reference/oscar-api.md §3.2: key URL-encoded, user metadata under its header name.
RECORDED_PUT: dict[str, Any] = json.loads("""
{"EventName":"s3:ObjectCreated:Put","Key":"vexination/index",
 "Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2023-06-05T11:04:06.851Z",
   "eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":"admin"},
   "requestParameters":{"principalId":"admin","region":"","sourceIPAddress":"10.89.1.9"},
   "responseElements":{"content-length":"0",
     "x-amz-id-2":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "x-amz-request-id":"1765BE755F95378E","x-minio-deployment-id":"7637fbd9-a700-4918-bc9d-f7929adf0d8f",
     "x-minio-origin-endpoint":"http://10.89.1.9:9000"},
   "s3":{"s3SchemaVersion":"1.0","configurationId":"Config",
     "bucket":{"name":"vexination","ownerIdentity":{"principalId":"admin"},"arn":"arn:aws:s3:::vexination"},
     "object":{"key":"index","size":2851,"eTag":"8aebf225551d1a9c71914a91bf36c7e3",
       "contentType":"application/octet-stream","userMetadata":{"content-type":"application/octet-stream"},
       "sequencer":"1765BE756000DEDE"}},
   "source":{"host":"10.89.1.9","port":"","userAgent":""}}]}
""")


def minio_body(bucket: str, key: str, size: int, etag: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The recorded body about another object: MinIO URL-encodes the key, as AWS does."""
    body = copy.deepcopy(RECORDED_PUT)
    body["Key"] = f"{bucket}/{key}"
    s3 = body["Records"][0]["s3"]
    s3["bucket"].update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
    s3["object"].update(key=quote_plus(key), size=size, eTag=etag)
    s3["object"]["userMetadata"].update(metadata or {})
    return body


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    with run_moto() as server:
        yield server


def lab_service(moto: MotoServer, name: str, source: str, target: str, events: str = "poll") -> Service:
    return Service.model_validate(
        {
            "name": name,
            "image": "-",
            "script": COPY,
            "input": [{"storage_provider": "minio.lab", "path": f"{BUCKET}/{source}"}],
            "output": [{"storage_provider": "minio.lab", "path": f"{BUCKET}/{target}"}],
            "storage_providers": {"minio": {"lab": moto.provider_settings(events=events)}},
        }
    )


def put(moto: MotoServer, key: str, data: bytes) -> dict[str, Any]:
    """Store the object in moto and return the body MinIO would post about it."""
    etag = moto.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/jpeg")["ETag"]
    return minio_body(BUCKET, key, len(data), etag.strip('"'))


def post_to_receiver(platform: Platform, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    url = f"{platform.api_url}/conveyor/v1/events/s3/minio.lab"
    return httpx.post(url, params={"token": token or platform.credentials.webhook_token}, json=body, timeout=30)


def test_a_minio_body_posted_to_the_receiver_runs_the_job_on_the_objects_store(
    make_platform: PlatformFactory, moto: MotoServer
) -> None:
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply([lab_service(moto, "grayify", "in", "out")])
    body = put(moto, "in/cat photo+1.jpg", b"meow")
    assert body["Records"][0]["s3"]["object"]["key"] == "in%2Fcat+photo%2B1.jpg"

    assert post_to_receiver(platform, body, token="wrong").status_code == 401
    answer = post_to_receiver(platform, body)

    assert answer.status_code == 200
    [job] = wait_for_jobs(platform, "grayify", 1)
    assert answer.json() == {"jobs": [job.job_id]}
    assert job.state == JobState.SUCCEEDED, job.message
    trigger = job.trigger
    assert (trigger.ref.provider, trigger.ref.bucket, trigger.ref.key) == ("minio.lab", BUCKET, "in/cat photo+1.jpg")
    assert (trigger.etag, trigger.size) == (body["Records"][0]["s3"]["object"]["eTag"], 4)
    output = moto.client("s3").get_object(Bucket=BUCKET, Key="out/cat photo+1.jpg")
    assert output["Body"].read() == b"meow"

    # MinIO sends again what it is not sure was delivered (its queue_dir): one job all the same.
    assert post_to_receiver(platform, body).json() == {"jobs": []}
    assert len(wait_for_jobs(platform, "grayify", 1)) == 1


def test_user_metadata_in_a_minio_body_links_a_job_to_the_job_that_wrote_its_input(
    make_platform: PlatformFactory, moto: MotoServer
) -> None:
    """A job stamps its outputs with its id (S3 user metadata); MinIO's body passes it on."""
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply([lab_service(moto, "grayify", "in", "mid"), lab_service(moto, "thumbs", "mid", "out")])
    [first] = post_and_wait(platform, put(moto, "in/dog.jpg", b"woof"), "grayify")

    head = moto.client("s3").head_object(Bucket=BUCKET, Key="mid/dog.jpg")
    metadata = {f"X-Amz-Meta-{name.title()}": value for name, value in head["Metadata"].items()}
    assert metadata["X-Amz-Meta-Conveyor-Job"] == first.job_id
    body = minio_body(BUCKET, "mid/dog.jpg", head["ContentLength"], head["ETag"].strip('"'), metadata)
    [second] = post_and_wait(platform, body, "thumbs")

    assert second.state == JobState.SUCCEEDED, second.message
    assert (second.parent_job, second.depth) == (first.job_id, 1)
    assert moto.client("s3").get_object(Bucket=BUCKET, Key="out/dog.jpg")["Body"].read() == b"woof"


def post_and_wait(platform: Platform, body: dict[str, Any], service: str) -> list[Any]:
    assert post_to_receiver(platform, body).status_code == 200
    return wait_for_jobs(platform, service, 1)


def test_a_minio_body_posted_to_the_services_job_route_with_its_token(
    make_platform: PlatformFactory, moto: MotoServer
) -> None:
    """OSCAR's wiring: MinIO's target posts to /job/<service> with the service's token."""
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply([lab_service(moto, "grayify", "in", "out")])
    token = platform.ledger.fetch_service("grayify", with_secrets=True).token
    body = put(moto, "in/bird 2.jpg", b"tweet")

    answer = httpx.post(
        f"{platform.api_url}/job/grayify", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )

    assert answer.status_code == 201
    [job] = wait_for_jobs(platform, "grayify", 1)
    assert answer.headers["X-Conveyor-Job-Id"] == job.job_id
    assert job.trigger.ref.key == "in/bird 2.jpg"
    assert job.trigger.ref.provider == "minio.lab", "the event names an object of the input's store"
    assert job.state == JobState.SUCCEEDED, job.message
    assert moto.client("s3").get_object(Bucket=BUCKET, Key="out/bird 2.jpg")["Body"].read() == b"tweet"


def test_applying_events_minio_where_the_target_is_missing_explains_the_setup_and_deploys_nothing(
    make_platform: PlatformFactory, moto: MotoServer
) -> None:
    """moto refuses MinIO's ARN as a MinIO without the target does (InvalidArgument)."""
    platform = make_platform(dispatch=NO_RECONCILER)

    with pytest.raises(DeployError) as raised:
        platform.catalog.apply([lab_service(moto, "grayify", "in", "out", events="minio")])

    receiver = f"{platform.api_url}/conveyor/v1/events/s3/minio.lab?token={platform.credentials.webhook_token}"
    assert f'mc admin config set ALIAS notify_webhook:conveyor endpoint="{receiver}"' in str(raised.value)
    assert "mc admin service restart ALIAS" in str(raised.value)
    assert platform.ledger.fetch_service("grayify") is None
    assert BUCKET not in [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]]  # made by apply, removed
