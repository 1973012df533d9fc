"""MinIO → webhook: the bucket notifies a MinIO webhook target, which posts to Conveyor's S3 receiver.

    MinIO bucket ─ QueueConfiguration (arn:minio:sqs:<region>:<target>:webhook, prefix folder/)
                 ─▶ notify_webhook:<target> ─ POST ─▶ /conveyor/v1/events/s3/<provider>?token=…

MinIO sends bucket events only to targets defined in its server configuration, and only its admin
API defines them (`mc admin config set`, then a restart); S3's API, and so boto3, cannot. OSCAR
owns its MinIO and does this on every service creation (reference/oscar-api.md §3.1). A MinIO that
Conveyor does not own is set up once by its admin, for every service: one target, posting to this
provider's receiver. `wire` adds only the bucket's notification, and when MinIO does not know the
target, raises with the commands that set it up.

The receiver answers once the ledger has the events. With `queue_dir`, MinIO keeps the events it
could not deliver on disk and sends them again, so events survive Conveyor being down.

    storage_providers:
      minio:
        lab: {endpoint: "https://minio.lab", access_key: AK, secret_key: SK, events: minio,
              webhook_target: conveyor}                          # the target's id; "conveyor" by default
"""

from __future__ import annotations

from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from conveyor.clouds.aws import error_code, error_message, mapped_errors
from conveyor.errors import StorageError
from conveyor.events.base import EventSource
from conveyor.events.sqs import (
    notification_id,
    provider_settings,
    put_queue_configuration,
    queue_configuration,
    remove_configuration,
    s3_client,
)
from conveyor.model.service import Service, StorageIO
from conveyor.storage.s3 import S3Credentials

DEFAULT_TARGET = "conveyor"
QUEUE_DIR = "/opt/minio/events"
"""Where the suggested set-up has MinIO keep undelivered events (MinIO's documented example path)."""
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


class MinioSource(EventSource):
    kind = "minio"

    def describe(self, service: Service, io: StorageIO) -> str:
        receiver = self.context.receiver_url(io.storage_provider).partition("?")[0]
        return f"MinIO webhook target {webhook_target(service, io)} → {receiver}"

    def wire(self, service: Service, io: StorageIO) -> None:
        region = S3Credentials.model_validate(provider_settings(service, io)).region
        arn = f"arn:minio:sqs:{region}:{webhook_target(service, io)}:webhook"
        entry = queue_configuration(notification_id(service, io), arn, io)
        try:
            with mapped_errors(f"{io.storage_provider}:{io.path}"):
                put_queue_configuration(s3_client(self.context, service, io), io.bucket, entry)
        except StorageError as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and error_code(cause) == "InvalidArgument":
                raise StorageError(self._refusal(service, io, error_message(cause))) from cause
            raise

    def unwire(self, service: Service, io: StorageIO) -> None:
        with mapped_errors(f"{io.storage_provider}:{io.path}"):
            remove_configuration(s3_client(self.context, service, io), io.bucket, notification_id(service, io))

    def _refusal(self, service: Service, io: StorageIO, answer: str) -> str:
        """What to do about MinIO refusing the notification: set the target up, or fix the region."""
        where = f"{io.storage_provider}:{io.path}"
        if "region" in answer.lower():
            return (
                f"{where}: MinIO refused the notification: {answer} Set `region:` of {io.storage_provider} "
                "to MinIO's region (`mc admin config get ALIAS region`)."
            )
        return setup_instructions(service, io, self.context.receiver_url(io.storage_provider), answer)


def webhook_target(service: Service, io: StorageIO) -> str:
    return str(provider_settings(service, io).get("webhook_target") or DEFAULT_TARGET)


def setup_instructions(service: Service, io: StorageIO, receiver_url: str, answer: str) -> str:
    """The one-time set-up of MinIO's webhook target, as the commands a MinIO admin runs."""
    target = webhook_target(service, io)
    endpoint = provider_settings(service, io).get("endpoint") or "MINIO_URL"
    text = (
        f"{io.storage_provider}:{io.path}: MinIO has no webhook target {target!r} to send this input's events "
        f"to (MinIO answered: {answer}). A MinIO admin sets it up once for every service on this store, "
        "with the MinIO client:\n"
        f"  mc alias set ALIAS {endpoint} ACCESS_KEY SECRET_KEY\n"
        f'  mc admin config set ALIAS notify_webhook:{target} endpoint="{receiver_url}" '
        f'queue_dir="{QUEUE_DIR}/{target}"\n'
        "  mc admin service restart ALIAS\n"
        "then apply the service again."
    )
    if urlsplit(receiver_url).hostname in _LOOPBACK:
        text += " MinIO must reach that URL: unless MinIO runs on this host, set api.public_url first."
    return text
