"""AWS S3 → SQS: one queue per service input, the bucket's notification feeds it, a poller drains it.

    S3 bucket ─ QueueConfiguration (s3:ObjectCreated:*, prefix folder/) ─▶ SQS queue ─ long poll ─▶ EventIntake

S3 cannot post to a URL, but it can put a message in a queue that Conveyor reads from wherever it
runs: no public endpoint is needed, which is why this is the default for AWS S3.

Delivery is at least once. A message is deleted only once the ledger has its events: a crash in
between makes SQS deliver it again after the visibility timeout, and the ledger's idempotency key
turns the second delivery into a counted duplicate. While Conveyor is down the queue keeps the
messages (up to 14 days), so a restart loses nothing either.

The provider's settings choose and tune it (`sqs_visibility_timeout` in seconds, default 30):

    storage_providers:
      s3:
        aws: {access_key: AK, secret_key: SK, region: eu-west-1}     # AWS S3: sqs is the default
        moto: {endpoint: "http://127.0.0.1:5000", access_key: AK, secret_key: SK, events: sqs}

The queue must live in the bucket's region, so `region` must be the bucket's. The helpers that edit
a bucket's QueueConfigurations (`put_queue_configuration`, `remove_configuration`) are shared with
the MinIO source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from conveyor.clouds.aws import boto_client, error_code, mapped_errors
from conveyor.errors import StorageError
from conveyor.events.base import EventSource, SourceContext
from conveyor.events.s3_records import parse_s3_records, sns_envelope
from conveyor.model.event import ObjectEvent
from conveyor.model.service import Service, StorageIO
from conveyor.storage.s3 import S3Credentials, S3Provider

log = logging.getLogger(__name__)

WAIT_S = 20
"""The longest wait SQS allows per receive: an idle queue costs one request every 20 s."""
BATCH = 10
"""The most messages SQS hands out per receive."""
RETENTION_S = 14 * 24 * 3600
"""SQS's maximum: events wait this long for a Conveyor that is down."""
DEFAULT_VISIBILITY_S = 30
UNCLAIMED_RECEIVES = 5
"""Receives of a message whose object no deployed input contains before it is dropped (see `_handle`)."""
STOP_GRACE_S = 1.0
BACKOFF_MAX_S = 30.0
CREATED_EVENTS = ["s3:ObjectCreated:*"]

_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_NOTIFICATION_LOCK = threading.Lock()
"""A bucket's notification configuration is read, changed and written whole: one edit at a time here."""


# ---- names and settings, shared with the MinIO source -------------------------------------------


def notification_id(service: Service, io: StorageIO) -> str:
    """A stable name for one input of one service: the queue's name and the notification's Id.

    SQS allows 80 letters, digits, `-` and `_`; service names are at most 39 of `[a-z0-9-]`, and the
    input path, which may be long or hold other characters, is hashed.
    """
    digest = hashlib.sha256(f"{io.storage_provider}:{io.path}".encode()).hexdigest()[:12]
    return f"conveyor-{service.name}-{digest}"


def provider_settings(service: Service, io: StorageIO) -> dict[str, Any]:
    return service.provider_settings(io.storage_provider) or {}


def s3_client(context: SourceContext, service: Service, io: StorageIO) -> Any:
    """The boto3 client of the input's store, shared with the provider that moves its bytes."""
    provider = context.storage.provider(io.storage_provider, service)
    if not isinstance(provider, S3Provider):
        raise StorageError(f"{io.storage_provider} is not an S3 store: bucket notifications cannot be set on it")
    return provider.client


# ---- a bucket's QueueConfigurations -------------------------------------------------------------


def queue_configuration(config_id: str, queue_arn: str, io: StorageIO) -> dict[str, Any]:
    """Object-created events under the input's folder. No suffix filter: FDL suffixes apply to outputs."""
    entry: dict[str, Any] = {"Id": config_id, "QueueArn": queue_arn, "Events": CREATED_EVENTS}
    if io.folder:
        entry["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": io.folder + "/"}]}}
    return entry


def put_queue_configuration(s3: Any, bucket: str, entry: dict[str, Any]) -> bool:
    """Add `entry`, or replace the configuration with its Id, keeping every other one of the bucket.

    Returns False when the bucket already had it: nothing is written then (each write makes AWS
    send a test event to every destination).
    """
    with _NOTIFICATION_LOCK:
        config = _notification_configuration(s3, bucket)
        queues = config.get("QueueConfigurations", [])
        if any(q.get("Id") == entry["Id"] and _essence(q) == _essence(entry) for q in queues):
            return False
        config["QueueConfigurations"] = [q for q in queues if q.get("Id") != entry["Id"]] + [entry]
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
        return True


def remove_configuration(s3: Any, bucket: str, config_id: str) -> bool:
    """Remove the QueueConfiguration `config_id`, keeping the others; False when there was none."""
    with _NOTIFICATION_LOCK:
        try:
            config = _notification_configuration(s3, bucket)
        except ClientError as error:
            if error_code(error) == "NoSuchBucket":
                return False
            raise
        queues = config.get("QueueConfigurations", [])
        kept = [q for q in queues if q.get("Id") != config_id]
        if len(kept) == len(queues):
            return False
        config["QueueConfigurations"] = kept
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
        return True


def _notification_configuration(s3: Any, bucket: str) -> dict[str, Any]:
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    config.pop("ResponseMetadata", None)
    return config


def _essence(entry: dict[str, Any]) -> tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """What a configuration does; stores return filter rule names in their own case (`Prefix`)."""
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return (
        entry.get("QueueArn", ""),
        tuple(sorted(entry.get("Events", []))),
        tuple(sorted((r.get("Name", "").lower(), r.get("Value", "")) for r in rules)),
    )


# ---- messages ---------------------------------------------------------------------------------------


def message_events(body: str, provider: str) -> list[ObjectEvent]:
    """The object-created events in an SQS message: S3 records, bare or inside an SNS envelope
    (S3 → SNS topic → SQS without raw delivery). [] for anything else, such as `s3:TestEvent`."""
    envelope = sns_envelope(body)
    records = envelope.get("Message", "") if envelope is not None else body
    return parse_s3_records(records, provider)


@dataclass
class _Queue:
    """A wired queue: its events are attributed to `provider`; `stop` ends its poller."""

    name: str
    provider: str
    url: str
    client: Any
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    handling: bool = False
    """Between a receive and the deletes: stop() waits for this part only, not for a long poll."""


class SqsSource(EventSource):
    """Queues wired by this process are polled, one thread per queue.

    One long poll blocks for up to 20 s, so a single thread serving several queues would make each
    wait for the others; a thread per queue keeps every queue's latency at one round trip. Threads
    mostly sleep in a socket read. The platform wires every deployed service again at start-up,
    which is how the queues of a previous run are found.
    """

    kind = "sqs"

    def __init__(self, context: SourceContext) -> None:
        super().__init__(context)
        self._queues: dict[str, _Queue] = {}
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._running = False

    def describe(self, service: Service, io: StorageIO) -> str:
        credentials = S3Credentials.model_validate(provider_settings(service, io))
        return f"SQS queue {notification_id(service, io)} on {credentials.endpoint or f'AWS {credentials.region}'}"

    def wire(self, service: Service, io: StorageIO) -> None:
        name = notification_id(service, io)
        sqs = self._sqs_client(service, io)
        with mapped_errors(f"{io.storage_provider}:{io.path} (SQS queue {name})"):
            url, arn = _ensure_queue(sqs, name, io.bucket, _visibility_timeout(service, io))
            entry = queue_configuration(name, arn, io)
            put_queue_configuration(s3_client(self.context, service, io), io.bucket, entry)
        self._watch(_Queue(name=name, provider=io.storage_provider, url=url, client=sqs))

    def unwire(self, service: Service, io: StorageIO) -> None:
        """The bucket stops sending first, then the queue and what is still in it go."""
        name = notification_id(service, io)
        self._forget(name)
        with mapped_errors(f"{io.storage_provider}:{io.path} (SQS queue {name})"):
            remove_configuration(s3_client(self.context, service, io), io.bucket, name)
            _delete_queue(self._sqs_client(service, io), name)

    def start(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
            for queue in self._queues.values():
                self._spawn(queue)

    def stop(self) -> None:
        """Returns within STOP_GRACE_S, at once when no message is being handled. A poller inside a
        long poll is not waited for: it finishes the poll on its own and hands back what it received
        (see `_drain`). One handling messages gets the grace to finish, so the ledger is still open."""
        with self._lock:
            self._running = False
            queues = list(self._queues.values())
            for queue in queues:
                queue.stop.set()
        deadline = time.monotonic() + STOP_GRACE_S
        for queue in queues:
            if queue.thread is not None and queue.handling:
                queue.thread.join(max(0.0, deadline - time.monotonic()))

    # ---- the queues this process polls ----------------------------------------------------------

    def _watch(self, queue: _Queue) -> None:
        with self._lock:
            known = self._queues.get(queue.name)
            if known is not None:  # wired again (start-up, or an update): same queue, maybe new settings
                known.url, known.client, known.provider = queue.url, queue.client, queue.provider
                return
            self._queues[queue.name] = queue
            if self._running:
                self._spawn(queue)

    def _forget(self, name: str) -> None:
        with self._lock:
            queue = self._queues.pop(name, None)
        if queue is not None:
            queue.stop.set()

    def _spawn(self, queue: _Queue) -> None:
        """A fresh stop event per thread: a thread from before a stop() never sees a later start()."""
        queue.stop = threading.Event()
        queue.thread = threading.Thread(
            target=self._poll, args=(queue, queue.stop), name=f"sqs-{queue.name}", daemon=True
        )
        queue.thread.start()

    def _sqs_client(self, service: Service, io: StorageIO) -> Any:
        """One client per set of credentials, shared by its queues' pollers (boto3 clients are thread-safe)."""
        credentials = S3Credentials.model_validate(provider_settings(service, io))
        key = credentials.model_dump_json()
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = boto_client(
                    "sqs",
                    endpoint=credentials.endpoint,
                    access_key=credentials.access_key,
                    secret_key=credentials.secret_key,
                    region=credentials.region,
                    verify=credentials.verify,
                    read_timeout=WAIT_S + 10,  # a long poll is a 20 s read
                    max_pool_connections=100,  # each polling thread holds a connection
                )
                self._clients[key] = client
            return client

    # ---- polling --------------------------------------------------------------------------------

    def _poll(self, queue: _Queue, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                answer = queue.client.receive_message(
                    QueueUrl=queue.url,
                    WaitTimeSeconds=WAIT_S,
                    MaxNumberOfMessages=BATCH,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
            except (ClientError, BotoCoreError) as error:
                if stop.is_set():
                    return
                log.warning("receiving from SQS queue %s failed, again in %.0f s: %s", queue.name, backoff, error)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = 1.0
            queue.handling = True
            try:
                self._drain(queue, stop, answer.get("Messages", []))
            finally:
                queue.handling = False

    def _drain(self, queue: _Queue, stop: threading.Event, messages: list[dict[str, Any]]) -> None:
        for index, message in enumerate(messages):
            if stop.is_set():  # stopped during the long poll: give the rest back at once
                _release(queue, messages[index:])
                return
            self._handle(queue, message)

    def _handle(self, queue: _Queue, message: dict[str, Any]) -> None:
        events = message_events(message.get("Body", ""), queue.provider)
        if not events:
            log.debug("SQS queue %s: no object-created record (an s3:TestEvent?), deleted", queue.name)
        elif not self._claimed(events) and _receive_count(message) < UNCLAIMED_RECEIVES:
            # A service is wired before the platform indexes it; an object put in between must wait
            # for the index rather than be dropped. It comes back after the visibility timeout.
            return
        try:
            self.context.intake.accept_many(events)
        except Exception:  # whatever the ledger raised, the poller goes on and the message comes back
            log.exception("SQS queue %s: the ledger did not take a message; it will be delivered again", queue.name)
            return
        try:
            queue.client.delete_message(QueueUrl=queue.url, ReceiptHandle=message["ReceiptHandle"])
        except (ClientError, BotoCoreError) as error:  # delivered again, and counted as a duplicate
            log.warning("SQS queue %s: deleting a handled message failed: %s", queue.name, error)

    def _claimed(self, events: list[ObjectEvent]) -> bool:
        return any(self.context.intake.index.services_for(event.ref) for event in events)


def _ensure_queue(sqs: Any, name: str, bucket: str, visibility_s: int) -> tuple[str, str]:
    """The queue (created if missing) with the policy that lets the bucket send to it; (url, arn).

    The attributes are set on every call, so wiring again brings an existing queue up to date.
    """
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error_code(error) not in _MISSING_QUEUE:
            raise
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {
        "Policy": json.dumps(_queue_policy(arn, bucket)),
        "VisibilityTimeout": str(visibility_s),
        "MessageRetentionPeriod": str(RETENTION_S),
    }
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url, arn


def _queue_policy(queue_arn: str, bucket: str) -> dict[str, Any]:
    """S3 may send to the queue, only on behalf of this bucket (same partition as the queue: aws, aws-cn...)."""
    partition = queue_arn.split(":")[1]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "conveyor-s3-notifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:{partition}:s3:::{bucket}"}},
            }
        ],
    }


def _delete_queue(sqs: Any, name: str) -> None:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as error:
        if error_code(error) in _MISSING_QUEUE:
            return
        raise
    sqs.delete_queue(QueueUrl=url)


def _visibility_timeout(service: Service, io: StorageIO) -> int:
    """How long a received message stays hidden before SQS delivers it again (0 to 12 hours)."""
    value = provider_settings(service, io).get("sqs_visibility_timeout", DEFAULT_VISIBILITY_S)
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = -1
    if not 0 <= seconds <= 43200:
        raise StorageError(f"{io.storage_provider}: sqs_visibility_timeout {value!r} is not 0 to 43200 seconds")
    return seconds


def _receive_count(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def _release(queue: _Queue, messages: list[dict[str, Any]]) -> None:
    """Make received messages visible again now rather than after the visibility timeout."""
    entries = [
        {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for index, m in enumerate(messages)
    ]
    with suppress(ClientError, BotoCoreError):  # at worst they come back after the timeout
        queue.client.change_message_visibility_batch(QueueUrl=queue.url, Entries=entries)
