"""SNS push: the store posts S3-style records to Conveyor through a topic (Ceph RGW, AWS SNS).

For an input `s3.<id>:bucket/folder` whose provider says `events: sns`, `wire` makes one topic
per service and input and a bucket notification that sends `s3:ObjectCreated:*` under `folder/`
to it:

- Ceph RGW (any endpoint that is not AWS): the topic carries the receiver's URL as its
  `push-endpoint`, and RGW posts the raw records there (about 10 ms after the PUT, keys not
  URL-encoded). RGW departs from AWS in three ways this module relies on, all seen on 16.2.15:
  PutBucketNotificationConfiguration *adds* configurations (one with the same Id is replaced),
  so only Conveyor's is sent; an empty configuration is refused (MalformedXML), so one is removed
  with RGW's own `DELETE /bucket?notification=<id>`; and a configuration keeps a copy of its
  topic's endpoint, so a changed receiver URL needs the configuration put again (wire does).
- AWS (no endpoint, or an amazonaws.com one): the topic gets an HTTP(S) subscription to the
  receiver, which confirms it (api/routes/events.py), and a policy that lets S3 publish.
  PutBucketNotificationConfiguration replaces everything there, so the configuration is read,
  merged and written back. Tested against moto only, not against AWS itself.

The topic's non-persistent delivery makes RGW wait for Conveyor's answer before it answers the
PUT, and drops the event if Conveyor is down: the reconciler finds those objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from conveyor.clouds.aws import boto_client, error_code, mapped_errors
from conveyor.errors import StorageError, StorageUnavailable
from conveyor.events.base import EventSource
from conveyor.model.kinds import INPUT_KINDS
from conveyor.model.service import Service, StorageIO
from conveyor.storage.s3 import S3Credentials

CREATED_EVENTS = ["s3:ObjectCreated:*"]
_TOPIC_NAME_MAX = 256
"""SNS topic names: up to 256 letters, digits, '-' and '_' (AWS and RGW alike)."""
_CONFIG_KINDS = ("TopicConfigurations", "QueueConfigurations", "LambdaFunctionConfigurations")


def topic_name(service: Service, io: StorageIO) -> str:
    """Stable per service and input, so that wiring again finds the same topic and configuration."""
    digest = hashlib.sha256(f"{io.storage_provider}:{io.path}".encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9_-]", "-", f"conveyor-{service.name}")
    return f"{name[: _TOPIC_NAME_MAX - 11]}-{digest}"


def is_aws(endpoint: str | None) -> bool:
    host = (urlsplit(endpoint).hostname or "") if endpoint else "amazonaws.com"
    return host == "amazonaws.com" or host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


class SnsSource(EventSource):
    kind = "sns"

    def describe(self, service: Service, io: StorageIO) -> str:
        creds = _credentials(service, io)
        endpoint = creds.endpoint or f"https://sns.{creds.region}.amazonaws.com"
        return f"SNS push from {endpoint} (topic {topic_name(service, io)})"

    def wire(self, service: Service, io: StorageIO) -> None:
        with _Store(service, io, self.context.receiver_url(io.storage_provider)) as store:
            with store.errors("cannot create the notification topic"):
                arn = store.ensure_topic()
            with store.errors("cannot add the bucket notification"):
                try:
                    store.add_configuration(arn)
                except (ClientError, BotoCoreError, httpx.HTTPError):
                    store.discard_unused_topic()
                    raise

    def unwire(self, service: Service, io: StorageIO) -> None:
        # The configuration first: on RGW it holds its own copy of the topic, which would go on
        # posting after the topic itself was deleted.
        with _Store(service, io, receiver="") as store:
            with store.errors("cannot remove the bucket notification"):
                store.remove_configuration()
            with store.errors("cannot delete the notification topic"):
                store.delete_topic()


def _credentials(service: Service, io: StorageIO) -> S3Credentials:
    settings = service.provider_settings(io.storage_provider)
    if settings is None:
        raise StorageError(f"storage provider {io.storage_provider!r} is not in the service's storage_providers")
    if io.kind not in INPUT_KINDS:
        raise StorageError(f"{io.storage_provider}: events: sns needs an S3 store, not {io.kind!r}")
    return S3Credentials.model_validate(settings)


class _Store:
    """The S3 and SNS APIs of one input's store, for one wire or unwire (both are rare)."""

    def __init__(self, service: Service, io: StorageIO, receiver: str) -> None:
        self.io = io
        self.creds = _credentials(service, io)
        self.name = topic_name(service, io)
        self.receiver = receiver
        self.aws = is_aws(self.creds.endpoint)
        self.s3 = self._client("s3")
        self.sns = self._client("sns")
        if not self.aws:
            self.sns.meta.events.register("before-parse.sns.*", _rgw_sns_error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.s3.close()
        self.sns.close()

    def _client(self, service_name: str) -> Any:
        creds = self.creds
        return boto_client(
            service_name,
            endpoint=creds.endpoint,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            region=creds.region,
            verify=creds.verify,
            read_timeout=30,
            path_style=True,
        )

    # ---- the topic ----------------------------------------------------------------------

    def ensure_topic(self) -> str:
        """Create the topic, or update it: CreateTopic with the same name returns the same ARN."""
        if not self.aws:
            # RGW keeps the push endpoint as a topic attribute; a second CreateTopic replaces it.
            answer = self.sns.create_topic(Name=self.name, Attributes={"push-endpoint": self.receiver})
            return str(answer["TopicArn"])
        arn = str(self.sns.create_topic(Name=self.name)["TopicArn"])
        self.sns.set_topic_attributes(TopicArn=arn, AttributeName="Policy", AttributeValue=self._publish_policy(arn))
        self._subscribe_receiver(arn)
        return arn

    def _publish_policy(self, arn: str) -> str:
        """AWS refuses a bucket notification to a topic that S3 may not publish to."""
        statement = {
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "SNS:Publish",
            "Resource": arn,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{self.io.bucket}"}},
        }
        return json.dumps({"Version": "2012-10-17", "Statement": [statement]})

    def _subscribe_receiver(self, arn: str) -> None:
        """Subscribe the receiver (same endpoint: AWS returns the same subscription) and drop the
        subscriptions of an earlier receiver URL, which would only fail or reach a stale platform."""
        protocol = urlsplit(self.receiver).scheme
        self.sns.subscribe(TopicArn=arn, Protocol=protocol, Endpoint=self.receiver, ReturnSubscriptionArn=True)
        pages = self.sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn)
        for subscription in (s for page in pages for s in page.get("Subscriptions", [])):
            stale = subscription.get("Endpoint") != self.receiver
            if stale and str(subscription.get("SubscriptionArn", "")).startswith("arn:"):  # not PendingConfirmation
                self.sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])

    def delete_topic(self) -> None:
        """Deleting a topic that is not there succeeds (AWS and RGW), so unwire can run twice."""
        arn = self._topic_arn()
        if arn is not None:
            self.sns.delete_topic(TopicArn=arn)

    def discard_unused_topic(self) -> None:
        """After a refused configuration: a topic that no configuration uses is clutter on the store.
        Best effort: the refusal is what the caller must hear about."""
        with contextlib.suppress(ClientError, BotoCoreError):
            try:
                used = self.name in _ids(self._current())
            except ClientError:  # no bucket, most likely
                used = False
            if not used:
                self.delete_topic()

    def _topic_arn(self) -> str | None:
        for page in self.sns.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                if str(topic["TopicArn"]).rsplit(":", 1)[-1] == self.name:
                    return str(topic["TopicArn"])
        return None

    # ---- the bucket's notification configuration ----------------------------------------

    def _configuration(self, arn: str) -> dict[str, Any]:
        prefix = f"{self.io.folder}/" if self.io.folder else ""
        configuration: dict[str, Any] = {"Id": self.name, "TopicArn": arn, "Events": CREATED_EVENTS}
        if prefix:
            configuration["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
        return configuration

    def _current(self) -> dict[str, Any]:
        """The bucket's configuration as PutBucketNotificationConfiguration takes it."""
        answer = self.s3.get_bucket_notification_configuration(Bucket=self.io.bucket)
        answer.pop("ResponseMetadata", None)
        return answer

    def _others(self, current: dict[str, Any]) -> dict[str, Any]:
        """Every configuration except Conveyor's for this input, EventBridge's switch included."""
        kept = {key: value for key, value in current.items() if key not in _CONFIG_KINDS}
        for kind in _CONFIG_KINDS:
            rest = [c for c in current.get(kind, []) if c.get("Id") != self.name]
            if rest:
                kept[kind] = rest
        return kept

    def add_configuration(self, arn: str) -> None:
        ours = self._configuration(arn)
        current = self._current()
        if self.aws:  # replaces everything: the others must be in the request
            merged = self._others(current)
            merged["TopicConfigurations"] = [*merged.get("TopicConfigurations", []), ours]
            self._put(merged)
            return
        # RGW adds. Sending the others again would fail on one whose topic was deleted (NoSuchKey)
        # and drop the filters boto3 does not model (RGW's S3Metadata, S3Tags): send only ours.
        self._put({"TopicConfigurations": [ours]})
        self._check_others_kept(current, arn)

    def _check_others_kept(self, before: dict[str, Any], arn: str) -> None:
        """A store that replaced instead of adding would have dropped the others: restore them."""
        after = self._current()
        if _ids(self._others(before)) <= _ids(after):
            return
        merged = self._others(before)
        merged["TopicConfigurations"] = [*merged.get("TopicConfigurations", []), self._configuration(arn)]
        self._put(merged)

    def _put(self, configuration: dict[str, Any]) -> None:
        self.s3.put_bucket_notification_configuration(Bucket=self.io.bucket, NotificationConfiguration=configuration)

    def remove_configuration(self) -> None:
        try:
            current = self._current()
        except ClientError as error:
            if error_code(error) == "NoSuchBucket":  # gone with its configurations
                return
            raise
        if self.name not in _ids(current):
            return
        if self.aws:
            self._put(self._others(current))  # an empty configuration is how AWS removes the last one
        else:
            self._delete_rgw_notification()

    def _delete_rgw_notification(self) -> None:
        """RGW's own `DELETE /<bucket>?notification=<id>`: removes that configuration only.

        boto3 has no such call, so the request is signed here as boto3 would sign any S3 call.
        """
        url = f"{self.creds.endpoint or ''}".rstrip("/") + f"/{quote(self.io.bucket)}?notification={quote(self.name)}"
        request = AWSRequest(method="DELETE", url=url)
        signer_credentials = Credentials(self.creds.access_key or "", self.creds.secret_key or "")
        S3SigV4Auth(signer_credentials, "s3", self.creds.region).add_auth(request)
        answer = httpx.request("DELETE", url, headers=dict(request.headers), verify=self.creds.verify, timeout=30)
        if answer.status_code >= 300:
            raise ClientError(_error_response(answer), "DeleteBucketNotification")

    # ---- errors ---------------------------------------------------------------------------

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """The store's refusals as StorageError naming the provider, the path, what failed and the store's reason."""
        where = f"{self.io.storage_provider}:{self.io.path}: {doing}"
        with mapped_errors(where):
            try:
                yield
            except httpx.HTTPError as error:  # RGW's DELETE of a notification, the one call made without boto3
                raise StorageUnavailable(f"{where}: {error}") from error


def _rgw_sns_error(response_dict: dict[str, Any], **_: Any) -> None:
    """RGW answers SNS calls with S3's `<Error>` body, where botocore expects SNS's `<ErrorResponse>`
    around it; without the wrapper every refusal reads "Unknown" instead of its code."""
    body = response_dict.get("body") or b""
    if response_dict.get("status_code", 200) >= 300 and b"<Error>" in body and b"<ErrorResponse" not in body:
        inner = re.sub(rb"^\s*<\?xml[^>]*\?>", b"", body)
        response_dict["body"] = b"<ErrorResponse>" + inner + b"</ErrorResponse>"


def _ids(configuration: dict[str, Any]) -> set[str]:
    return {str(c.get("Id")) for kind in _CONFIG_KINDS for c in configuration.get(kind, [])}


def _error_response(answer: httpx.Response) -> dict[str, Any]:
    """An RGW error body (`<Error><Code>NoSuchBucket</Code>...`) in the shape ClientError takes."""
    code = re.search(r"<Code>([^<]*)</Code>", answer.text)
    message = re.search(r"<Message>([^<]*)</Message>", answer.text)
    return {
        "Error": {
            "Code": code.group(1) if code else str(answer.status_code),
            "Message": message.group(1) if message else "",
        },
        "ResponseMetadata": {"HTTPStatusCode": answer.status_code},
    }
