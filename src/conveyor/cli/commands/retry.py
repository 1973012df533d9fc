"""`conveyor retry`: replay dead letters, or any finished job, as a new attempt."""

from __future__ import annotations

from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.options import JsonOption

RETRY_HELP = """Run finished jobs again as a new attempt: the named jobs (their ids, or the short ids
`conveyor jobs` shows), every dead job of the service with --dead, every failed or timed-out one
with --failed. Each attempt keeps its log. Says which finished jobs were left, and how to retry them.

**Examples**: conveyor retry detect-faces --dead --failed; conveyor retry detect-faces 1a2b3c4d
"""


def retry(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service.")],
    jobs: Annotated[list[str] | None, typer.Argument(help="Jobs to run again.")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead job of the service.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed or timed-out job of the service.")] = False,
    as_json: JsonOption = False,
) -> None:
    if not jobs and not dead and not failed:
        raise CliError("name the jobs to retry, or use --dead and/or --failed", exit_code=2)
    with context(ctx).client() as client:
        if not client.speaks_conveyor:
            raise CliError("this platform is not Conveyor: OSCAR has no retries", exit_code=2)
        answer = client.expect_ok(
            "POST",
            "/conveyor/v1/retry",
            json={"service": service, "jobs": jobs or [], "dead": dead, "failed": failed},
        ).json()
    if as_json:
        render.print_json(answer)
        return
    render.out.print(f"queued again: {len(answer['replayed'])} job(s)")
    for job_id in answer["replayed"]:
        render.out.print(f"  {job_id}")
    for why in answer.get("not_retried", {}).values():
        render.note(f"not retried: {why}")


def register(app: typer.Typer) -> None:
    app.command(help=RETRY_HELP)(retry)
