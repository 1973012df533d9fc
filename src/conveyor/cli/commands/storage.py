"""`conveyor put`, `conveyor get`, `conveyor ls`: files in the platform's store.

Paths are `bucket/folder/name`. Any S3 client works too: `conveyor up` prints the endpoint and
keys, and `/system/config` hands them to OSCAR clients.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import astuple
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from conveyor.cli import render
from conveyor.cli.app import context
from conveyor.cli.client import CliError
from conveyor.cli.options import JsonOption
from conveyor.errors import ObjectNotFound, StorageError, StorageUnavailable, StorageUnreachable
from conveyor.events.routing import InputIndex
from conveyor.model.event import ObjectRef
from conveyor.model.kinds import DEFAULT_PROVIDER, ProviderId
from conveyor.model.service import Service, bucket_name_problem
from conveyor.storage.base import StorageProvider
from conveyor.storage.registry import build_provider

PUT_HELP = """Upload files (or whole directories) into the store. A destination ending in '/' is a
folder: each file keeps its name under it; a directory goes in as a folder of that name (`put
frames video/in/` gives video/in/frames/...), or its contents alone with a trailing slash (`put
frames/ video/in/`), as rsync does. Every file that lands under a service's input path starts one
job; an upload that no service reads is refused (a typo, or a folder without its '/'), unless --force.

**Example**: conveyor put frames/*.jpg video/frames/
"""

GET_HELP = """Download an object, or every object under a folder (a source ending in '/').

**Example**: conveyor get video/results/ ./results
"""

LS_HELP = """List buckets, or the objects in a bucket or under bucket/prefix.

**Example**: conveyor ls video/results/ --json
"""

PARALLEL_TRANSFERS = 8
T = TypeVar("T")
R = TypeVar("R")


def _parse_ref(text: str) -> ObjectRef:
    try:
        return ObjectRef.parse(text)
    except ValueError as error:
        raise CliError(str(error), exit_code=2) from None


def _upload_plan(given: list[str], destination: str) -> list[tuple[Path, ObjectRef]]:
    """Each local file and the object it becomes. A directory named with a trailing '/' gives its
    contents, without one the directory itself (rsync's rule)."""
    dest = _parse_ref(destination)
    if dest.provider.split(".")[0] in ("minio", "s3") and (problem := bucket_name_problem(dest.bucket)):
        raise CliError(problem, exit_code=2)
    sources = [Path(text) for text in given]
    as_folder = destination.endswith("/") or len(sources) > 1 or any(s.is_dir() for s in sources) or not dest.key
    folder = dest.key.rstrip("/")
    plan: list[tuple[Path, ObjectRef]] = []
    for text, source in zip(given, sources, strict=True):
        if not source.exists():
            raise CliError(f"{source}: no such file or directory", exit_code=2)
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for file in files:
            relative = file.relative_to(source).as_posix() if source.is_dir() else file.name
            if source.is_dir() and not text.endswith("/"):
                relative = f"{source.name}/{relative}"
            key = f"{folder}/{relative}".lstrip("/") if as_folder else dest.key
            plan.append((file, ObjectRef(provider=dest.provider, bucket=dest.bucket, key=key)))
    return plan


FdlOption = Annotated[
    Path | None,
    typer.Option(
        "--fdl",
        help="FDL file whose storage_providers hold the credentials of a PROVIDER:bucket/... path "
        "(else the [providers] section of the config file).",
        exists=True,
        dir_okay=False,
    ),
]


def _open_store(ctx: typer.Context, provider: str, fdl: Path | None) -> StorageProvider:
    """The platform's own store (credentials from /system/config), or another one from its settings."""
    if provider == DEFAULT_PROVIDER:
        with context(ctx).client() as client:
            return client.storage()
    settings = _provider_settings(ctx, provider, fdl)
    try:
        return build_provider(provider, settings)
    except StorageError as error:
        raise CliError(str(error), exit_code=2) from None


def _provider_settings(ctx: typer.Context, provider: str, fdl: Path | None) -> dict[str, Any]:
    kind, ident = astuple(ProviderId.parse(provider))
    found: dict[str, Any] | None = None
    if fdl is not None:
        document = yaml.safe_load(fdl.read_text()) or {}
        sections = [document.get("storage_providers") or {}]
        for item in (document.get("functions") or {}).get("oscar") or []:
            sections += [svc.get("storage_providers") or {} for svc in (item or {}).values() if isinstance(svc, dict)]
        found = next((s[kind][ident] for s in sections if ident in (s.get(kind) or {})), None)
    if found is None:
        found = context(ctx).settings().providers.get(kind, {}).get(ident)
    if found is None:
        where = f"{fdl}" if fdl else "the [providers] section of the config file (or pass --fdl)"
        raise CliError(f"no settings for storage provider {provider!r} in {where}", exit_code=2)
    return found


def put(
    ctx: typer.Context,
    paths: Annotated[
        list[str],
        typer.Argument(help="Local files or directories, then the destination [provider:]bucket/folder/."),
    ],
    fdl: FdlOption = None,
    force: Annotated[bool, typer.Option("--force", help="Upload even where no service reads.")] = False,
    as_json: JsonOption = False,
) -> None:
    if len(paths) < 2:
        raise CliError("give at least one local file and a destination, e.g. conveyor put a.jpg bucket/in/", 2)
    *sources, destination = paths
    plan = _upload_plan(sources, destination)
    provider = plan[0][1].provider
    index = _input_index(ctx, provider)
    readers = None if index is None else {ref: index.services_for(ref) for _, ref in plan}
    if index is not None and readers is not None and not any(readers.values()) and not force:
        problem = _nothing_reads(index, plan[0][1], destination, len(plan))
        if provider == DEFAULT_PROVIDER:  # the platform's own store is there to start jobs
            raise CliError(f"{problem.rstrip('?')}. Add --force to upload anyway", exit_code=2)
        render.warn(problem)
    bucket = plan[0][1].bucket
    with _outage_explained(ctx, provider), _open_store(ctx, provider, fdl) as store:
        if store.ensure_bucket(bucket):
            render.note(f"created bucket {bucket}")
        explain = lambda error: _full_disk(ctx, provider, error)  # noqa: E731
        stored = _transfer(plan, lambda item: store.upload(*item), "uploading", quiet=as_json, explain=explain)
    if as_json:
        render.print_json([{"key": str(info.ref), "size": info.size, "etag": info.etag} for info in stored])
    else:
        _say_where_files_went(plan, readers)


SHOWN_FILES = 10
"""Up to this many uploaded files are listed one per line; more are summed up."""


def _input_index(ctx: typer.Context, provider: str) -> InputIndex | None:
    """The platform's services by input path; None when it cannot say (not running, for another store
    than its own; an OSCAR cluster whose services do not parse)."""
    try:
        with context(ctx).client() as client:
            listing = client.services()
        index = InputIndex()
        index.rebuild([Service.model_validate(entry["service"]) for entry in listing])
    except CliError:
        if provider == DEFAULT_PROVIDER:
            raise
        return None
    except ValueError:
        return None
    return index


def _nothing_reads(index: InputIndex, first: ObjectRef, destination: str, files: int) -> str:
    where = f"{first.bucket}/{first.key}" if files == 1 else f"{first.bucket}/{first.key.rsplit('/', 1)[0]}/"
    message = f"no service reads {where}, so no job would start"
    if not destination.endswith("/") and files == 1:
        folder = _parse_ref(destination + "/")
        probe = ObjectRef(provider=folder.provider, bucket=folder.bucket, key=f"{folder.key}{first.name}")
        if services := index.services_for(probe):
            message += f"; did you mean {destination}/ (a folder ends with '/'), read by {', '.join(services)}"
    return message


def _say_where_files_went(plan: list[tuple[Path, ObjectRef]], readers: dict[ObjectRef, list[str]] | None) -> None:
    """A line for the upload, then each file and the service it starts (up to SHOWN_FILES)."""
    render.out.print(f"uploaded {len(plan)} file(s) to {plan[0][1].bucket}/{_common_folder(plan)}")
    if len(plan) <= SHOWN_FILES:
        for file, ref in plan:
            services = (readers or {}).get(ref)
            starts = f" (starts {', '.join(services)})" if services else " (no service reads it)" if readers else ""
            render.out.print(f"  {file} -> {ref.bucket}/{ref.key}{starts}")
    unread = [ref for _, ref in plan if readers is not None and not readers[ref]]
    if unread and len(plan) > SHOWN_FILES:
        render.warn(f"{len(unread)} of {len(plan)} file(s) start no job: no service reads where they went")


def _common_folder(plan: list[tuple[Path, ObjectRef]]) -> str:
    folders = {ref.key.rsplit("/", 1)[0] + "/" if "/" in ref.key else "" for _, ref in plan}
    return folders.pop() if len(folders) == 1 else ""


def _transfer(
    items: list[T],
    action: Callable[[T], R],
    description: str,
    *,
    quiet: bool,
    explain: Callable[[StorageError], str | None] = lambda _error: None,
) -> list[R]:
    """Run `action` over `items` a few at a time, with a progress bar for more than one; `explain` may say
    why a transfer failed better than the store's answer does."""
    results = []
    with ThreadPoolExecutor(PARALLEL_TRANSFERS) as pool, render.progress(transient=quiet) as bar:
        task = bar.add_task(description, total=len(items), visible=len(items) > 1 and not quiet)
        try:
            for result in pool.map(action, items):
                results.append(result)
                bar.advance(task)
        except (StorageUnreachable, ObjectNotFound):
            raise  # _outage_explained says why; the caller names what is missing
        except StorageError as error:
            raise CliError(f"{description} stopped: {explain(error) or error}") from None
    return results


def _full_disk(ctx: typer.Context, provider: str, error: StorageError) -> str | None:
    """A refusal of the platform's own store (its 500 says only `InternalError`) that the platform's
    full disk explains: `the platform's disk is full: the data directory /x has 0 MB free (needs 64 MB) ...`."""
    if provider != DEFAULT_PROVIDER or not isinstance(error, StorageUnavailable):
        return None
    with context(ctx).client() as client:
        disk = client.problem("disk")
    return f"the platform's disk is full: {disk}" if disk else None


@contextmanager
def _outage_explained(ctx: typer.Context, provider: str) -> Iterator[None]:
    """A store that does not answer, said in one line: for the platform's own store, why (it may be
    restarting), as the platform knows it."""
    try:
        yield
    except StorageUnreachable as error:
        if provider != DEFAULT_PROVIDER:
            raise CliError(f"{provider} does not answer: {error}") from None
        with context(ctx).client() as client:
            reason = client.store_problem()
        if reason is None:
            raise CliError(f"the platform's store does not answer: {error}") from None
        raise CliError(f"the platform's store does not answer: {reason}; try again in a moment") from None


def get(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(help="[provider:]bucket/key, or [provider:]bucket/folder/ for everything under it.")
    ],
    destination: Annotated[Path, typer.Argument(help="File or directory to write; - for standard output.")] = Path(),
    fdl: FdlOption = None,
) -> None:
    ref = _parse_ref(source)
    to_stdout = str(destination) == "-"
    folder = source.endswith("/") or not ref.key
    if to_stdout and folder:
        raise CliError("- (standard output) takes one object, not a folder", exit_code=2)
    with _outage_explained(ctx, ref.provider), _open_store(ctx, ref.provider, fdl) as store:
        if to_stdout:
            _copy_to_stdout(store, ref)
            return
        if folder:
            plan = _download_plan(store, ref, destination)
        else:
            target = destination / ref.name if destination.is_dir() else destination
            plan = [(ref, target)]
        for _, target in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _transfer(plan, lambda item: store.download(*item), "downloading", quiet=False)
        except ObjectNotFound:
            raise CliError(f"there is no object {ref.bucket}/{ref.key}", exit_code=2) from None
    render.out.print(f"downloaded {len(plan)} file(s)")


def _copy_to_stdout(store: StorageProvider, ref: ObjectRef) -> None:
    with tempfile.TemporaryDirectory(prefix="conveyor-get-") as scratch:
        try:
            path = store.download(ref, Path(scratch) / "object")
        except ObjectNotFound:
            raise CliError(f"there is no object {ref.bucket}/{ref.key}", exit_code=2) from None
        with path.open("rb") as data:
            shutil.copyfileobj(data, sys.stdout.buffer)
        sys.stdout.buffer.flush()


def _download_plan(store: StorageProvider, folder: ObjectRef, destination: Path) -> list[tuple[ObjectRef, Path]]:
    prefix = folder.key
    plan = []
    for info in store.list(folder.bucket, prefix):
        if info.ref.key.endswith("/"):
            continue
        relative = info.ref.key[len(prefix) :].lstrip("/")
        plan.append((info.ref, destination / relative))
    if not plan:
        raise CliError(f"nothing under {folder.bucket}/{prefix}", exit_code=2)
    return plan


def ls(
    ctx: typer.Context,
    path: Annotated[
        str | None,
        typer.Argument(help="[provider:]bucket or [provider:]bucket/prefix; nothing (or `provider:`) lists buckets."),
    ] = None,
    fdl: FdlOption = None,
    as_json: JsonOption = False,
) -> None:
    provider = path[:-1] if path and path.endswith(":") else None
    ref = None if path is None or provider else _parse_ref(path)
    chosen = provider or (ref.provider if ref else DEFAULT_PROVIDER)
    with _outage_explained(ctx, chosen), _open_store(ctx, chosen, fdl) as store:
        try:
            if ref is None:
                buckets = store.list_buckets()
                render.print_json(buckets) if as_json else render.table(None, ["bucket"], [(b,) for b in buckets])
                return
            objects = [info for info in store.list(ref.bucket, ref.key) if not info.ref.key.endswith("/")]
        except StorageUnreachable:
            raise
        except StorageError as error:
            raise CliError(str(error), exit_code=2 if "NoSuchBucket" in str(error) else 1) from None
    if as_json:
        render.print_json(
            [{"key": o.ref.key, "size": o.size, "etag": o.etag, "last_modified": o.last_modified} for o in objects]
        )
        return
    rows = [
        (
            o.ref.key,
            render.size(o.size),
            o.last_modified.astimezone().strftime("%Y-%m-%d %H:%M:%S") if o.last_modified else "",
        )
        for o in objects
    ]
    render.table(None, ["key", "size", "modified"], rows)


def register(app: typer.Typer) -> None:
    app.command(help=PUT_HELP)(put)
    app.command(help=GET_HELP)(get)
    app.command(help=LS_HELP)(ls)
