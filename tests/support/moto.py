"""A moto server (S3, SQS, SNS... behind one endpoint) on a free loopback port, for tests of AWS paths.

moto keeps its state in the process, shared by every server started in it: the state is reset
when a server starts and when it stops, so tests do not see each other's buckets and queues.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@dataclass(frozen=True)
class MotoServer:
    endpoint: str
    access_key: str = "moto-key"
    secret_key: str = "moto-secret"
    region: str = REGION

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def provider_settings(self, **extra: Any) -> dict[str, Any]:
        """`storage_providers.<kind>.<id>` pointing at this server."""
        return {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            **extra,
        }

    def reset(self) -> None:
        httpx.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()


@contextmanager
def run_moto() -> Iterator[MotoServer]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket listens
    try:
        host, port = server.get_host_and_port()
        moto = MotoServer(endpoint=f"http://{host}:{port}")
        moto.reset()  # also proves it answers
        try:
            yield moto
        finally:
            moto.reset()
    finally:
        server.stop()
