"""AWS's APIs through boto3, as S3, SNS and SQS all speak them: building clients, reading their errors.

Every boto3 client Conveyor makes comes from `boto_client`: timeouts, retries and addressing are
chosen here, and each caller says only what it needs differently (S3 a connection per transfer
thread, SQS a read longer than a long poll). Every botocore exception goes through one table,
row by row, the first that matches winning:

    botocore raised                 its error code                          its status   Conveyor raises
    ClientError (the store refused) NoSuchKey NoSuchBucket NotFound 404     404          ObjectNotFound
                                    AccessDenied InvalidAccessKeyId 403     403          StorageAuthError
                                    SignatureDoesNotMatch InvalidToken
                                    ExpiredToken InvalidClientTokenId
                                                                            >= 500       StorageUnavailable
                                    anything else                                        StorageError
    no connection (refused, timed out, closed by a store going down)                     StorageUnreachable
    any other BotoCoreError (an SSL failure, a read timeout...)                          StorageError

The message names where it happened: `<where>: <code> <message>` for a refusal (botocore's own
text when it has neither), `<where>: the store cannot be reached (<reason>)` without an answer,
`<where>: <reason>` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.session
from botocore.client import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ProxyConnectionError,
)
from dateutil import parser as dateutil_parser

from conveyor.errors import ObjectNotFound, StorageAuthError, StorageError, StorageUnavailable, StorageUnreachable

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",  # SNS and SQS: an access key AWS does not know
        "403",
    }
)
"""`404` and `403` are the codes botocore gives a refusal without a body, such as HEAD's."""
NO_CONNECTION = (EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError, ConnectionClosedError)
"""A store that is down (or restarting). Not an SSL failure nor a read timeout: those repeat with a
store that answers, and a job must not wait for them forever."""


@dataclass(frozen=True)
class Refusal:
    """A row of the table: a ClientError whose code is one of `codes`, or whose HTTP status passes
    `status`, is raised as `raises`."""

    raises: type[StorageError]
    codes: frozenset[str]
    status: Callable[[int], bool]

    def matches(self, code: str, status: int) -> bool:
        return code in self.codes or self.status(status)


REFUSALS = (
    Refusal(ObjectNotFound, NOT_FOUND_CODES, lambda status: status == 404),
    Refusal(StorageAuthError, AUTH_CODES, lambda status: status == 403),
    Refusal(StorageUnavailable, frozenset(), lambda status: status >= 500),
)
"""In order, the first match wins; a refusal that none matches is a plain StorageError."""


# ---- clients ----------------------------------------------------------------------------------------


def boto_client(
    service_name: str,
    *,
    endpoint: str | None,
    access_key: str | None,
    secret_key: str | None,
    region: str,
    verify: bool,
    read_timeout: float,
    connect_timeout: float = 5,
    max_pool_connections: int | None = None,
    path_style: bool = False,
    signature_version: str | None = None,
    max_attempts: int = 3,
) -> Any:
    """A boto3 client of `service_name` ("s3", "sns", "sqs") at `endpoint` (None: AWS's, in `region`).

    Building it does no I/O. `max_pool_connections` and `signature_version` left at None are not
    given to botocore, which keeps its own defaults (10 connections, the service's signature).
    """
    return _fast_session().client(
        service_name,
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        verify=verify,
        config=_config(
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
            max_pool_connections=max_pool_connections,
            path_style=path_style,
            signature_version=signature_version,
            max_attempts=max_attempts,
        ),
    )


def _config(
    *,
    read_timeout: float,
    connect_timeout: float,
    max_pool_connections: int | None,
    path_style: bool,
    signature_version: str | None,
    max_attempts: int,
) -> Config:
    # Only what the caller chose goes in: botocore records every option it is given, even None, as
    # the caller's choice, and that choice wins over other configs merged with this one.
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout,
        "read_timeout": read_timeout,
        "retries": {"max_attempts": max_attempts, "mode": "standard"},
    }
    if max_pool_connections is not None:
        options["max_pool_connections"] = max_pool_connections
    if path_style:  # MinIO, SeaweedFS and RGW have no per-bucket host names
        options["s3"] = {"addressing_style": "path"}
    if signature_version is not None:
        options["signature_version"] = signature_version
    return Config(**options)


def _fast_session() -> boto3.session.Session:
    """A session whose XML responses parse timestamps with datetime.fromisoformat: botocore's
    default (dateutil) is most of the time spent listing 1,000-object pages."""
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
    return boto3.session.Session(botocore_session=core)


def _parse_timestamp(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return dateutil_parser.parse(value)  # RFC 1123 dates in HTTP headers (HEAD's LastModified)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---- errors -----------------------------------------------------------------------------------------


@contextmanager
def mapped_errors(where: str) -> Iterator[None]:
    """botocore's exceptions as the StorageError family, their messages starting with `where`."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise storage_error(error, where) from error


def storage_error(error: ClientError | BotoCoreError, where: str) -> StorageError:
    """The StorageError that the table makes of one botocore exception."""
    if isinstance(error, NO_CONNECTION):
        return StorageUnreachable(f"{where}: the store cannot be reached ({error})")
    if isinstance(error, BotoCoreError):
        return StorageError(f"{where}: {error}")
    code, status = error_code(error), error_status(error)
    reason = f"{code} {error_message(error)}".strip() or str(error)
    raises = next((refusal.raises for refusal in REFUSALS if refusal.matches(code, status)), StorageError)
    return raises(f"{where}: {reason}")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message") or "")


def error_status(error: ClientError) -> int:
    """The HTTP status of the refusal; 0 when botocore did not record one."""
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
