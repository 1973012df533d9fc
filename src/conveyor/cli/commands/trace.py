"""`conveyor trace`: an object's provenance as a tree."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.tree import Tree

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.commands.jobs import short_id
from conveyor.cli.options import JsonOption
from conveyor.model.kinds import DEFAULT_PROVIDER

TRACE_HELP = """Where an object came from and what it started: the jobs that wrote it, back to the
file a user put, and the jobs it triggered with what they wrote, down the chain. Every version
(etag) of the object the platform has seen is shown.

**Example**: conveyor trace photos/gray/cat.jpg
"""

STATE_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "dead": "red",
    "cancelled": "yellow",
    "queued": "cyan",
    "running": "cyan",
}
CUT_NOTE = {
    "seen": "shown above: the services loop through their buckets",
    "limit": "the trace stops here (64 jobs away)",
}


def trace(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="BUCKET/KEY", help="The object, as bucket/folder/file.")],
    as_json: JsonOption = False,
) -> None:
    with context(ctx).client() as client:
        if not client.speaks_conveyor:
            raise CliError("this platform speaks OSCAR's API only, and OSCAR keeps no provenance", exit_code=2)
        found = client.expect_ok("GET", "/conveyor/v1/trace", params={"path": path}).json()
    if as_json:
        render.print_json(found)
        return
    render.out.print(object_tree(found))


def object_tree(found: dict[str, Any]) -> Tree:
    """The traced object at the root, one branch per version: its writers up, its readers down."""
    tree = Tree(f"[bold]{_object(found['ref'])}[/bold]")
    for version in found["versions"]:
        branch = tree.add(_version(version))
        _add_writer(branch, version["produced_by"])
        for reader in version["consumed_by"]:
            _add_reader(branch, reader)
    return tree


def _add_writer(branch: Tree, writer: dict[str, Any] | None) -> None:
    """The chain of writers up to the upload, each step nested under the one it explains."""
    while writer is not None:
        node = branch.add(f"← written by {_job(writer['job'])}{_cut(writer['cut'])}")
        trigger = writer["trigger"]
        if writer["cut"]:
            return
        if trigger is None:
            node.add("← started by an HTTP request")
            return
        branch = node.add(f"← for {_object(trigger['ref'])}")
        writer = trigger["produced_by"]
    branch.add("← put by a user")


def _add_reader(branch: Tree, reader: dict[str, Any]) -> None:
    node = branch.add(f"→ read by {_job(reader['job'])}{_cut(reader['cut'])}")
    for output in reader["outputs"]:
        written = node.add(f"→ wrote {_object(output['ref'])}")
        for next_reader in output["consumed_by"]:
            _add_reader(written, next_reader)


def _version(version: dict[str, Any]) -> str:
    details = [f"{version['size']} B"] if version["size"] is not None else []
    if version["seen_at"]:
        details.append(f"seen {render.short_time(version['seen_at'])}")
    etag = escape(version["etag"]) or "(no etag)"
    return f"version {etag}" + (f" ({', '.join(details)})" if details else "")


def _job(job: dict[str, Any]) -> str:
    style = STATE_STYLE.get(job["state"], "white")
    return f"{short_id(job['job_id'], job['service'])} ({escape(job['service'])}, [{style}]{job['state']}[/{style}])"


def _object(ref: dict[str, Any]) -> str:
    where = f"{ref['bucket']}/{ref['key']}"
    if ref["provider"] != DEFAULT_PROVIDER:
        where = f"{ref['provider']}:{where}"
    return escape(where)


def _cut(cut: str | None) -> str:
    return f" [dim]({CUT_NOTE[cut]})[/dim]" if cut else ""


def register(app: typer.Typer) -> None:
    app.command(help=TRACE_HELP)(trace)
