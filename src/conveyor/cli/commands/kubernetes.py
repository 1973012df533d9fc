"""`conveyor kubernetes check`: is this Kubernetes cluster ready to run Conveyor's jobs?"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.options import JsonOption
from conveyor.layout import DataLayout

CHECK_HELP = """Check the cluster with the [kubernetes] settings, one line per finding: the API answers,
the namespace exists, RBAC allows what Conveyor does, and a probe Job's pod (the stager image, the pod
settings) reaches the platform's API. Exits 1 and says what to change when something does not hold.

**Example**: conveyor kubernetes check --timeout 120
"""

kubernetes_app = typer.Typer(help="Attach Conveyor to a Kubernetes cluster.", no_args_is_help=True)


@kubernetes_app.command("check", help=CHECK_HELP)
def check(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the probe pod.", min=1)] = 120.0,
    as_json: JsonOption = False,
) -> None:
    from conveyor.backends.kubernetes.check import check_cluster

    settings = context(ctx).settings()
    api_url = settings.kubernetes.api_url or settings.api.public_url or _running_api(DataLayout(settings.data_dir))
    report = check_cluster(settings.kubernetes, api_url, timeout)
    if as_json:
        render.print_json(report.model_dump(mode="json"))
    else:
        for finding in report.findings:
            mark = "[green]ok[/green]" if finding.ok else "[red]problem[/red]"
            render.out.print(f"{mark} {finding.what}: {finding.detail}", markup=True, highlight=False)
    if not report.ok:
        raise CliError("the cluster is not ready for Conveyor's jobs (see above)", exit_code=1)


def _running_api(layout: DataLayout) -> str | None:
    try:
        return json.loads(layout.platform_file.read_text()).get("api_url")
    except (OSError, ValueError):
        return None


def register(app: typer.Typer) -> None:
    app.add_typer(kubernetes_app, name="kubernetes")
