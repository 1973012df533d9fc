"""The one table from botocore's exceptions to the StorageError family, and the clients of S3, SNS and SQS.

Refusals are real `ClientError`s built from the response dicts botocore makes of a store's answer.
Building a client does no I/O, so each caller's client is built here and its configuration read back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.client import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from conveyor.clouds.aws import AUTH_CODES, NOT_FOUND_CODES, error_code, error_message, mapped_errors
from conveyor.errors import ObjectNotFound, StorageAuthError, StorageError, StorageUnavailable, StorageUnreachable
from conveyor.events.base import SourceContext
from conveyor.events.sns import _Store
from conveyor.events.sqs import WAIT_S, SqsSource
from conveyor.model.service import Service
from conveyor.storage.s3 import S3Credentials, S3Provider

WHERE = "inbox/photos/cat.jpg"
ENDPOINT = "http://127.0.0.1:9"


def refusal(code: str, status: int, message: str = "the store says no") -> ClientError:
    """A ClientError as botocore raises it for a store's error answer."""
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")


def mapped(error: Exception, where: str = WHERE) -> StorageError:
    with pytest.raises(StorageError) as caught, mapped_errors(where):
        raise error
    assert caught.value.__cause__ is error, "the botocore exception stays attached"
    return caught.value


# ---- refusals: the store answered ------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(NOT_FOUND_CODES))
def test_a_not_found_code_is_object_not_found_whatever_the_status(code: str) -> None:
    assert type(mapped(refusal(code, 400))) is ObjectNotFound


def test_a_404_is_object_not_found_whatever_the_code() -> None:
    assert type(mapped(refusal("SomethingElse", 404))) is ObjectNotFound


@pytest.mark.parametrize(
    "code",
    [
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "403",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",
    ],
)
def test_each_auth_code_is_an_auth_error_whatever_the_status(code: str) -> None:
    assert code in AUTH_CODES
    assert type(mapped(refusal(code, 400))) is StorageAuthError


def test_a_403_is_an_auth_error_whatever_the_code() -> None:
    assert type(mapped(refusal("Forbidden", 403))) is StorageAuthError


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_means_the_store_is_unavailable(status: int) -> None:
    assert type(mapped(refusal("InternalError", status))) is StorageUnavailable


@pytest.mark.parametrize(("code", "status"), [("InvalidArgument", 400), ("BucketAlreadyOwnedByYou", 409)])
def test_any_other_refusal_is_a_plain_storage_error(code: str, status: int) -> None:
    assert type(mapped(refusal(code, status))) is StorageError


def test_the_first_row_that_matches_wins() -> None:
    """A not-found code beats an auth status, an auth code beats a 5xx (the order S3 always had)."""
    assert type(mapped(refusal("NoSuchKey", 403))) is ObjectNotFound
    assert type(mapped(refusal("AccessDenied", 503))) is StorageAuthError


def test_a_refusal_reads_where_code_and_message() -> None:
    assert str(mapped(refusal("NoSuchKey", 404, "The specified key does not exist."))) == (
        f"{WHERE}: NoSuchKey The specified key does not exist."
    )
    assert str(mapped(refusal("404", 404, ""))) == f"{WHERE}: 404"


def test_a_refusal_without_code_or_message_reads_as_botocore_put_it() -> None:
    error = ClientError({"ResponseMetadata": {"HTTPStatusCode": 400}}, "GetObject")
    assert str(mapped(error)) == f"{WHERE}: {error}"


def test_sns_passes_what_it_was_doing_in_where() -> None:
    where = "s3.ceph:incoming/in: cannot add the bucket notification"
    assert str(mapped(refusal("NoSuchBucket", 404, ""), where)) == f"{where}: NoSuchBucket"


def test_code_and_message_of_a_refusal() -> None:
    error = refusal("InvalidArgument", 400, "A specified destination ARN does not exist")
    assert error_code(error) == "InvalidArgument"
    assert error_message(error) == "A specified destination ARN does not exist"
    bare = ClientError({}, "GetObject")
    assert (error_code(bare), error_message(bare)) == ("", "")


# ---- no answer, or botocore's own failures -----------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url=ENDPOINT),
        ConnectTimeoutError(endpoint_url=ENDPOINT),
        ConnectionClosedError(endpoint_url=ENDPOINT),
    ],
)
def test_a_store_that_cannot_be_reached_is_unreachable(error: BotoCoreError) -> None:
    """No connection at all: the store is down, and the jobs that need it wait for it."""
    raised = mapped(error)
    assert type(raised) is StorageUnreachable
    assert isinstance(raised, StorageUnavailable)
    assert str(raised) == f"{WHERE}: the store cannot be reached ({error})"


@pytest.mark.parametrize(
    "error",
    [NoCredentialsError(), ReadTimeoutError(endpoint_url=ENDPOINT), SSLError(endpoint_url=ENDPOINT, error="bad cert")],
)
def test_any_other_botocore_error_is_a_plain_storage_error(error: BotoCoreError) -> None:
    raised = mapped(error)
    assert type(raised) is StorageError
    assert str(raised) == f"{WHERE}: {error}"


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), mapped_errors(WHERE):
        raise KeyError("not botocore's")


# ---- each caller's client ------------------------------------------------------------------------------


def credentials() -> dict[str, Any]:
    return {"endpoint": ENDPOINT, "access_key": "AK", "secret_key": "SK", "region": "eu-west-1"}


def service() -> Service:
    return Service.model_validate(
        {
            "name": "thumbs",
            "image": "busybox",
            "script": "true",
            "input": [{"storage_provider": "s3.lab", "path": "inbox/in"}],
            "output": [{"storage_provider": "s3.lab", "path": "outbox/out"}],
            "storage_providers": {"s3": {"lab": credentials()}},
        }
    )


Configs = dict[str, list[dict[str, Any]]]


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Configs]:
    """What each boto3 client's Config held when it was given to boto3, by service name.

    A copy: botocore rewrites the retries of the Config it is given while building the client.
    """
    seen: Configs = {}
    build = boto3.session.Session.client

    def recording(session: boto3.session.Session, service_name: str, *args: Any, **kwargs: Any) -> Any:
        seen.setdefault(service_name, []).append(copy.deepcopy(vars(kwargs["config"])))
        return build(session, service_name, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", recording)
    yield seen


def test_the_s3_provider_client(configs: Configs) -> None:
    provider = S3Provider(S3Credentials.model_validate(credentials()), max_connections=64)
    try:
        config = provider.client.meta.config
        assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (5, 60, 64)
        assert (config.s3, config.signature_version) == ({"addressing_style": "path"}, "s3v4")
        assert config.retries == {"mode": "standard", "total_max_attempts": 4}
        assert provider.client.meta.region_name == "eu-west-1"
        assert provider.client.meta.endpoint_url == ENDPOINT
        today = Config(
            max_pool_connections=64,
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        )
        assert configs["s3"] == [vars(today)]
    finally:
        provider.close()


def test_the_sns_source_clients(configs: Configs) -> None:
    with _Store(service(), service().input[0], receiver="") as store:
        for client in (store.s3, store.sns):
            config = client.meta.config
            assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (5, 30, 10)
            assert config.s3 == {"addressing_style": "path"}
            assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    today = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    assert configs["s3"] + configs["sns"] == [vars(today)] * 2


def test_the_sqs_source_client(configs: Configs) -> None:
    source = SqsSource(SourceContext(intake=None, storage=None, receiver_url=str))  # type: ignore[arg-type]
    client = source._sqs_client(service(), service().input[0])
    try:
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (5, WAIT_S + 10, 100)
        assert config.s3 is None
        assert config.retries == {"mode": "standard", "total_max_attempts": 4}
        today = Config(
            connect_timeout=5,
            read_timeout=WAIT_S + 10,
            max_pool_connections=100,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        assert configs["sqs"] == [vars(today)]
    finally:
        client.close()
