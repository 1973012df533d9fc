"""`conveyor cancel`: stop queued or running jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.options import JsonOption

CANCEL_HELP = """Cancel jobs of a service: a queued job never starts, a running one is stopped (its
process or container killed, or `scancel` on Slurm). Cancelled jobs end `cancelled` and are not
retried; `conveyor retry` can run them again. Finished jobs are left as they are.

**Examples**: conveyor cancel detect-faces detect-faces-1a2b3c4d; conveyor cancel detect-faces --queued
"""


def cancel(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service.")],
    jobs: Annotated[
        list[str] | None, typer.Argument(help="Jobs to cancel (ids or the short ids `conveyor jobs` shows).")
    ] = None,
    queued: Annotated[bool, typer.Option("--queued", help="Every job of the service still queued.")] = False,
    as_json: JsonOption = False,
) -> None:
    if not jobs and not queued:
        raise CliError("name the jobs to cancel, or use --queued for every queued job", exit_code=2)
    with context(ctx).client() as client:
        if not client.speaks_conveyor:
            raise CliError(
                "this platform is not Conveyor: OSCAR cannot cancel a job (delete it with `oscar-cli`)", exit_code=2
            )
        answer = client.expect_ok(
            "POST", "/conveyor/v1/cancel", json={"service": service, "jobs": jobs or [], "queued": queued}
        ).json()
    if as_json:
        render.print_json(answer)
        return
    for job_id, what in answer["cancelled"].items():
        render.out.print(f"{job_id}: {what}")
    if not answer["cancelled"]:
        render.out.print("nothing to cancel")


def register(app: typer.Typer) -> None:
    app.command(help=CANCEL_HELP)(cancel)
