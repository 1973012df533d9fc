"""A real WebDAV server for tests: WsgiDAV on cheroot, in a child process on a free loopback port.

It serves one directory with one user (HTTP Basic auth). A child process rather than a thread,
so the server's own memory and CPU never show in the measurements of the test process (the
large-object test reads this process's peak RSS), and a hung server can always be killed.

Usage::

    with run_webdav(tmp_path / "dav") as dav:
        provider = WebdavProvider(WebdavSettings.model_validate(dav.settings()))

`dav.url` is the server's root; the FDL settings it needs are `dav.settings()`. The server also
plays a dCache door under `/door/`: GET and PUT there are redirected (307) to the same path under
`/`, while every other method is served in place, as dCache's doors send reads and writes to pools.

Run as a script (`python tests/support/webdav.py ROOT`), it is the child: it prints `port N` once
listening, and exits when its parent dies.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
DOOR = "/door"
"""The path prefix where the server behaves like a redirecting dCache door."""
_PASSWORD_VARIABLE = "CONVEYOR_TEST_WEBDAV_PASSWORD"


class WebdavError(RuntimeError):
    """The server did not start or did not become ready; the message carries its log."""


@dataclass(frozen=True)
class WebdavServer:
    url: str
    """`http://127.0.0.1:<port>`, no trailing slash."""
    user: str
    password: str
    root: Path
    """The directory served: buckets are its subdirectories."""

    def settings(self, **extra: Any) -> dict[str, Any]:
        """`storage_providers.webdav.<id>` for this server."""
        return {"hostname": self.url, "login": self.user, "password": self.password, **extra}


@contextlib.contextmanager
def run_webdav(root: Path, *, user: str = "conveyor") -> Iterator[WebdavServer]:
    """Start the server on `root`, wait until it answers, yield it, and always stop it."""
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    with tempfile.TemporaryFile(mode="w+") as log:
        child = subprocess.Popen(
            # -P: the script's folder must not shadow the standard library (tests/support/platform.py)
            [sys.executable, "-P", str(Path(__file__).resolve()), str(root), user],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, _PASSWORD_VARIABLE: password},
            text=True,
        )
        try:
            port = _read_port(child, log)
            server = WebdavServer(url=f"http://127.0.0.1:{port}", user=user, password=password, root=root)
            _wait_ready(server, child, log)
            yield server
        finally:
            _stop(child)


def _read_port(child: subprocess.Popen[str], log: Any) -> int:
    """The child's first line, `port N`, read in a thread so a silent child cannot hang us."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(child.stdout.readline() if child.stdout else ""))
    reader.start()
    reader.join(READY_TIMEOUT_S)
    line = lines[0] if lines else ""
    if not line.startswith("port "):
        _stop(child)
        raise WebdavError(f"the WebDAV server did not start: {_tail(log)}")
    return int(line.split()[1])


def _wait_ready(server: WebdavServer, child: subprocess.Popen[str], log: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise WebdavError(f"the WebDAV server exited with {child.returncode}: {_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.request("OPTIONS", server.url + "/", auth=(server.user, server.password)).status_code < 500:
                return
        time.sleep(0.05)
    raise WebdavError(f"the WebDAV server did not answer within {READY_TIMEOUT_S} s: {_tail(log)}")


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout:
        child.stdout.close()


def _tail(log: Any, lines: int = 30) -> str:
    log.flush()
    log.seek(0)
    return "\n".join(log.read().splitlines()[-lines:]) or "(no output)"


# -- the child --------------------------------------------------------------------------------------


def _door(app: Any) -> Any:
    """A dCache-like door: GET and PUT under /door/ answer 307 to the same path under /."""

    def door_app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] in ("GET", "PUT") and path.startswith(DOOR + "/"):
            host = environ.get("HTTP_HOST", "")
            start_response("307 Temporary Redirect", [("Location", f"http://{host}{path[len(DOOR) :]}")])
            return [b""]
        return app(environ, start_response)

    return door_app


def _serve(root: Path, user: str, password: str) -> None:
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    share = {"root": str(root), "readonly": False}
    app = WsgiDAVApp(
        {
            "provider_mapping": {"/": share, DOOR: share},
            "simple_dc": {"user_mapping": {"*": {user: {"password": password}}}},
            "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
            "verbose": 1,
            "logging": {"enable_loggers": []},
            "dir_browser": {"enable": False},
            "lock_storage": False,
        }
    )
    server = wsgi.Server(("127.0.0.1", 0), _door(app), numthreads=16)
    server.prepare()
    print(f"port {server.bind_addr[1]}", flush=True)
    threading.Thread(target=_exit_with_parent, args=(server,), daemon=True).start()
    server.serve()


def _exit_with_parent(server: Any) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    server.stop()


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), sys.argv[2], os.environ[_PASSWORD_VARIABLE])
