"""The SQS source against moto's S3 and SQS: wiring, the bucket's other notifications, polling, deletion."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.events.base import SourceContext
from conveyor.events.routing import InputIndex
from conveyor.events.sqs import SqsSource, notification_id
from conveyor.model.event import ObjectEvent
from conveyor.model.service import Service
from conveyor.storage.registry import ProviderRegistry
from conveyor.storage.s3 import S3Credentials, S3Provider
from tests.support.moto import MotoServer, run_moto

BUCKET = "inbox"
VISIBILITY_S = 1


class RecordingIntake:
    """Stands in for EventIntake: records what the source hands over; `refuse` makes accept raise."""

    def __init__(self, services: list[Service]) -> None:
        self.index = InputIndex()
        self.index.rebuild(services)
        self.attempts: list[ObjectEvent] = []
        self.accepted: list[ObjectEvent] = []
        self.refuse = 0
        self.during_accept: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    def accept(self, event: ObjectEvent, only_service: str | None = None) -> list[str]:
        with self._lock:
            self.attempts.append(event)
            if self.refuse:
                self.refuse -= 1
                raise RuntimeError("the ledger is down")
        self.during_accept()
        with self._lock:
            self.accepted.append(event)
        return ["job-1"]

    def accept_many(self, events: list[ObjectEvent], only_service: str | None = None) -> list[list[str]]:
        return [self.accept(event, only_service) for event in events]


def make_service(moto: MotoServer, name: str = "thumbs", path: str = f"{BUCKET}/in") -> Service:
    settings = moto.provider_settings(events="sqs", sqs_visibility_timeout=VISIBILITY_S)
    return Service.model_validate(
        {
            "name": name,
            "image": "busybox",
            "script": "true",
            "input": [{"storage_provider": "s3.aws", "path": path}],
            "output": [{"storage_provider": "s3.aws", "path": "outbox/out"}],
            "storage_providers": {"s3": {"aws": settings}},
        }
    )


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s")
        time.sleep(0.02)


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    with run_moto() as server:
        server.client("s3").create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture
def registry(moto: MotoServer) -> Iterator[ProviderRegistry]:
    default = S3Provider(S3Credentials(endpoint=moto.endpoint, access_key="k", secret_key="s"))
    registry = ProviderRegistry(default)
    yield registry
    registry.close()


@pytest.fixture
def source_for(registry: ProviderRegistry) -> Iterator[Callable[[RecordingIntake], SqsSource]]:
    sources: list[SqsSource] = []

    def make(intake: RecordingIntake) -> SqsSource:
        context = SourceContext(intake, registry, lambda provider: f"http://conveyor.invalid/{provider}")  # type: ignore[arg-type]
        source = SqsSource(context)
        sources.append(source)
        return source

    yield make
    for source in sources:
        source.stop()


def queue_counts(moto: MotoServer, name: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    sqs = moto.client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])


def queue_names(moto: MotoServer) -> list[str]:
    return [url.rsplit("/", 1)[-1] for url in moto.client("sqs").list_queues().get("QueueUrls", [])]


def notification(moto: MotoServer) -> dict[str, Any]:
    config = moto.client("s3").get_bucket_notification_configuration(Bucket=BUCKET)
    config.pop("ResponseMetadata")
    return config


def test_queue_names_are_stable_short_and_valid_for_sqs(moto: MotoServer) -> None:
    long_service = make_service(moto, name="a" * 39, path=f"{BUCKET}/" + "/".join(["deep folder+é"] * 20))
    names = {notification_id(make_service(moto), io) for io in make_service(moto).input}
    assert names == {notification_id(make_service(moto), make_service(moto).input[0])}
    name = notification_id(long_service, long_service.input[0])
    assert len(name) <= 80 and re.fullmatch(r"[A-Za-z0-9_-]+", name)
    other = make_service(moto, path=f"{BUCKET}/elsewhere")
    assert notification_id(other, other.input[0]) != notification_id(make_service(moto), make_service(moto).input[0])


def test_wiring_twice_leaves_one_configuration_and_the_bucket_keeps_its_others(
    moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]
) -> None:
    sqs, sns, s3 = moto.client("sqs"), moto.client("sns"), moto.client("s3")
    theirs_url = sqs.create_queue(QueueName="someone-elses")["QueueUrl"]
    theirs_arn = sqs.get_queue_attributes(QueueUrl=theirs_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic_arn = sns.create_topic(Name="audit")["TopicArn"]
    theirs = {"Id": "theirs", "QueueArn": theirs_arn, "Events": ["s3:ObjectRemoved:*"]}
    topic = {"Id": "audit", "TopicArn": topic_arn, "Events": ["s3:ObjectCreated:*"]}
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [theirs], "TopicConfigurations": [topic]}
    )
    service = make_service(moto)
    ours = notification_id(service, service.input[0])
    source = source_for(RecordingIntake([service]))

    source.wire(service, service.input[0])
    source.wire(service, service.input[0])

    config = notification(moto)
    assert [q["Id"] for q in config["QueueConfigurations"]] == ["theirs", ours]
    mine = config["QueueConfigurations"][1]
    assert mine["QueueArn"].endswith(f":{ours}") and mine["Events"] == ["s3:ObjectCreated:*"]
    assert mine["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "in/"}]
    assert config["TopicConfigurations"] == [topic]
    assert queue_names(moto).count(ours) == 1
    url = sqs.get_queue_url(QueueName=ours)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    statement = json.loads(attributes["Policy"])["Statement"][0]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"} and statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"] == {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"}}
    assert attributes["VisibilityTimeout"] == str(VISIBILITY_S)
    assert source.describe(service, service.input[0]) == f"SQS queue {ours} on {moto.endpoint}"

    source.unwire(service, service.input[0])
    source.unwire(service, service.input[0])  # what is gone is not an error

    config = notification(moto)
    assert config["QueueConfigurations"] == [theirs] and config["TopicConfigurations"] == [topic]
    assert ours not in queue_names(moto) and "someone-elses" in queue_names(moto)


def test_describe_names_the_aws_region_without_an_endpoint(moto: MotoServer) -> None:
    service = make_service(moto)
    service.storage_providers["s3"]["aws"] = {"access_key": "AK", "secret_key": "SK", "region": "eu-west-1"}
    source = SqsSource(SourceContext(RecordingIntake([]), ProviderRegistry(None), str))  # type: ignore[arg-type]
    assert source.describe(service, service.input[0]).endswith(" on AWS eu-west-1")


def test_a_put_is_accepted_once_and_its_message_deleted_only_afterwards(
    moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]
) -> None:
    service = make_service(moto)
    queue = notification_id(service, service.input[0])
    intake = RecordingIntake([service])
    in_flight_during_accept: list[tuple[int, int]] = []
    intake.during_accept = lambda: in_flight_during_accept.append(queue_counts(moto, queue))
    source = source_for(intake)
    source.start()
    source.wire(service, service.input[0])  # moto sends s3:TestEvent now

    etag = moto.client("s3").put_object(Bucket=BUCKET, Key="in/photo 1.jpg", Body=b"12345")["ETag"].strip('"')
    wait_until(lambda: intake.accepted)
    wait_until(lambda: queue_counts(moto, queue) == (0, 0))
    time.sleep(VISIBILITY_S + 0.5)  # a message not deleted would be back by now

    [event] = intake.accepted
    assert (event.ref.provider, event.ref.bucket, event.ref.key) == ("s3.aws", BUCKET, "in/photo 1.jpg")
    assert (event.etag, event.size, event.source) == (etag, 5, "aws:s3")
    assert in_flight_during_accept == [(0, 1)]  # the message still existed while the ledger took it
    assert intake.attempts == intake.accepted  # the test event was never handed over
    assert queue_counts(moto, queue) == (0, 0)


def test_the_test_event_is_deleted_without_reaching_the_intake(
    moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]
) -> None:
    service = make_service(moto)
    intake = RecordingIntake([service])
    source = source_for(intake)
    source.wire(service, service.input[0])
    queue = notification_id(service, service.input[0])
    assert queue_counts(moto, queue) == (1, 0)  # s3:TestEvent

    source.start()
    wait_until(lambda: queue_counts(moto, queue) == (0, 0))
    assert intake.attempts == []


def test_a_message_the_ledger_refuses_is_not_deleted_and_comes_back(
    moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]
) -> None:
    service = make_service(moto)
    intake = RecordingIntake([service])
    intake.refuse = 1
    source = source_for(intake)
    source.start()
    source.wire(service, service.input[0])

    moto.client("s3").put_object(Bucket=BUCKET, Key="in/a.txt", Body=b"a")
    wait_until(lambda: intake.attempts)
    refused_at = time.monotonic()
    assert queue_counts(moto, notification_id(service, service.input[0])) == (0, 1)  # kept, hidden
    wait_until(lambda: intake.accepted)

    assert time.monotonic() - refused_at >= VISIBILITY_S - 0.2  # came back with the visibility timeout
    assert [e.ref.key for e in intake.attempts] == ["in/a.txt", "in/a.txt"]
    assert intake.attempts[0] == intake.attempts[1]
    wait_until(lambda: queue_counts(moto, notification_id(service, service.input[0])) == (0, 0))


def test_an_sns_envelope_is_unwrapped(moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]) -> None:
    service = make_service(moto)
    intake = RecordingIntake([service])
    source = source_for(intake)
    source.wire(service, service.input[0])
    source.start()
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": "in/x%2By+z.txt", "size": 3, "eTag": "abc"}},
    }
    envelope = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": json.dumps({"Records": [record]}),
    }
    sqs = moto.client("sqs")
    url = sqs.get_queue_url(QueueName=notification_id(service, service.input[0]))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(envelope))

    wait_until(lambda: intake.accepted)
    assert [(e.ref.key, e.etag) for e in intake.accepted] == [("in/x+y z.txt", "abc")]


def test_an_object_no_input_claims_yet_waits_for_the_index(
    moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]
) -> None:
    """wire runs before apply indexes the service: an object put in between is kept, not dropped."""
    service = make_service(moto)
    intake = RecordingIntake([])
    source = source_for(intake)
    source.start()
    source.wire(service, service.input[0])
    moto.client("s3").put_object(Bucket=BUCKET, Key="in/early.txt", Body=b"e")
    wait_until(lambda: queue_counts(moto, notification_id(service, service.input[0])) == (0, 1))

    intake.index.rebuild([service])
    wait_until(lambda: intake.accepted, timeout_s=VISIBILITY_S + 5)
    assert [e.ref.key for e in intake.accepted] == ["in/early.txt"]


def test_stop_returns_promptly_during_a_long_poll(
    moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]
) -> None:
    service = make_service(moto)
    source = source_for(RecordingIntake([service]))
    source.wire(service, service.input[0])
    source.start()
    time.sleep(0.5)  # the poller is inside its 20 s receive

    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 1.0


def test_a_message_sent_while_nobody_polls_is_taken_by_the_next_source(
    moto: MotoServer, source_for: Callable[[RecordingIntake], SqsSource]
) -> None:
    """A restart: the new source learns the queue by wiring again, and finds what waited there."""
    service = make_service(moto)
    first = source_for(RecordingIntake([service]))
    first.start()
    first.wire(service, service.input[0])
    time.sleep(0.3)
    first.stop()
    moto.client("s3").put_object(Bucket=BUCKET, Key="in/while-down.txt", Body=b"d")

    intake = RecordingIntake([service])
    second = source_for(intake)
    second.wire(service, service.input[0])
    second.start()

    wait_until(lambda: intake.accepted, timeout_s=VISIBILITY_S + 5)
    assert [e.ref.key for e in intake.accepted] == ["in/while-down.txt"]
