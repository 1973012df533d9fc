"""Wiring MinIO's bucket notification, without a MinIO (none can run here).

- The merge with the bucket's other configurations: botocore's Stubber, which checks every request
  and answer against the S3 API model, with answers shaped as MinIO gives them.
- MinIO's refusal of a target it does not know: MinIO's own answer replayed through the Stubber,
  and moto over HTTP, which refuses `arn:minio:...` with the same error code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from conveyor.errors import StorageError
from conveyor.events.base import SourceContext
from conveyor.events.minio import MinioSource
from conveyor.events.sqs import notification_id
from conveyor.model.service import Service
from conveyor.storage.registry import ProviderRegistry
from conveyor.storage.s3 import S3Credentials, S3Provider
from tests.support.moto import run_moto

BUCKET = "photos"
RECEIVER = "http://127.0.0.1:8080/conveyor/v1/events/s3/minio.lab?token=t0k3n"
OTHER = {
    "Id": "someone-elses",
    "QueueArn": "arn:minio:sqs:us-east-1:audit:kafka",
    "Events": ["s3:ObjectRemoved:*"],
    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".log"}]}},
}
# MinIO's answer to an ARN whose target it has not configured (cmd/api-errors.go, ErrARNNotification).
MINIO_UNKNOWN_ARN = "A specified destination ARN does not exist or is not well-formed. Verify the destination ARN."
MINIO_OTHER_REGION = (
    "A specified destination is in a different region than the bucket. "
    "You must use a destination that resides in the same region as the bucket."
)


def lab_service(endpoint: str = "https://minio.lab:9000", **settings: Any) -> Service:
    provider = {"endpoint": endpoint, "access_key": "AK", "secret_key": "SK", "events": "minio", **settings}
    return Service.model_validate(
        {
            "name": "grayify",
            "image": "busybox",
            "script": "true",
            "input": [{"storage_provider": "minio.lab", "path": f"{BUCKET}/in"}],
            "storage_providers": {"minio": {"lab": provider}},
        }
    )


def ours(service: Service, target: str = "conveyor", rule_name: str = "prefix") -> dict[str, Any]:
    return {
        "Id": notification_id(service, service.input[0]),
        "QueueArn": f"arn:minio:sqs:us-east-1:{target}:webhook",
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": rule_name, "Value": "in/"}]}},
    }


def source_on(registry: ProviderRegistry) -> MinioSource:
    return MinioSource(SourceContext(None, registry, lambda provider: RECEIVER.replace("minio.lab", provider)))  # type: ignore[arg-type]


@pytest.fixture
def registry() -> Iterator[ProviderRegistry]:
    registry = ProviderRegistry(S3Provider(S3Credentials(endpoint="http://127.0.0.1:9")))
    yield registry
    registry.close()


@pytest.fixture
def stubbed(registry: ProviderRegistry) -> Iterator[tuple[Stubber, ProviderRegistry]]:
    """The Stubber on the client the source will use (the registry shares it with the provider)."""
    client = registry.provider("minio.lab", lab_service()).client
    with Stubber(client) as stubber:
        yield stubber, registry
        stubber.assert_no_pending_responses()


def expect_get(stubber: Stubber, *configurations: dict[str, Any]) -> None:
    answer = {"QueueConfigurations": list(configurations)} if configurations else {}
    stubber.add_response("get_bucket_notification_configuration", answer, {"Bucket": BUCKET})


def expect_put(stubber: Stubber, *configurations: dict[str, Any]) -> None:
    stubber.add_response(
        "put_bucket_notification_configuration",
        {},
        {"Bucket": BUCKET, "NotificationConfiguration": {"QueueConfigurations": list(configurations)}},
    )


def test_wire_adds_its_configuration_and_keeps_the_others(stubbed: tuple[Stubber, ProviderRegistry]) -> None:
    stubber, registry = stubbed
    service = lab_service()
    expect_get(stubber, OTHER)
    expect_put(stubber, OTHER, ours(service))

    source_on(registry).wire(service, service.input[0])


def test_wiring_again_writes_nothing_when_the_bucket_has_it(stubbed: tuple[Stubber, ProviderRegistry]) -> None:
    """As MinIO returns it: the filter rule's name may come back capitalised."""
    stubber, registry = stubbed
    service = lab_service()
    expect_get(stubber, OTHER, ours(service, rule_name="Prefix"))

    source_on(registry).wire(service, service.input[0])  # a put would find no stubbed answer and fail


def test_another_target_replaces_the_configuration_of_the_same_input(registry: ProviderRegistry) -> None:
    service = lab_service(webhook_target="lab-hook")  # other settings, so another client than `stubbed`'s
    with Stubber(registry.provider("minio.lab", service).client) as stubber:
        expect_get(stubber, ours(service), OTHER)
        expect_put(stubber, OTHER, ours(service, target="lab-hook"))

        source_on(registry).wire(service, service.input[0])

        stubber.assert_no_pending_responses()


def test_unwire_removes_only_its_configuration(stubbed: tuple[Stubber, ProviderRegistry]) -> None:
    stubber, registry = stubbed
    service = lab_service()
    expect_get(stubber, OTHER, ours(service))
    expect_put(stubber, OTHER)
    expect_get(stubber, OTHER)  # the second unwire finds nothing of ours and writes nothing
    stubber.add_client_error("get_bucket_notification_configuration", "NoSuchBucket", http_status_code=404)

    source = source_on(registry)
    source.unwire(service, service.input[0])
    source.unwire(service, service.input[0])
    source.unwire(service, service.input[0])  # the bucket is gone: nothing to remove


def test_minios_answer_to_an_unknown_target_becomes_the_commands_that_set_it_up(
    stubbed: tuple[Stubber, ProviderRegistry],
) -> None:
    stubber, registry = stubbed
    service = lab_service()
    expect_get(stubber)
    stubber.add_client_error(
        "put_bucket_notification_configuration", "InvalidArgument", MINIO_UNKNOWN_ARN, http_status_code=400
    )

    with pytest.raises(StorageError) as raised:
        source_on(registry).wire(service, service.input[0])

    message = str(raised.value)
    assert message.startswith(f"minio.lab:{BUCKET}/in: MinIO has no webhook target 'conveyor'")
    assert MINIO_UNKNOWN_ARN in message
    assert "  mc alias set ALIAS https://minio.lab:9000 ACCESS_KEY SECRET_KEY\n" in message
    assert (
        f'  mc admin config set ALIAS notify_webhook:conveyor endpoint="{RECEIVER}" '
        'queue_dir="/opt/minio/events/conveyor"\n'
    ) in message
    assert "  mc admin service restart ALIAS\n" in message
    assert "set api.public_url" in message  # the receiver is on loopback


def test_minios_region_refusal_points_at_the_region_setting(stubbed: tuple[Stubber, ProviderRegistry]) -> None:
    stubber, registry = stubbed
    service = lab_service()
    expect_get(stubber)
    stubber.add_client_error(
        "put_bucket_notification_configuration", "InvalidArgument", MINIO_OTHER_REGION, http_status_code=400
    )

    with pytest.raises(StorageError, match=r"Set `region:` of minio.lab to MinIO's region"):
        source_on(registry).wire(service, service.input[0])


def test_describe_shows_the_target_and_the_receiver_without_its_token(registry: ProviderRegistry) -> None:
    service = lab_service(webhook_target="lab-hook")
    assert source_on(registry).describe(service, service.input[0]) == (
        "MinIO webhook target lab-hook → http://127.0.0.1:8080/conveyor/v1/events/s3/minio.lab"
    )


def test_over_http_a_store_that_refuses_the_arn_gets_the_setup_commands_and_keeps_its_configuration(
    registry: ProviderRegistry,
) -> None:
    """moto answers `arn:minio:...` with InvalidArgument ("The ARN is not well formed"), as MinIO
    answers an ARN whose target is not configured."""
    with run_moto() as moto:
        s3, sqs = moto.client("s3"), moto.client("sqs")
        s3.create_bucket(Bucket=BUCKET)
        queue = sqs.create_queue(QueueName="theirs")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        theirs = {"Id": "theirs", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [theirs]}
        )
        service = lab_service(endpoint=moto.endpoint, access_key=moto.access_key, secret_key=moto.secret_key)

        with pytest.raises(StorageError) as raised:
            source_on(registry).wire(service, service.input[0])

        assert "MinIO answered: The ARN is not well formed" in str(raised.value)
        assert f"mc alias set ALIAS {moto.endpoint} " in str(raised.value)
        assert f'notify_webhook:conveyor endpoint="{RECEIVER}"' in str(raised.value)
        config = s3.get_bucket_notification_configuration(Bucket=BUCKET)
        assert config["QueueConfigurations"] == [theirs]
