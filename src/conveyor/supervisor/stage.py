"""Moving a job's files: the input in, the results out, and the synchronous response.

Everything here treats names from outside (object keys, files a script wrote) as hostile: an
input lands inside the job's input directory whatever its key says, and stage-out reads only
regular files that are really inside the output directory (a symlink to /etc/shadow is skipped).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import stat
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from conveyor.errors import StorageError, StorageUnreachable, UnsafeKeyError
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef
from conveyor.model.service import StorageIO
from conveyor.storage.base import StorageProvider

ProviderLookup = Callable[[str], StorageProvider]
"""Gives the provider for a `kind.id` name (`minio.default`, `s3.mine`)."""


class StageOutError(StorageError):
    """Stage-out stopped part-way; `stored` lists what was uploaded before the failure, `unreachable`
    names the output's store when it did not answer at all (the job then waits for it)."""

    def __init__(self, message: str, stored: list[ObjectInfo], unreachable: str | None = None) -> None:
        super().__init__(message)
        self.stored = stored
        self.unreachable = unreachable


def safe_input_name(key: str) -> str:
    """The file name an object gets in the input directory: its base name, made harmless."""
    if "\x00" in key:
        raise UnsafeKeyError(f"object key {key!r} contains a NUL byte")
    name = key.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", ".."):
        return "input"
    return name


def stage_in_object(event: ObjectEvent, provider: StorageProvider, input_dir: Path) -> Path:
    destination = input_dir / safe_input_name(event.ref.key)
    _assert_inside(destination, input_dir)
    return provider.download(event.ref, destination)


def stage_in_request(body: bytes, input_dir: Path) -> Path:
    """An HTTP body as OSCAR's supervisor saves it: JSON as it is, anything else base64-decoded."""
    destination = input_dir / f"event-file-{uuid.uuid4()}"
    destination.write_bytes(decode_request_body(body))
    return destination


def decode_request_body(body: bytes) -> bytes:
    try:
        json.loads(body)
        return body
    except (ValueError, UnicodeDecodeError):
        pass
    compact = b"".join(body.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return body


def output_files(output_dir: Path) -> Iterator[tuple[str, Path]]:
    """(relative name with '/', path) of every regular file under `output_dir`, sorted, no symlinks."""
    root = output_dir.resolve()
    found = []
    for dirpath, _dirnames, filenames in os.walk(root, followlinks=False):
        for filename in filenames:
            path = Path(dirpath) / filename
            if not stat.S_ISREG(path.lstat().st_mode):
                continue  # symlinks, fifos and sockets could read or block outside the job
            found.append((path.relative_to(root).as_posix(), path))
    yield from sorted(found)


def stage_out(
    output_dir: Path,
    outputs: list[StorageIO],
    providers: ProviderLookup,
    metadata: dict[str, str] | None = None,
) -> list[ObjectInfo]:
    """Upload every file to every output whose prefix/suffix filters accept its relative name.

    Every object carries `metadata` (the job that wrote it), so the next job knows its parent.
    """
    stored: list[ObjectInfo] = []
    for relative, path in output_files(output_dir):
        for output in outputs:
            if not output.accepts(relative):
                continue
            ref = ObjectRef(provider=output.storage_provider, bucket=output.bucket, key=output.key_for(relative))
            try:
                info = providers(output.storage_provider).upload(path, ref, metadata)
            except StorageError as error:
                raise StageOutError(
                    f"stage-out failed uploading {relative!r} to {output.storage_provider}:{ref}: {error}; "
                    f"{len(stored)} output(s) were stored before the failure",
                    stored,
                    unreachable=output.storage_provider if isinstance(error, StorageUnreachable) else None,
                ) from error
            stored.append(info)
    return stored


def sync_response(output_dir: Path, script_output: bytes) -> bytes:
    """What `/run` answers: base64 of the one output file, of a zip of several, else the script's output."""
    files = list(output_files(output_dir))
    if len(files) == 1:
        return base64.b64encode(files[0][1].read_bytes())
    if len(files) > 1:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative, path in files:
                archive.write(path, relative)
        return base64.b64encode(buffer.getvalue())
    return script_output


def _assert_inside(path: Path, directory: Path) -> None:
    if not path.resolve().is_relative_to(directory.resolve()):
        raise UnsafeKeyError(f"{path} would be written outside {directory}")
