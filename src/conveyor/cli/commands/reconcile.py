"""`conveyor reconcile`: accept the files whose notification was lost, now."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.options import JsonOption

RECONCILE_HELP = """Look for files whose notification was lost (the platform was down, or the store
dropped it) and start their jobs now, instead of at the next automatic round
(`dispatch.reconcile_interval_s`). Files older than their service are left alone, as OSCAR would.

**Example**: conveyor reconcile
"""

ROUND_TIMEOUT_S = 600.0
"""Listing a store with hundreds of thousands of objects takes a while."""


def reconcile(
    ctx: typer.Context,
    changes: Annotated[
        bool, typer.Option("--changes", help="Only replay the store's change log since the last round (fast).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    with context(ctx).client(timeout_s=ROUND_TIMEOUT_S) as client:
        if not client.speaks_conveyor:
            raise CliError("this platform is not Conveyor: OSCAR has no reconciler", exit_code=2)
        report = client.expect_ok("POST", "/conveyor/v1/reconcile", params={"full": not changes}).json()
    if as_json:
        render.print_json(report)
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    rows = [
        (
            entry["service"],
            entry["listed"],
            entry["accepted"],
            entry["older_than_service"],
            entry["settling"],
            render.seconds(entry["seconds"]),
            "; ".join(entry["errors"]),
        )
        for entry in report["services"]
    ]
    columns = ["service", "files", "new jobs", "older than service", "too recent", "took", "problems"]
    render.table(None, columns, rows)
    render.out.print(
        f"{report['accepted']} lost file(s) accepted out of {report['listed']} listed "
        f"in {render.seconds(report['seconds'])}"
    )
    if report["settling"]:
        render.note(f"{report['settling']} file(s) too recent to tell from a notification on its way: next round")
    if report["errors"]:
        raise CliError(f"{report['errors']} input(s) could not be listed; the next round tries again")


def register(app: typer.Typer) -> None:
    app.command(help=RECONCILE_HELP)(reconcile)
