"""`conveyor apply`, `conveyor delete`, `conveyor services`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError, ConveyorClient, ProblemsError, resolve_connection
from conveyor.cli.options import JsonOption
from conveyor.errors import ConveyorError, FDLError
from conveyor.fdl import Clusters, load_fdl
from conveyor.layout import DataLayout

APPLY_HELP = """Deploy every service of an OSCAR FDL file; re-applying updates them in place.

Buckets and folders for inputs and outputs are created. The file is checked first: every
problem is listed with its line, and nothing is deployed unless all services are valid.

**Example**: conveyor apply examples/video-process/workflow.yaml
"""

DELETE_HELP = """Remove services, named or listed in an FDL file. Their buckets, files and job
history are kept.

**Example**: conveyor delete examples/video-process/workflow.yaml
"""

SERVICES_HELP = """List deployed services with their inputs, outputs and job counts.

**Example**: conveyor services --json
"""


def apply(
    ctx: typer.Context,
    fdl: Annotated[Path, typer.Argument(help="OSCAR FDL file (functions: oscar: ...).", show_default=False)],
    cluster: Annotated[
        str | None,
        typer.Option(
            help="This platform's cluster id, for an FDL that deploys to several (default: [client] cluster_id)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    try:
        workflow = load_fdl(fdl, _clusters(ctx, cluster))
        for warning in workflow.warnings:
            render.warn(warning)
        payload = [service.model_dump(mode="json") for service in workflow.services]
        with context(ctx).client() as client:
            answer = client.apply(payload)
    except FDLError as error:
        problems = [{"field": p.location or p.field, "message": _problem_text(p)} for p in error.problems]
        _refused(ProblemsError(problems), as_json)
    except ProblemsError as error:
        _refused(error, as_json)
    if as_json:
        render.print_json(answer | {"fdl_warnings": workflow.warnings})
        return
    for warning in answer["warnings"]:
        render.warn(warning)
    for name in answer["created"]:
        render.out.print(f"created {name}")
    for name in answer["updated"]:
        render.out.print(f"updated {name}")


def _clusters(ctx: typer.Context, this: str | None) -> Clusters:
    """This platform's cluster id, and the other clusters of the config file, whose stores an FDL's
    `minio.<cluster-id>` names (their MinIO settings come from their /system/config, as oscar-cli does)."""
    settings = context(ctx).settings()

    def store_of(cluster_id: str) -> dict[str, Any] | None:
        other = settings.clusters.get(cluster_id)
        if other is None or not other.endpoint:
            return None
        connection = resolve_connection(DataLayout(settings.data_dir), other)
        try:
            with ConveyorClient(connection, timeout_s=20) as client:
                return dict(client.expect_ok("GET", "/system/config").json()["minio_provider"])
        except (CliError, KeyError, ValueError) as error:
            raise ConveyorError(f"{other.endpoint}/system/config: {error}") from None

    return Clusters(this=this or settings.client.cluster_id, store_of=store_of)


def _refused(error: ProblemsError, as_json: bool) -> NoReturn:
    """Nothing was deployed: with --json the problems go to standard output too, for scripts."""
    if as_json:
        render.print_json({"created": [], "updated": [], "problems": error.problems})
    raise error from None


def _problem_text(problem: Any) -> str:
    return f"{problem.field}: {problem.message}" if problem.location else problem.message


def delete(
    ctx: typer.Context,
    targets: Annotated[
        list[str], typer.Argument(help="Service names, or FDL files whose services to remove.", show_default=False)
    ],
    as_json: JsonOption = False,
) -> None:
    names = _service_names(targets)
    deleted, missing = [], []
    with context(ctx).client() as client:
        for name in names:
            (deleted if client.delete_service(name) else missing).append(name)
    if as_json:
        render.print_json({"deleted": deleted, "missing": missing})
    else:
        for name in deleted:
            render.out.print(f"deleted {name} (its buckets and files are kept)")
    if missing:
        raise CliError(f"no service named {', '.join(repr(m) for m in missing)}", exit_code=2)


def _service_names(targets: list[str]) -> list[str]:
    names: list[str] = []
    for target in targets:
        path = Path(target)
        if path.is_file():
            try:
                names += [service.name for service in load_fdl(path).services]
            except FDLError as error:
                raise CliError(f"{target} is not a valid FDL file: {error}", exit_code=2) from None
        else:
            names.append(target)
    return names


def services(ctx: typer.Context, as_json: JsonOption = False) -> None:
    with context(ctx).client() as client:
        listing = client.services()
    if as_json:
        render.print_json(listing)
        return
    rows = []
    for entry in listing:
        service, jobs = entry["service"], entry["jobs"]
        sources = entry.get("event_sources", {})  # OSCAR clusters do not say
        rows.append(
            (
                service["name"] + (f"\n(on {service['backend']})" if service.get("backend") else ""),
                service["image"],
                "\n".join(_input_text(io, sources) for io in service["input"]),
                ", ".join(_output_text(io) for io in service["output"]),
                jobs.get("queued", 0),
                jobs.get("running", 0),
                jobs.get("succeeded", 0),
                sum(jobs.get(s, 0) for s in ("failed", "timed_out", "cancelled")),
                jobs.get("dead", 0),
            )
        )
    columns = ["service", "image", "inputs", "outputs", "queued", "running", "ok", "failed", "dead"]
    render.table(None, columns, rows)


def _input_text(io: dict[str, Any], sources: dict[str, str]) -> str:
    """The input path, and how its events arrive when the platform says."""
    where = f"{io['storage_provider']}:{io['path']}"
    shown = io["path"] if io["storage_provider"] == "minio.default" else where
    source = sources.get(where)
    return f"{shown} ({source})" if source and io["storage_provider"] != "minio.default" else shown


def _output_text(io: dict[str, Any]) -> str:
    provider = "" if io["storage_provider"] == "minio.default" else f"{io['storage_provider']}:"
    filters = [f"{f}*" for f in io.get("prefix") or []] + [f"*{f}" for f in io.get("suffix") or []]
    return provider + io["path"] + (f" ({' '.join(filters)})" if filters else "")


def register(app: typer.Typer) -> None:
    app.command(help=APPLY_HELP)(apply)
    app.command(help=DELETE_HELP)(delete)
    app.command(help=SERVICES_HELP)(services)
