"""`conveyor run`: invoke a service synchronously, as OSCAR's /run does."""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError

RUN_HELP = """Run a service once on a local file (or text) and wait for the result: the single
output file, a zip when the script wrote several, else what the script printed. The outputs
are also stored in the service's outputs.

**Examples**: conveyor run detect-faces --input frame.jpg --output result.zip;
conveyor run echo --text hello
"""


def run(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service to run.")],
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="File sent as the input.", exists=True, dir_okay=False)
    ] = None,
    text: Annotated[str | None, typer.Option("--text", "-t", help="Text sent as the input.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result here.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 3600.0,
) -> None:
    if (input_file is None) == (text is None):
        raise CliError("give exactly one of --input FILE or --text TEXT", exit_code=2)
    data = input_file.read_bytes() if input_file is not None else (text or "").encode()
    with context(ctx).client() as client:
        response = client.run(service, base64.b64encode(data), timeout_s=timeout)
    job_id = response.headers.get("x-conveyor-job-id", "?")
    if response.status_code == 404:
        raise CliError(f"no service named {service!r}", exit_code=2)
    if response.status_code >= 400:
        raise CliError(f"job {job_id} failed:\n{response.text.strip()}")
    result = _decoded(response.content)
    if output is not None:
        output.write_bytes(result)
        render.note(f"job {job_id}: wrote {len(result)} bytes to {output}")
    else:
        sys.stdout.buffer.write(result)
        sys.stdout.flush()


def _decoded(body: bytes) -> bytes:
    """The answer is base64 when the script wrote files, plain text when it only printed."""
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return body


def register(app: typer.Typer) -> None:
    app.command(help=RUN_HELP)(run)
