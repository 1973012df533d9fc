"""`conveyor slurm check`: is this Slurm cluster ready to run Conveyor's jobs?"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.options import JsonOption
from conveyor.layout import DataLayout

CHECK_HELP = """Submit a probe job with the [slurm] settings and report what the node offers:
its Python and Conveyor, the container engines on its PATH, whether it reaches the object store.
Exits 1 and says what to change when a job could not run there.

**Example**: conveyor slurm check --timeout 120
"""

slurm_app = typer.Typer(help="Attach Conveyor to a Slurm cluster.", no_args_is_help=True)


@slurm_app.command("check", help=CHECK_HELP)
def check(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the probe job.", min=1)] = 300.0,
    as_json: JsonOption = False,
) -> None:
    from conveyor.backends.slurm.check import check_cluster

    settings = context(ctx).settings()
    layout = DataLayout(settings.data_dir)
    shared = settings.slurm.shared_dir or layout.root / "slurm"
    endpoint = settings.storage.s3_public_endpoint or _running_store(layout)
    report = check_cluster(settings.slurm, shared, endpoint, timeout)
    if as_json:
        render.print_json(report.model_dump(mode="json"))
    else:
        node = report.node
        rows = [
            ("slurm", report.slurm),
            ("node", node.get("host", "?")),
            ("python", f"{node.get('python', '?')} ({node.get('python_version', '?')})"),
            ("conveyor", node.get("conveyor_version", "?")),
            ("engines", ", ".join(node.get("engines", {})) or "none"),
            ("runtime", settings.slurm.runtime),
            ("object store", node.get("store") or "not checked: no running platform and no s3_public_endpoint"),
            ("probe took", f"{report.seconds:.1f} s"),
        ]
        render.table("Slurm check", ["", ""], rows)
        for problem in report.problems:
            render.err.print(f"[red]problem:[/red] {problem}")
        if report.ok:
            render.out.print("[green]ok[/green]: jobs of services with `backend: slurm` can run on this cluster")
    if not report.ok:
        raise CliError("the cluster is not ready for Conveyor's jobs (see above)", exit_code=1)


def _running_store(layout: DataLayout) -> str | None:
    try:
        return json.loads(layout.platform_file.read_text()).get("s3_endpoint")
    except (OSError, ValueError):
        return None


def register(app: typer.Typer) -> None:
    app.add_typer(slurm_app, name="slurm")
