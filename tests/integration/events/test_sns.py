"""The SNS event source against a real Ceph RGW: topics, bucket notifications, and RGW's POSTs.

A tiny loopback HTTP server stands in for Conveyor's receiver, so these tests need no platform:
what RGW posts there must parse into the ObjectEvent the platform would accept.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from conveyor.errors import StorageAuthError, StorageError, StorageUnavailable
from conveyor.events.base import SourceContext
from conveyor.events.intake import EventIntake
from conveyor.events.s3_records import parse_s3_records
from conveyor.events.sns import SnsSource, topic_name
from conveyor.model.event import ObjectRef
from conveyor.model.service import Service, StorageIO
from conveyor.storage.registry import ProviderRegistry
from tests.support.ceph import CephRgw, run_ceph_rgw

TOKEN = "receiver-token"
PROVIDER = "s3.ceph"


@dataclass
class Receiver:
    """Records every POST: (path with query, body)."""

    url: str
    posts: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)

    def next_post(self, timeout_s: float = 10.0) -> tuple[str, bytes]:
        return self.posts.get(timeout=timeout_s)

    def drain(self) -> list[tuple[str, bytes]]:
        drained = []
        while not self.posts.empty():
            drained.append(self.posts.get_nowait())
        return drained


@pytest.fixture(scope="module")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRgw]:
    with run_ceph_rgw(tmp_path_factory.mktemp("ceph")) as rgw:
        yield rgw


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with _serve_receiver() as running:
        yield running


@pytest.fixture
def s3(ceph: CephRgw) -> Iterator[Any]:
    client = ceph.client()
    yield client
    client.close()


@pytest.fixture
def sns(ceph: CephRgw) -> Iterator[Any]:
    client = ceph.client("sns")
    yield client
    client.close()


def source_posting_to(url: str) -> SnsSource:
    """Only `receiver_url` is used by this source: the intake and the stores are not needed."""
    context = SourceContext(
        intake=cast(EventIntake, None),
        storage=cast(ProviderRegistry, None),
        receiver_url=lambda provider: f"{url}/events/{provider}?token={TOKEN}",
    )
    return SnsSource(context)


@pytest.fixture
def source(receiver: Receiver) -> SnsSource:
    return source_posting_to(receiver.url)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        cast(Any, self.server).posts.put((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextlib.contextmanager
def _serve_receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    running = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    cast(Any, server).posts = running.posts
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        server.shutdown()
        server.server_close()


def ceph_service(ceph: CephRgw, path: str, name: str = "grayify", **settings: Any) -> Service:
    return Service.model_validate(
        {
            "name": name,
            "image": "localhost/conveyor-test:busybox",
            "script": "true",
            "input": [{"storage_provider": PROVIDER, "path": path}],
            "output": [{"path": f"{name}/out"}],
            "storage_providers": {"s3": {"ceph": ceph.settings(events="sns", **settings)}},
        }
    )


def configurations(s3: Any, bucket: str) -> dict[str, dict[str, Any]]:
    answer = s3.get_bucket_notification_configuration(Bucket=bucket)
    return {c["Id"]: c for c in answer.get("TopicConfigurations", [])}


def topic_names(sns: Any) -> list[str]:
    """Name per topic ARN; RGW also lists its own copy of each configuration's topic under the same ARN."""
    return [str(t["TopicArn"]).rsplit(":", 1)[-1] for t in sns.list_topics().get("Topics", [])]


def test_wiring_twice_leaves_one_topic_and_one_configuration(
    ceph: CephRgw, source: SnsSource, s3: Any, sns: Any, receiver: Receiver
) -> None:
    s3.create_bucket(Bucket="twice")
    service = ceph_service(ceph, "twice/in")
    name = topic_name(service, service.input[0])

    source.wire(service, service.input[0])
    source.wire(service, service.input[0])

    assert list(configurations(s3, "twice")) == [name]
    ours = configurations(s3, "twice")[name]
    assert ours["Events"] == ["s3:ObjectCreated:*"]
    assert ours["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "in/"}]
    attributes = sns.get_topic_attributes(TopicArn=ours["TopicArn"])["Attributes"]
    assert f"{receiver.url}/events/{PROVIDER}?token={TOKEN}" in attributes["EndPoint"]
    assert topic_names(sns).count(name) == 2, "the topic and RGW's copy held by the one configuration"
    source.unwire(service, service.input[0])


def test_another_configuration_survives_wire_and_unwire(ceph: CephRgw, source: SnsSource, s3: Any, sns: Any) -> None:
    s3.create_bucket(Bucket="shared")
    theirs = sns.create_topic(Name="someone-else", Attributes={"push-endpoint": "http://127.0.0.1:9/theirs"})
    foreign = {
        "Id": "someone-else",
        "TopicArn": theirs["TopicArn"],
        "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".csv"}]}},
    }
    s3.put_bucket_notification_configuration(
        Bucket="shared", NotificationConfiguration={"TopicConfigurations": [foreign]}
    )
    service = ceph_service(ceph, "shared/in")

    source.wire(service, service.input[0])
    assert sorted(configurations(s3, "shared")) == sorted(["someone-else", topic_name(service, service.input[0])])
    source.unwire(service, service.input[0])

    assert configurations(s3, "shared") == {"someone-else": foreign}
    assert "someone-else" in topic_names(sns)


def test_a_configuration_whose_topic_was_deleted_does_not_stop_wiring(
    ceph: CephRgw, source: SnsSource, s3: Any, sns: Any
) -> None:
    """Sending RGW the others' configurations again would fail on this one (NoSuchKey)."""
    s3.create_bucket(Bucket="stale")
    gone = sns.create_topic(Name="deleted-later", Attributes={"push-endpoint": "http://127.0.0.1:9/x"})["TopicArn"]
    stale = {"Id": "stale", "TopicArn": gone, "Events": ["s3:ObjectCreated:*"]}
    s3.put_bucket_notification_configuration(Bucket="stale", NotificationConfiguration={"TopicConfigurations": [stale]})
    sns.delete_topic(TopicArn=gone)
    service = ceph_service(ceph, "stale/in")

    source.wire(service, service.input[0])

    assert sorted(configurations(s3, "stale")) == sorted(["stale", topic_name(service, service.input[0])])
    source.unwire(service, service.input[0])
    assert list(configurations(s3, "stale")) == ["stale"]


def test_unwire_removes_the_topic_and_the_configuration_and_can_run_again(
    ceph: CephRgw, source: SnsSource, s3: Any, sns: Any
) -> None:
    s3.create_bucket(Bucket="removal")
    service = ceph_service(ceph, "removal/deep/in")
    name = topic_name(service, service.input[0])
    source.wire(service, service.input[0])
    assert name in topic_names(sns)

    source.unwire(service, service.input[0])
    source.unwire(service, service.input[0])

    assert configurations(s3, "removal") == {}
    assert name not in topic_names(sns), "neither the topic nor RGW's copy of it is left"
    gone = ceph_service(ceph, "no-such-bucket/in")
    source.unwire(gone, gone.input[0])  # nothing was set up: not an error


def test_a_put_under_the_prefix_is_posted_with_its_key_as_stored(
    ceph: CephRgw, source: SnsSource, s3: Any, receiver: Receiver
) -> None:
    s3.create_bucket(Bucket="incoming")
    service = ceph_service(ceph, "incoming/in")
    source.wire(service, service.input[0])
    receiver.drain()
    try:
        s3.put_object(Bucket="incoming", Key="elsewhere/x.txt", Body=b"not ours")
        s3.put_object(Bucket="incoming", Key="inside-not-in-folder.txt", Body=b"not ours")
        started = time.monotonic()
        stored = s3.put_object(Bucket="incoming", Key="in/sub dir/photo 1.jpg", Body=b"hello ceph")

        path, body = receiver.next_post()
        latency = time.monotonic() - started
        events = parse_s3_records(body, provider=PROVIDER)
    finally:
        source.unwire(service, service.input[0])

    assert path == f"/events/{PROVIDER}?token={TOKEN}"
    assert [e.ref for e in events] == [ObjectRef(provider=PROVIDER, bucket="incoming", key="in/sub dir/photo 1.jpg")]
    assert (events[0].etag, events[0].size) == (stored["ETag"].strip('"'), 10)
    assert events[0].source == "ceph:s3"
    assert latency < 2.0, "RGW posts before it answers the PUT"
    assert receiver.drain() == [], "objects outside in/ are not posted"


def test_wiring_again_points_the_configuration_at_a_new_receiver(ceph: CephRgw, receiver: Receiver, s3: Any) -> None:
    """RGW's configuration keeps a copy of its topic: a moved receiver needs both put again."""
    s3.create_bucket(Bucket="moved")
    service = ceph_service(ceph, "moved/in")
    with _serve_receiver() as old, _serve_receiver() as new:
        source_posting_to(old.url).wire(service, service.input[0])
        source_posting_to(new.url).wire(service, service.input[0])
        try:
            s3.put_object(Bucket="moved", Key="in/a.txt", Body=b"a")
            _, body = new.next_post()
        finally:
            source_posting_to(new.url).unwire(service, service.input[0])
        assert [e.ref.key for e in parse_s3_records(body)] == ["in/a.txt"]
        assert old.drain() == []


def test_a_whole_bucket_input_has_no_prefix_filter(ceph: CephRgw, source: SnsSource, s3: Any) -> None:
    """FDL paths always name a folder (a bare one goes under the service's bucket); StorageIO alone need not."""
    s3.create_bucket(Bucket="wholebucket")
    service = ceph_service(ceph, "wholebucket/in")
    whole = StorageIO(storage_provider=PROVIDER, path="wholebucket")
    source.wire(service, whole)
    try:
        assert "Filter" not in configurations(s3, "wholebucket")[topic_name(service, whole)]
    finally:
        source.unwire(service, whole)


def test_refusals_name_the_provider_the_path_and_the_stores_reason(ceph: CephRgw, source: SnsSource, sns: Any) -> None:
    missing = ceph_service(ceph, "not-there/in")
    with pytest.raises(StorageError, match=r"s3\.ceph:not-there/in: cannot add the bucket notification: NoSuchBucket"):
        source.wire(missing, missing.input[0])
    assert topic_name(missing, missing.input[0]) not in topic_names(sns), "no topic is left behind"

    wrong_key = ceph_service(ceph, "incoming/in", secret_key="wrong")
    with pytest.raises(StorageAuthError, match=r"s3\.ceph:incoming/in: .*SignatureDoesNotMatch"):
        source.wire(wrong_key, wrong_key.input[0])

    nowhere = ceph_service(ceph, "incoming/in", endpoint="http://127.0.0.1:9")
    with pytest.raises(StorageUnavailable, match=r"s3\.ceph:incoming/in: cannot create the notification topic"):
        source.wire(nowhere, nowhere.input[0])


def test_describe_names_the_endpoint_and_the_topic(ceph: CephRgw, source: SnsSource) -> None:
    service = ceph_service(ceph, "incoming/in")
    name = topic_name(service, service.input[0])
    assert source.describe(service, service.input[0]) == f"SNS push from {ceph.endpoint} (topic {name})"
    assert name.startswith("conveyor-grayify-") and len(name) == len("conveyor-grayify-") + 10
