"""The HTTP API served by uvicorn in a thread of the platform process."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from conveyor.errors import PlatformError


class ApiServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self._socket = _bound_socket(host, port)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def local_url(self) -> str:
        """A URL that reaches the server from this machine, whatever interface it listens on."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise PlatformError(f"the API server did not start on {self.host}:{self.port}")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._socket.close()


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise PlatformError(
            f"cannot listen on {host}:{port} for the API ({error.strerror}): stop what uses it, "
            "or choose another port with --port (or CONVEYOR_API__PORT)"
        ) from error
    sock.set_inheritable(True)
    return sock
