"""Replaying the SeaweedFS filer's change log: what happened under /buckets between two moments.

The filer keeps every metadata change in a persisted log; `weed filer.meta.tail -timeAgo=...
-untilTimeAgo=...` prints the changes of a time window as protobuf-JSON documents, one after
another, pretty-printed:

    {"directory": "/buckets/mtb/in",
     "eventNotification": {"oldEntry": null,
                           "newEntry": {"name": "x.txt", "isDirectory": false,
                                        "attributes": {"fileSize": "5", "mtime": "1795768732",
                                                       "md5": "XUFAKrxLKna5cZ2REBfFkg==", ...},
                                        "extended": {"Seaweed-X-Amz-ETag": "...", ...}},
                           "newParentPath": "/buckets/mtb/in", ...},
     "tsNs": "1795768732181294285", ...}

The reconciler uses it between full listings: its cost follows the number of changes, not the
number of objects, and its entries carry the metadata a listing cannot show (which job wrote an
output). Each entry is turned into the webhook's shape and read by the webhook's parser, so both
paths keep the same rules.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from conveyor.errors import StorageUnavailable
from conveyor.events.seaweedfs import parse_filer_event
from conveyor.model.event import ObjectEvent, utcnow

REPLAY_TIMEOUT_S = 600


def replay_changes(
    weed: Path, filer_address: str, path_prefix: str, since: datetime, until: datetime
) -> Iterator[ObjectEvent]:
    """Object events stored under `path_prefix` between `since` and `until` (oldest first)."""
    now = utcnow()
    command = [
        str(weed),
        "filer.meta.tail",
        f"-filer={filer_address}",
        f"-pathPrefix={path_prefix}",
        f"-timeAgo={_ago(now, since)}",
        f"-untilTimeAgo={_ago(now, until)}",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for document in _documents(process.stdout):
            event = parse_log_entry(document)
            if event is not None:
                yield event
        _, errors = process.communicate(timeout=REPLAY_TIMEOUT_S)
        if process.returncode != 0:
            raise StorageUnavailable(f"replaying the SeaweedFS change log failed: {errors.strip()[-500:]}")


def parse_log_entry(document: dict[str, Any]) -> ObjectEvent | None:
    """One log entry in the webhook's shape, through the webhook's parser."""
    notification = document.get("eventNotification") or {}
    entry = notification.get("newEntry")
    if not entry:
        return None  # a delete
    attributes = entry.get("attributes") or {}
    payload = {
        "event_type": "create",
        "key": f"{document.get('directory', '').rstrip('/')}/{entry.get('name', '')}",
        "message": {
            "new_entry": {
                "name": entry.get("name"),
                "is_directory": entry.get("isDirectory", False),
                "attributes": {
                    "file_size": int(attributes.get("fileSize") or 0),
                    "mtime": int(attributes.get("mtime") or 0),
                    "md5": attributes.get("md5") or "",
                },
                "extended": entry.get("extended") or {},
            },
            "new_parent_path": notification.get("newParentPath") or document.get("directory"),
        },
    }
    return parse_filer_event(payload)


def _documents(stream: IO[str]) -> Iterator[dict[str, Any]]:
    """JSON documents printed one after another, read as they arrive (the output can be large)."""
    decoder = json.JSONDecoder()
    buffer = ""
    for chunk in iter(lambda: stream.read(65536), ""):
        buffer += chunk
        position = 0
        while True:
            while position < len(buffer) and buffer[position].isspace():
                position += 1
            try:
                document, position = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError:
                break  # the rest of this document is still on its way
            yield document
        buffer = buffer[position:]


def _ago(now: datetime, moment: datetime) -> str:
    return f"{max(0.0, (now - moment).total_seconds()):.3f}s"
