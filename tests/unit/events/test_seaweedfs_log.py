"""The SeaweedFS change log, as `weed filer.meta.tail` prints it, read into object events."""

from __future__ import annotations

import io
from pathlib import Path

from conveyor.events.seaweedfs_log import _documents, parse_log_entry

# Recorded from SeaweedFS 4.48: bucket `logs` created, folder marker `in/`, `in/a b.txt` put then
# overwritten, `in/out.txt` put with Conveyor's producer metadata, then deleted.
SAMPLE = Path(__file__).parent / "samples" / "seaweedfs-meta-tail.txt"


class TrickleReader(io.StringIO):
    """Hands out the text a few bytes at a time, as a pipe from a slow process would."""

    def read(self, size: int = -1) -> str:
        return super().read(7)


def events_in(text: str) -> list:
    return [e for e in (parse_log_entry(d) for d in _documents(io.StringIO(text))) if e is not None]


def test_every_document_is_read_however_the_text_arrives() -> None:
    text = SAMPLE.read_text()
    whole = list(_documents(io.StringIO(text)))
    trickled = list(_documents(TrickleReader(text)))

    assert len(whole) == text.count('"directory"') == 12
    assert trickled == whole


def test_only_object_writes_become_events_with_their_etag_and_producer() -> None:
    events = events_in(SAMPLE.read_text())

    assert [(e.ref.bucket, e.ref.key) for e in events] == [
        ("logs", "in/a b.txt"),
        ("logs", "in/out.txt"),
        ("logs", "in/a b.txt"),
    ]
    first, output, overwrite = events
    assert first.etag == "5d41402abc4b2a76b9719d911017c592"  # md5("hello")
    assert overwrite.etag != first.etag
    assert (output.producer_job, output.producer_depth) == ("svc-42", 3)
    assert first.producer_job is None
    assert all(e.source == "seaweedfs" and e.size for e in events)


def test_deletes_and_directories_are_not_events() -> None:
    assert parse_log_entry({"directory": "/buckets/logs/in", "eventNotification": {"oldEntry": {"name": "x"}}}) is None
    directory = {
        "directory": "/buckets/logs",
        "eventNotification": {"newEntry": {"name": "in", "isDirectory": True}, "newParentPath": "/buckets/logs"},
    }
    assert parse_log_entry(directory) is None
