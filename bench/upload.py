"""Uploads from another process, as a user's S3 client would make them.

Putting files from threads of the process that runs the platform would make them share its GIL
and show up in its profile; a separate process competes only for the CPU, like a real client on
the same machine. The process is started and connected before any clock starts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import boto3
from botocore.client import Config

from bench.harness import CLIENT_ENV
from bench.workloads import payload

_client: Any = None


class Uploader:
    """A warm S3 client in a child process; `put_many` and `put_one` return when the PUTs are answered."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, threads: int = 8) -> None:
        self.threads = threads
        context = multiprocessing.get_context("spawn")  # the platform runs threads: never fork it
        self._pool = ProcessPoolExecutor(
            1, mp_context=context, initializer=_connect, initargs=(endpoint, access_key, secret_key, threads)
        )
        with _marked_as_client():
            self._pool.submit(time.time).result()  # started, boto3 imported, client built

    def put_many(self, bucket: str, keys: list[str]) -> float:
        """PUT file i of the workload as keys[i], `threads` at a time; returns time.time() of the first."""
        return self._pool.submit(_put_many, bucket, keys, self.threads).result()

    def put_one(self, bucket: str, key: str, index: int) -> float:
        """PUT one file; returns time.time() just before the request left."""
        return self._pool.submit(_put_one, bucket, key, index).result()

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _marked_as_client() -> Iterator[None]:
    """The spawned process inherits CLIENT_ENV, so the suite's memory sampling leaves it out."""
    name, value = CLIENT_ENV
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def _connect(endpoint: str, access_key: str, secret_key: str, threads: int) -> None:
    global _client
    _client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(max_pool_connections=threads * 2, s3={"addressing_style": "path"}),
    )


def _put_many(bucket: str, keys: list[str], threads: int) -> float:
    started = time.time()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda item: _client.put_object(Bucket=bucket, Key=item[1], Body=payload(item[0])), enumerate(keys)
            )
        )
    return started


def _put_one(bucket: str, key: str, index: int) -> float:
    started = time.time()
    _client.put_object(Bucket=bucket, Key=key, Body=payload(index))
    return started
