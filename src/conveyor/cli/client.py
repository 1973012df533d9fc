"""The CLI's view of a running platform: its HTTP API and its S3 endpoint.

The CLI finds the platform the way a user expects: `--url` (or CONVEYOR_URL) when given, else
the `conveyor up` running on the data directory, which says where it listens in platform.json
and keeps the admin credentials in credentials.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import httpx

from conveyor.layout import DataLayout
from conveyor.storage.s3 import S3Credentials, S3Provider


class CliError(Exception):
    """An error to print as one line; exit code 2 for bad input, 1 for anything else."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ProblemsError(CliError):
    """The platform refused a definition; one line per problem."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems), exit_code=2)


@dataclass(frozen=True)
class Connection:
    url: str
    user: str
    password: str


def resolve_connection(layout: DataLayout, url: str | None, user: str | None, password: str | None) -> Connection:
    if url:
        stored = _read_json(layout.credentials) if layout.credentials.exists() else {}
        return Connection(
            url=url.rstrip("/"),
            user=user or stored.get("admin_user", "conveyor"),
            password=password or stored.get("admin_password", ""),
        )
    if not layout.platform_file.exists():
        raise CliError(
            f"Conveyor is not running on {layout.root}: start it with `conveyor up` "
            "(or point at another one with --url, or --data-dir)"
        )
    running = _read_json(layout.platform_file)
    if not _process_alive(int(running.get("pid", 0))):
        raise CliError(
            f"Conveyor is not running on {layout.root} (the platform that wrote {layout.platform_file.name} "
            "was killed): start it again with `conveyor up`"
        )
    stored = _read_json(layout.credentials)
    return Connection(
        url=running["api_url"],
        user=user or stored["admin_user"],
        password=password or stored["admin_password"],
    )


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _read_json(path: Any) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read {path}: {error}") from error


class ConveyorClient:
    def __init__(self, connection: Connection, timeout_s: float = 60.0) -> None:
        self.connection = connection
        self._http = httpx.Client(
            base_url=connection.url, auth=(connection.user, connection.password), timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConveyorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise CliError(
                f"cannot reach Conveyor at {self.connection.url} ({error}); is `conveyor up` running?"
            ) from error
        if response.status_code == 401:
            raise CliError(f"{self.connection.url} refused the credentials of user {self.connection.user!r}")
        return response

    def expect_ok(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            exit_code = 2 if response.status_code in (400, 404, 422) else 1
            raise CliError(response.text.strip() or f"{method} {path}: HTTP {response.status_code}", exit_code)
        return response

    # ---- services -------------------------------------------------------------------------

    def apply(self, services: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.request("POST", "/conveyor/v1/apply", json={"services": services})
        if response.status_code == 400 and "problems" in response.text:
            raise ProblemsError(response.json()["problems"])
        if response.status_code >= 400:
            raise CliError(response.text.strip(), 2 if response.status_code == 400 else 1)
        return response.json()

    def delete_service(self, name: str) -> bool:
        response = self.request("DELETE", f"/system/services/{name}")
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise CliError(response.text.strip())
        return True

    def services(self) -> list[dict[str, Any]]:
        return self.expect_ok("GET", "/conveyor/v1/services").json()

    # ---- jobs -----------------------------------------------------------------------------

    def jobs(
        self, service: str | None = None, states: list[str] | None = None, limit: int = 100, id_prefix: str = ""
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if id_prefix:
            params["id_prefix"] = id_prefix
        if service:
            params["service"] = service
        if states:
            params["status"] = states
        return self.expect_ok("GET", "/conveyor/v1/jobs", params=params).json()["jobs"]

    def log(self, service: str, job_id: str) -> str:
        return self.expect_ok("GET", f"/system/logs/{service}/{job_id}").text

    def status(self) -> dict[str, Any]:
        return self.expect_ok("GET", "/conveyor/v1/status").json()

    def run(self, service: str, body: bytes, timeout_s: float | None) -> httpx.Response:
        return self.request("POST", f"/run/{service}", content=body, timeout=timeout_s)

    # ---- storage --------------------------------------------------------------------------

    def storage(self) -> S3Provider:
        """The platform's own store, with the credentials its /system/config hands out."""
        provider = self.expect_ok("GET", "/system/config").json()["minio_provider"]
        return S3Provider(
            S3Credentials(
                endpoint=provider["endpoint"],
                access_key=provider["access_key"],
                secret_key=provider["secret_key"],
                region=provider.get("region") or "us-east-1",
                verify=bool(provider.get("verify", True)),
            )
        )
