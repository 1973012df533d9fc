"""`conveyor jobs`, `conveyor logs`, `conveyor wait`."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError, ConveyorClient
from conveyor.cli.options import JsonOption
from conveyor.model.job import TERMINAL_STATES, JobState, job_id_prefix

JOBS_HELP = """List jobs, newest first: status, times, exit code and the object that started them.

**Examples**: conveyor jobs detect-faces --status failed; conveyor jobs --json
"""

LOGS_HELP = """Print a job's log: the supervisor's lines and the script's output. JOB may be the
short id `conveyor jobs` shows (any unique prefix); without JOB, the latest job of the service.

**Example**: conveyor logs detect-faces
"""

WAIT_HELP = """Wait until jobs are done, with a progress bar: until nothing is queued or running and
(with --jobs N) at least N of the jobs it judges have finished. It judges the jobs created since
--since (default: a minute before it was called, so `put && wait` counts the jobs that already ran)
and every job still queued or running; older history is not judged. Exits 1 if any judged job did
not succeed, 3 on timeout.

**Example**: conveyor put *.jpg photos/in/ && conveyor wait grayify --jobs 20
"""

NOT_SUCCEEDED = (JobState.DEAD, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def jobs(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Argument(help="Only this service's jobs.")] = None,
    status: Annotated[
        list[JobState] | None, typer.Option("--status", "-s", help="Only jobs in this state (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many jobs at most.", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    with context(ctx).client() as client:
        listing = client.jobs(service, [s.value for s in status or []], limit)
        if service and not listing:
            require_service(client, service)
    if as_json:
        render.print_json(listing)
        return
    rows = [
        (
            short_id(job["job_id"], job["service"]),
            job["state"],
            job["attempt"],
            render.short_time(job["created_at"]),
            render.seconds(_duration(job)),
            "" if job["exit_code"] is None else job["exit_code"],
            _trigger(job),
            job["message"],
        )
        for job in listing
    ]
    render.table(None, ["job", "status", "try", "created", "took", "exit", "input", "message"], rows)


def short_id(job_id: str, service: str) -> str:
    """`<service>-<first 8 hex of the uuid>`: enough to tell jobs apart, and accepted by `logs`."""
    return job_id[: len(service) + 9]


def _duration(job: dict[str, Any]) -> float | None:
    if job["started_at"] and job["finished_at"]:
        return (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
    return None


def _trigger(job: dict[str, Any]) -> str:
    trigger = job.get("trigger")
    if not trigger:
        return "(http request)"
    return f"{trigger['ref']['bucket']}/{trigger['ref']['key']}"


def logs(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service.")],
    job: Annotated[str | None, typer.Argument(help="The job (default: the latest).")] = None,
) -> None:
    with context(ctx).client() as client:
        if job is None:
            latest = client.jobs(service, limit=1)
            if not latest:
                require_service(client, service)
                raise CliError(f"service {service!r} has no jobs yet", exit_code=2)
            job = latest[0]["job_id"]
            render.note(f"latest job: {job}")
        else:
            job = _full_job_id(client, service, job)
        print(client.log(service, job), end="")


def _full_job_id(client: ConveyorClient, service: str, given: str) -> str:
    """A job id, or a prefix of one such as the short ids `conveyor jobs` shows."""
    prefix = job_id_prefix(service, given)
    matches = client.jobs(service, limit=2, id_prefix=prefix)
    if not matches:
        require_service(client, service)
        raise CliError(f"no job of service {service!r} starts with {given!r}", exit_code=2)
    if len(matches) > 1 and matches[0]["job_id"] != prefix:
        raise CliError(f"{given!r} matches several jobs of {service!r}: give more of the id", exit_code=2)
    return matches[0]["job_id"]


def require_service(client: ConveyorClient, name: str) -> None:
    """A service with no jobs listed: an error naming those that exist when it is not one of them
    (jobs of a deleted service stay listed, so history is still reachable)."""
    names = sorted(entry["service"]["name"] for entry in client.services())
    if name not in names:
        known = ", ".join(names) if names else "none yet (conveyor apply deploys some)"
        raise CliError(f"there is no service {name!r}; services: {known}", exit_code=2)


def wait(
    ctx: typer.Context,
    services: Annotated[list[str] | None, typer.Argument(help="Services to wait for (default: all).")] = None,
    expected: Annotated[int, typer.Option("--jobs", help="Finished jobs to wait for, at least.", min=0)] = 0,
    since: Annotated[
        str | None,
        typer.Option(help="Judge jobs created since this ISO time, or this long ago (90s, 10m, 2h). Default: 1m."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    as_json: JsonOption = False,
) -> None:
    moment, within_s = _since(since)
    with context(ctx).client() as client:
        for name in services or []:
            require_service(client, name)
        counts = wait_for_jobs(
            client, services or [], expected, timeout, since=moment, within_s=within_s, quiet=as_json
        )
    if as_json:
        render.print_json(counts)
    if counts.get("timed_out_waiting"):
        raise CliError(f"gave up after {timeout:g} s: {_summary(counts)}", exit_code=3)
    if not_ok := sum(counts.get(state.value, 0) for state in NOT_SUCCEEDED):
        worst = next(state.value for state in NOT_SUCCEEDED if counts.get(state.value))
        raise CliError(
            f"{not_ok} of {_judged(counts)} job(s) did not succeed: {_summary(counts)}; "
            f"see conveyor jobs --status {worst}"
        )
    if not as_json:
        render.out.print(f"done: {_summary(counts)}")


def _since(given: str | None) -> tuple[str | None, float]:
    """--since as (an ISO time, None) or (None, seconds ago); the platform's clock applies the latter."""
    if given is None:
        return None, 60.0
    if match := _DURATION.fullmatch(given.strip()):
        return None, float(match.group(1)) * _SECONDS[match.group(2)]
    try:
        return datetime.fromisoformat(given).astimezone(UTC).isoformat(), 0.0  # a time without zone is local
    except ValueError:
        example = "an ISO time (2026-12-02T10:00) or a duration (90s, 10m, 2h)"
        raise CliError(f"--since {given!r}: give {example}", exit_code=2) from None


def _judged(counts: dict[str, int]) -> int:
    return sum(n for state, n in counts.items() if state != "timed_out_waiting")


def _summary(counts: dict[str, int]) -> str:
    """Every state with jobs, the ones that did not succeed first: the numbers add up to the total."""
    order = [s.value for s in NOT_SUCCEEDED] + [s.value for s in JobState if s not in NOT_SUCCEEDED]
    parts = [f"{counts[state]} {state}" for state in order if counts.get(state)]
    return ", ".join(parts) or "no jobs"


def wait_for_jobs(
    client: ConveyorClient,
    services: list[str],
    expected: int,
    timeout_s: float,
    *,
    since: str | None = None,
    within_s: float = 60.0,
    quiet: bool = False,
    settled_s: float | None = None,
) -> dict[str, int]:
    """Poll the platform until the judged jobs are done; returns their counts by state.

    With `settled_s`, also return once a judged job did not succeed and nothing was queued or running for
    that long (fewer jobs than expected will come: e.g. the first step of a workflow failed)."""
    deadline = time.monotonic() + timeout_s
    idle_since: float | None = None
    with render.progress(transient=quiet) as bar:
        task = bar.add_task("jobs", total=expected or None, visible=not quiet)
        while True:
            since, by_service = client.recent_job_counts(since, within_s)  # the same moment from then on
            counts = _counts(by_service, services)
            finished = sum(n for state, n in counts.items() if state in {s.value for s in TERMINAL_STATES})
            pending = counts.get("queued", 0) + counts.get("running", 0)
            bar.update(task, completed=finished, total=max(expected, finished + pending) or None)
            if finished >= expected and pending == 0:
                return counts
            unsuccessful = finished - counts.get("succeeded", 0)
            idle_since = (idle_since or time.monotonic()) if pending == 0 and unsuccessful else None
            if settled_s is not None and idle_since is not None and time.monotonic() - idle_since >= settled_s:
                return counts
            if time.monotonic() > deadline:
                return counts | {"timed_out_waiting": 1}
            time.sleep(0.2)


def _counts(by_service: dict[str, dict[str, int]], services: list[str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for name, states in by_service.items():
        if services and name not in services:
            continue
        for state, number in states.items():
            totals[state] = totals.get(state, 0) + number
    return totals


def register(app: typer.Typer) -> None:
    app.command(help=JOBS_HELP)(jobs)
    app.command(help=LOGS_HELP)(logs)
    app.command(help=WAIT_HELP)(wait)
