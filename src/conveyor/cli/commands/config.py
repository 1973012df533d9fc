"""`conveyor config show`: every setting, its value and where it came from."""

from __future__ import annotations

import os
import tomllib
from typing import Any

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.options import JsonOption
from conveyor.settings import config_file

SHOW_HELP = """Print every setting with its value and its source (default, file, env). Set them in
~/.config/conveyor/conveyor.toml (or the file CONVEYOR_CONFIG names), or as CONVEYOR_* variables
with __ between section and key.

**Example**: CONVEYOR_API__PORT=9090 conveyor config show
"""

SECRET_NAMES = ("password", "secret_key", "access_key", "token")

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@config_app.command("show", help=SHOW_HELP)
def show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    settings = context(ctx).settings()
    path = config_file()
    from_file = tomllib.loads(path.read_text()) if path.exists() else {}
    rows = []
    for dotted, value in _flatten(settings.model_dump(mode="json")):
        if any(secret in dotted for secret in SECRET_NAMES) and value:
            value = "********"
        rows.append({"setting": dotted, "value": value, "source": _source(dotted, from_file, ctx)})
    if as_json:
        render.print_json({"config_file": str(path), "settings": rows})
        return
    render.note(f"config file: {path}{'' if path.exists() else ' (absent)'}")
    render.table(None, ["setting", "value", "source"], [(r["setting"], r["value"], r["source"]) for r in rows])


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            items += _flatten(value, dotted + ".")
        else:
            items.append((dotted, value))
    return items


def _source(dotted: str, from_file: dict[str, Any], ctx: typer.Context) -> str:
    if dotted == "data_dir" and context(ctx).data_dir is not None:
        return "command line or CONVEYOR_DATA_DIR"
    if f"CONVEYOR_{dotted.replace('.', '__').upper()}" in os.environ:
        return "env"
    node: Any = from_file
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return "default"
        node = node[part]
    return "file"


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
