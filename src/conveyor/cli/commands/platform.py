"""`conveyor up`: the embedded platform in the foreground."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.settings import Runtime

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
    platform = Platform(settings)
    render.note(f"starting Conveyor in {settings.data_dir} ...")
    platform.start()
    try:
        _print_endpoints(platform)
        _wait_for_stop_signal()
        render.note("stopping ...")
    finally:
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
    render.note("Ctrl-C to stop")


def _wait_for_stop_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def register(app: typer.Typer) -> None:
    app.command(help=UP_HELP)(up)
