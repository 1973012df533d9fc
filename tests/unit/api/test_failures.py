"""What the API answers when the platform under it fails: a full disk is 503 with one line that says
so, never a 500 with a traceback; any other failure stays a 500 (and is logged)."""

from __future__ import annotations

import asyncio
import errno
import sqlite3

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from conveyor.api.app import create_app
from conveyor.settings import ApiSettings


def answer_when_failing_with(error: Exception) -> httpx.Response:
    """POST to a route that raises `error`, through the app's own exception handlers."""
    app: FastAPI = create_app(ApiSettings())

    def fail() -> None:
        raise error

    app.add_api_route("/boom", fail, methods=["POST"])

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://conveyor") as client:
            return await client.post("/boom")

    return asyncio.run(post())


def sqlite_full() -> OperationalError:
    cause = sqlite3.OperationalError("database or disk is full")
    cause.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    return OperationalError("INSERT INTO events ...", {}, cause)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/requests/job-1.body"), "[Errno 28] No space"),
        (sqlite_full(), "(sqlite3.OperationalError) database or disk is full"),
    ],
)
def test_a_full_disk_is_a_503_with_one_line(error: Exception, line: str) -> None:
    answer = answer_when_failing_with(error)

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "30"
    assert answer.text.startswith(f"the platform's disk is full: {line}")
    assert "\n" not in answer.text


@pytest.mark.parametrize("error", [OSError(errno.EACCES, "Permission denied"), OperationalError("SELECT", {}, None)])
def test_any_other_failure_stays_a_500(error: Exception) -> None:
    answer = answer_when_failing_with(error)
    assert (answer.status_code, answer.text) == (500, "Internal Server Error")


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [("GET", "/nosuch", 404, "Not Found"), ("DELETE", "/health", 405, "Method Not Allowed")],
)
def test_an_unknown_route_or_method_answers_plain_text_as_oscar_does(
    method: str, path: str, status: int, body: str
) -> None:
    app = create_app(ApiSettings())

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://conveyor") as client:
            return await client.request(method, path)

    answer = asyncio.run(ask())

    assert (answer.status_code, answer.text) == (status, body)
    assert answer.headers["content-type"].startswith("text/plain")
