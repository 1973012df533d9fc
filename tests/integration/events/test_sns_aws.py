"""The SNS event source on its AWS path (no endpoint), against moto's in-process AWS.

This checks the calls and their order only: moto neither validates the topic policy as S3 does
nor posts the SubscriptionConfirmation AWS would send. Nothing here ran against AWS itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import boto3
import pytest
from moto import mock_aws

from conveyor.events.base import SourceContext
from conveyor.events.intake import EventIntake
from conveyor.events.sns import SnsSource, is_aws, topic_name
from conveyor.model.service import Service
from conveyor.storage.registry import ProviderRegistry

REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


def client(kind: str) -> Any:
    return boto3.client(kind, region_name=REGION, aws_access_key_id="AK", aws_secret_access_key="SK")


def source_posting_to(url: str) -> SnsSource:
    context = SourceContext(cast(EventIntake, None), cast(ProviderRegistry, None), lambda provider: url)
    return SnsSource(context)


def aws_service() -> Service:
    return Service.model_validate(
        {
            "name": "grayify",
            "image": "x",
            "script": "true",
            "input": [{"storage_provider": "s3.aws", "path": "photos/in"}],
            "output": [{"path": "grayify/out"}],
            "storage_providers": {
                "s3": {"aws": {"access_key": "AK", "secret_key": "SK", "region": REGION, "events": "sns"}}
            },
        }
    )


def subscriptions(sns: Any, arn: str) -> list[tuple[str, str]]:
    found = sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    return sorted((s["Protocol"], s["Endpoint"]) for s in found)


def test_is_aws_only_without_an_endpoint_or_with_an_amazonaws_one() -> None:
    assert is_aws(None)
    assert is_aws("https://s3.eu-west-1.amazonaws.com")
    assert not is_aws("http://127.0.0.1:7480")
    assert not is_aws("https://rgw.example.org")
    assert not is_aws("https://notamazonaws.com")


def test_wire_subscribes_the_receiver_and_merges_the_configuration(aws: None) -> None:
    s3, sns = client("s3"), client("sns")
    s3.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": REGION})
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName="theirs")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    theirs = {"Id": "theirs", "QueueArn": queue_arn, "Events": ["s3:ObjectRemoved:*"]}
    s3.put_bucket_notification_configuration(
        Bucket="photos", NotificationConfiguration={"QueueConfigurations": [theirs]}
    )
    service = aws_service()
    io = service.input[0]
    name = topic_name(service, io)

    source_posting_to("https://conveyor.example.org/events/s3.aws?token=t").wire(service, io)
    source_posting_to("https://conveyor.example.org/events/s3.aws?token=t").wire(service, io)

    answer = s3.get_bucket_notification_configuration(Bucket="photos")
    assert [c["Id"] for c in answer["QueueConfigurations"]] == ["theirs"]
    [ours] = answer["TopicConfigurations"]
    assert ours["Id"] == name and ours["Events"] == ["s3:ObjectCreated:*"]
    assert ours["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "in/"}]
    assert subscriptions(sns, ours["TopicArn"]) == [("https", "https://conveyor.example.org/events/s3.aws?token=t")]
    policy = json.loads(sns.get_topic_attributes(TopicArn=ours["TopicArn"])["Attributes"]["Policy"])
    assert policy["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::photos"


def test_a_new_receiver_url_replaces_the_old_subscription(aws: None) -> None:
    s3, sns = client("s3"), client("sns")
    s3.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": REGION})
    service = aws_service()

    source_posting_to("http://old.example.org/e").wire(service, service.input[0])
    source_posting_to("http://new.example.org/e").wire(service, service.input[0])

    [ours] = s3.get_bucket_notification_configuration(Bucket="photos")["TopicConfigurations"]
    assert subscriptions(sns, ours["TopicArn"]) == [("http", "http://new.example.org/e")]


def test_unwire_keeps_the_others_and_deletes_the_topic(aws: None) -> None:
    s3, sns = client("s3"), client("sns")
    s3.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": REGION})
    service = aws_service()
    source = source_posting_to("https://conveyor.example.org/e")
    source.wire(service, service.input[0])
    other_arn = sns.create_topic(Name="theirs")["TopicArn"]
    theirs = {"Id": "theirs", "TopicArn": other_arn, "Events": ["s3:ObjectCreated:*"]}
    current = s3.get_bucket_notification_configuration(Bucket="photos")["TopicConfigurations"]
    s3.put_bucket_notification_configuration(
        Bucket="photos", NotificationConfiguration={"TopicConfigurations": [*current, theirs]}
    )

    source.unwire(service, service.input[0])
    source.unwire(service, service.input[0])

    assert s3.get_bucket_notification_configuration(Bucket="photos")["TopicConfigurations"] == [theirs]
    assert [t["TopicArn"] for t in sns.list_topics()["Topics"]] == [other_arn]


def test_unwiring_the_last_configuration_leaves_an_empty_one(aws: None) -> None:
    s3 = client("s3")
    s3.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": REGION})
    service = aws_service()
    source = source_posting_to("https://conveyor.example.org/e")
    source.wire(service, service.input[0])

    source.unwire(service, service.input[0])

    answer = s3.get_bucket_notification_configuration(Bucket="photos")
    assert not answer.get("TopicConfigurations")
    assert source.describe(service, service.input[0]).startswith(f"SNS push from https://sns.{REGION}.amazonaws.com")
