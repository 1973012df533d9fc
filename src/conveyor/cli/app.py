"""The root of the `conveyor` command line: global options, the shared context, error handling."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from conveyor import __version__
from conveyor.cli import render
from conveyor.cli.client import CliError, ConveyorClient, ProblemsError, resolve_connection
from conveyor.errors import ConfigError, ConveyorError, validation_reasons
from conveyor.layout import DataLayout
from conveyor.settings import Settings

app = typer.Typer(
    name="conveyor",
    help=(
        "Run a containerised script on every file that lands in a bucket.\n\n"
        "Start the platform with **conveyor up**, deploy an OSCAR FDL file with "
        "**conveyor apply workflow.yaml**, drop files in with **conveyor put**, "
        "follow them with **conveyor jobs** and **conveyor logs**. "
        "**conveyor demo** shows the whole loop on a video."
    ),
    rich_markup_mode="markdown",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class CliContext:
    data_dir: Path | None
    url: str | None
    user: str | None
    password: str | None

    def settings(self, **overrides: Any) -> Settings:
        """Settings from file and environment, with command-line values on top."""
        if self.data_dir is not None:
            overrides["data_dir"] = self.data_dir
        try:
            return Settings(**overrides)
        except ValidationError as error:
            raise CliError("; ".join(validation_reasons(error.errors())), exit_code=2) from None
        except ConfigError as error:
            raise CliError(str(error), exit_code=2) from None

    def client(self, timeout_s: float = 60.0) -> ConveyorClient:
        settings = self.settings()
        given = {"endpoint": self.url, "user": self.user, "password": self.password}
        client = settings.client.model_copy(update={k: v for k, v in given.items() if v is not None})
        connection = resolve_connection(DataLayout(settings.data_dir), client)
        return ConveyorClient(connection, timeout_s=timeout_s)


def _version(value: bool) -> None:
    if value:
        print(f"conveyor {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar="CONVEYOR_DATA_DIR",
            help="Where the platform keeps everything (default ~/.local/share/conveyor).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            "--url",
            envvar="CONVEYOR_URL",
            help="API of another Conveyor, or of an OSCAR cluster (also: [client] endpoint in the config file).",
            show_default=False,
        ),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", envvar="CONVEYOR_USER", help="Admin user for --endpoint.")
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", envvar="CONVEYOR_PASSWORD", help="Admin password for --endpoint.")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = CliContext(data_dir=data_dir, url=url, user=user, password=password)


def context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliContext)
    return obj


# The order commands appear in `conveyor --help`; a module in cli/commands registers itself
# with a `register(app)` function, so adding a command means adding a module.
COMMAND_MODULES = (
    "platform",
    "services",
    "storage",
    "jobs",
    "retry",
    "cancel",
    "trace",
    "run",
    "demo",
    "slurm",
    "kubernetes",
    "config",
)


def _register_commands() -> None:
    import importlib
    import pkgutil

    import conveyor.cli.commands as package

    present = {info.name for info in pkgutil.iter_modules(package.__path__)}
    ordered = [name for name in COMMAND_MODULES if name in present]
    ordered += sorted(present - set(COMMAND_MODULES))
    for name in ordered:
        importlib.import_module(f"conveyor.cli.commands.{name}").register(app)


_register_commands()


GLOBAL_OPTIONS = ("--data-dir", "--endpoint", "--url", "--user", "--password")
"""Options of `conveyor` itself that users also type after the command (`conveyor up --data-dir d`)."""


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options found after the command to before it, where click expects them; an
    argument after `--` stays where it is. `conveyor up --data-dir d` = `conveyor --data-dir d up`."""
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            takes_next = "=" not in arg and index + 1 < len(args)
            hoisted += args[index : index + 2] if takes_next else [arg]
            index += 2 if takes_next else 1
            continue
        rest.append(arg)
        index += 1
    return hoisted + rest


def main() -> None:
    try:
        app(args=hoist_global_options(sys.argv[1:]), prog_name="conveyor")
    except ProblemsError as error:
        for problem in error.problems:
            render.err.print(f"[red]error:[/red] {escape(str(problem['field']))}: {escape(str(problem['message']))}")
        raise SystemExit(error.exit_code) from None
    except CliError as error:
        render.err.print(f"[red]error:[/red] {escape(str(error))}")  # "[kubernetes]" is text
        raise SystemExit(error.exit_code) from None
    except ConveyorError as error:
        render.err.print(f"[red]error:[/red] {escape(str(error))}")  # "[kubernetes]" is text
        raise SystemExit(1) from None
