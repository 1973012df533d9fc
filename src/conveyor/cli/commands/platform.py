"""`conveyor up`: the embedded platform in the foreground; `conveyor status`: whether it is ready."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.options import JsonOption
from conveyor.settings import Runtime, default_data_dir

if TYPE_CHECKING:
    from conveyor.platform.platform import Platform

UP_HELP = """Start the embedded platform in the foreground: API, dispatcher, local backend and an
embedded SeaweedFS S3 store, all on loopback, all data under --data-dir. Ctrl-C stops it; the
next start finds services, jobs and files where they were (jobs cut short run again).

**Example**: conveyor up --port 8080 --runtime process
"""


def up(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface the API listens on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default 8080; 0 picks a free one).")] = None,
    s3_port: Annotated[int | None, typer.Option(help="S3 port of the embedded store (default 8333).")] = None,
    runtime: Annotated[
        Runtime | None,
        typer.Option(help="container, process, or auto: containers when a Docker/podman engine answers."),
    ] = None,
    docker_host: Annotated[
        str | None, typer.Option(help="Docker Engine API URL (default DOCKER_HOST, then standard sockets).")
    ] = None,
) -> None:
    overrides = _overrides(host=host, port=port, s3_port=s3_port, runtime=runtime, docker_host=docker_host)
    from conveyor.platform.platform import Platform  # the whole server: loaded only to run it

    settings = context(ctx).settings(**overrides)
    platform = Platform(settings, on_notice=_print_notice)
    render.note(f"starting Conveyor in {settings.data_dir} ...")
    _on_stop_signals(_interrupt_start)  # unwinds start(), which stops what it had started
    try:
        platform.start()
        _print_endpoints(platform)
        _wait_for_stop_signal()
        render.note("stopping ...")
    finally:
        # A second Ctrl-C (or a SIGTERM) while stopping would leave the store running: stopping goes on.
        _on_stop_signals(lambda: render.note("still stopping ..."))
        platform.stop()
    render.note("stopped")


def _overrides(**given: object) -> dict[str, object]:
    sections = {"host": "api", "port": "api", "s3_port": "storage", "runtime": "local", "docker_host": "local"}
    overrides: dict[str, dict[str, object]] = {}
    for name, value in given.items():
        if value is not None:
            overrides.setdefault(sections[name], {})[name] = value
    return dict(overrides)


def _print_endpoints(platform: Platform) -> None:
    creds = platform.credentials
    render.table(
        "Conveyor is up",
        ["", ""],
        [
            ("API", platform.api_url),
            ("admin user", creds.admin_user),
            ("admin password", creds.admin_password),
            ("S3 endpoint", platform.s3_endpoint),
            ("S3 access key", creds.s3_access_key),
            ("S3 secret key", creds.s3_secret_key),
            ("jobs run as", platform.backends["local"].describe()),
            ("data", str(platform.layout.root)),
        ],
    )
    for warning in platform.warnings:
        render.warn(warning)
    if platform.adopted or platform.requeued:
        render.note(
            f"jobs the last run left running: {platform.adopted} picked up where they were, "
            f"{platform.requeued} queued again"
        )
    if platform.layout.root != default_data_dir().absolute():
        root = platform.layout.root
        render.note(f"other commands find this platform with --data-dir {root} (or: export CONVEYOR_DATA_DIR={root})")
    render.note("Ctrl-C to stop")


def _print_notice(level: str, message: str) -> None:
    """An outage or a recovery, as it happens, with the time: the operator sees both."""
    stamped = f"{time.strftime('%H:%M:%S')} {message}"
    if level == "note":
        render.note(stamped)
    else:
        render.warn(stamped)


def _wait_for_stop_signal() -> None:
    stop = threading.Event()
    _on_stop_signals(stop.set)
    while not stop.wait(3600):
        pass


def _on_stop_signals(action: Callable[[], None]) -> None:
    """What Ctrl-C (SIGINT) and SIGTERM do from now on."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: action())


def _interrupt_start() -> None:
    """A stop signal while starting: an exception in the main thread, where start() runs."""
    raise KeyboardInterrupt


STATUS_HELP = """Whether the platform is ready, and if not, why: its store (restarting after a crash?),
its ledger, its backends; which stores behind services do not answer (their jobs wait); what runs.
Exits 1 when the platform is not ready, so scripts can wait on it.

**Example**: conveyor status --json
"""


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    with context(ctx).client() as client:
        health = client.health()
        if health is None:
            raise CliError("this is an OSCAR cluster: it reports no readiness (try GET /system/status)")
        summary = client.expect_ok("GET", "/conveyor/v1/status").json()
    if as_json:
        render.print_json(health | {"jobs_running": summary.get("jobs_running"), "backends": summary.get("backends")})
    else:
        render.out.print("ready" if health["ready"] else "NOT ready")
        for part, why in health["problems"].items():
            render.warn(f"{part}: {why}")
        for store, why in health["waiting_for_stores"].items():
            render.warn(f"{store} does not answer; the jobs that use it wait: {why}")
        for kind, line in summary.get("backends", {}).items():
            render.out.print(f"backend {kind}: {line}")
        render.out.print(f"jobs running: {summary.get('jobs_running', 0)}")
    if not health["ready"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command(help=UP_HELP)(up)
    app.command(help=STATUS_HELP)(status)
