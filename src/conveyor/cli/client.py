"""The CLI's view of a platform: its HTTP API and its S3 endpoint.

The CLI finds the platform the way a user expects: `--endpoint` (or CONVEYOR_CLIENT__ENDPOINT, or
`[client] endpoint` in the config file) when given, else the `conveyor up` running on the data
directory, which says where it listens in platform.json and keeps the admin credentials in
credentials.json.

It speaks Conveyor's richer routes (/conveyor/v1) when the platform has them, and only OSCAR's
when it does not, so the same commands drive a real OSCAR cluster.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from conveyor.cli import render
from conveyor.layout import DataLayout
from conveyor.settings import ClientSettings

if TYPE_CHECKING:
    from conveyor.storage.s3 import S3Provider

# OSCAR job statuses (pod phases) in Conveyor's states.
STATE_OF_OSCAR = {
    "Pending": "queued",
    "Suspended": "queued",
    "Running": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Unknown": "unknown",
}


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
    api: str = "auto"
    """auto (probe for Conveyor's routes), conveyor, or oscar (OSCAR's routes only)."""


def resolve_connection(layout: DataLayout, client: ClientSettings) -> Connection:
    if client.endpoint:
        stored = _read_json(layout.credentials) if layout.credentials.exists() else {}
        return Connection(
            url=client.endpoint.rstrip("/"),
            user=client.user or stored.get("admin_user", "conveyor"),
            password=client.password or stored.get("admin_password", ""),
            api=client.api,
        )
    if not layout.platform_file.exists() and not _wait_while_starting(layout):
        raise CliError(
            f"Conveyor is not running on {layout.root}: start it with `conveyor up` "
            "(or point at another platform with --endpoint, or use --data-dir)"
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
        user=client.user or stored["admin_user"],
        password=client.password or stored["admin_password"],
        api=client.api,
    )


STARTING_WAIT_S = 60.0
"""How long a command waits for a platform that is starting (its data dir locked, no platform.json yet)."""


def _wait_while_starting(layout: DataLayout, timeout_s: float = STARTING_WAIT_S) -> bool:
    """A `conveyor up` holds the data dir's lock from the start and writes platform.json once it
    serves: in between, wait for it (a script that started it in the background) instead of failing."""
    if not _starting(layout):
        return False
    render.note(f"Conveyor is starting on {layout.root}; waiting for it ...")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if layout.platform_file.exists():
            return True
        if not _starting(layout):
            return layout.platform_file.exists()
        time.sleep(0.1)
    return False


def _starting(layout: DataLayout) -> bool:
    """Whether a platform holds the data dir's lock (see Platform._take_data_dir_lock)."""
    try:
        with layout.lock_file.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read {path}: {error}") from error


class ConveyorClient:
    def __init__(self, connection: Connection, timeout_s: float = 60.0) -> None:
        self.connection = connection
        self._http = httpx.Client(
            base_url=connection.url,
            auth=(connection.user, connection.password),
            timeout=timeout_s,
            follow_redirects=True,
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
            raise CliError(f"cannot reach {self.connection.url} ({error}); is `conveyor up` running?") from error
        if response.status_code == 401:
            raise CliError(f"{self.connection.url} refused the credentials of user {self.connection.user!r}")
        return response

    def expect_ok(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            exit_code = 2 if response.status_code in (400, 404, 422) else 1
            raise CliError(response.text.strip() or f"{method} {path}: HTTP {response.status_code}", exit_code)
        return response

    def health(self) -> dict[str, Any] | None:
        """Readiness with its reasons (`GET /conveyor/v1/health`); None from an OSCAR cluster."""
        if not self.speaks_conveyor:
            return None
        found: dict[str, Any] = self.expect_ok("GET", "/conveyor/v1/health").json()
        return found

    def store_problem(self) -> str | None:
        """Why the platform's own store does not serve now, when the platform knows."""
        return self.problem("store")

    def problem(self, part: str) -> str | None:
        """What keeps one part of the platform (`store`, `disk`) from working now, when the platform knows."""
        try:
            health = self.health()
        except CliError:
            return None
        return (health or {}).get("problems", {}).get(part)

    @cached_property
    def speaks_conveyor(self) -> bool:
        """Whether the platform has Conveyor's own routes (a real OSCAR cluster does not)."""
        if self.connection.api != "auto":
            return self.connection.api == "conveyor"
        return self.request("GET", "/conveyor/v1/status").status_code != 404

    # ---- services -------------------------------------------------------------------------

    def apply(self, services: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.speaks_conveyor:
            return self._apply_one_by_one(services)
        response = self.request("POST", "/conveyor/v1/apply", json={"services": services})
        if response.status_code == 400 and "problems" in response.text:
            raise ProblemsError(response.json()["problems"])
        if response.status_code >= 400:
            raise CliError(response.text.strip(), 2 if response.status_code == 400 else 1)
        return response.json()

    def _apply_one_by_one(self, services: list[dict[str, Any]]) -> dict[str, Any]:
        """What oscar-cli does: PUT a service that exists, POST one that does not."""
        answer: dict[str, Any] = {"created": [], "updated": [], "warnings": []}
        for service in services:
            exists = self.request("GET", f"/system/services/{service['name']}").status_code == 200
            self.expect_ok("PUT" if exists else "POST", "/system/services", json=service)
            answer["updated" if exists else "created"].append(service["name"])
        return answer

    def delete_service(self, name: str) -> bool:
        response = self.request("DELETE", f"/system/services/{name}")
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise CliError(response.text.strip())
        return True

    def services(self) -> list[dict[str, Any]]:
        if self.speaks_conveyor:
            return self.expect_ok("GET", "/conveyor/v1/services").json()
        listing = self.expect_ok("GET", "/system/services").json() or []
        return [{"service": s, "jobs": _count_states(self._oscar_jobs(s["name"]))} for s in listing]

    def service(self, name: str) -> dict[str, Any]:
        response = self.request("GET", f"/system/services/{name}")
        if response.status_code == 404:
            raise CliError(f"no service named {name!r}", exit_code=2)
        if response.status_code >= 400:
            raise CliError(response.text.strip() or f"GET /system/services/{name}: HTTP {response.status_code}")
        return response.json()

    # ---- jobs -----------------------------------------------------------------------------

    def jobs(
        self, service: str | None = None, states: list[str] | None = None, limit: int = 100, id_prefix: str = ""
    ) -> list[dict[str, Any]]:
        if not self.speaks_conveyor:
            return self._jobs_from_oscar(service, states or [], limit, id_prefix)
        params: dict[str, Any] = {"limit": limit}
        if id_prefix:
            params["id_prefix"] = id_prefix
        if service:
            params["service"] = service
        if states:
            params["status"] = states
        return self.expect_ok("GET", "/conveyor/v1/jobs", params=params).json()["jobs"]

    def _jobs_from_oscar(self, service: str | None, states: list[str], limit: int, prefix: str) -> list[dict[str, Any]]:
        names = [service] if service else [s["name"] for s in self.expect_ok("GET", "/system/services").json() or []]
        jobs = [job for name in names for job in self._oscar_jobs(name)]
        jobs = [j for j in jobs if (not states or j["state"] in states) and j["job_id"].startswith(prefix)]
        jobs.sort(key=lambda j: j["created_at"] or "", reverse=True)
        return jobs[:limit]

    def _oscar_jobs(self, service: str) -> list[dict[str, Any]]:
        """Every job of a service through OSCAR's paginated /system/logs, in Conveyor's job shape."""
        jobs: list[dict[str, Any]] = []
        page = ""
        while True:
            answer = self.expect_ok("GET", f"/system/logs/{service}", params={"page": page} if page else {}).json()
            entries = answer.get("jobs", answer) if isinstance(answer, dict) else {}
            jobs += [
                _job_from_oscar(service, job_id, info) for job_id, info in entries.items() if isinstance(info, dict)
            ]
            page = answer.get("next_page", "") if isinstance(answer, dict) else ""
            if not page:
                return jobs

    def log(self, service: str, job_id: str) -> str:
        return self.expect_ok("GET", f"/system/logs/{service}/{job_id}").text

    def job_counts(self) -> dict[str, dict[str, int]]:
        """{service: {state: n}} for every service."""
        if self.speaks_conveyor:
            return self.expect_ok("GET", "/conveyor/v1/status").json()["jobs"]
        return {entry["service"]["name"]: entry["jobs"] for entry in self.services()}

    def recent_job_counts(self, since: str | None, within_s: float) -> tuple[str | None, dict[str, dict[str, int]]]:
        """(since, {service: {state: n}}) for jobs created since `since` (or `within_s` ago on the
        platform's clock) and those still pending; an OSCAR cluster cannot tell: all its jobs."""
        if not self.speaks_conveyor:
            return since, self.job_counts()
        params: dict[str, Any] = {"since": since} if since else {"within_s": within_s}
        answer = self.expect_ok("GET", "/conveyor/v1/jobs/counts", params=params).json()
        return answer["since"], answer["jobs"]

    def run(self, service: str, body: bytes, timeout_s: float | None) -> httpx.Response:
        """Synchronous invocation. OSCAR accepts only the service's token there, so it is fetched first."""
        headers = {}
        if not self.speaks_conveyor:
            headers["Authorization"] = f"Bearer {self.service(service)['token']}"
        return self.request("POST", f"/run/{service}", content=body, timeout=timeout_s, headers=headers)

    # ---- storage --------------------------------------------------------------------------

    def storage(self) -> S3Provider:
        """The platform's own store, with the credentials its /system/config hands out."""
        from conveyor.storage.s3 import S3Credentials, S3Provider  # boto3 is slow to import; few commands need it

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


def _job_from_oscar(service: str, job_id: str, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "service": service,
        "state": STATE_OF_OSCAR.get(info.get("status", ""), "unknown"),
        "attempt": 1,
        "created_at": _iso(info.get("creation_time")),
        "started_at": _iso(info.get("start_time")),
        "finished_at": _iso(info.get("finish_time")),
        "exit_code": None,
        "message": "",
        "trigger": None,
        "outputs": [],
    }


def _iso(value: str | None) -> str | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()


def _count_states(jobs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["state"]] = counts.get(job["state"], 0) + 1
    return counts
