"""The platform's small files are written whole or not at all: a full disk never leaves one truncated
(an empty credentials.json or ports.json would keep the platform from starting ever again)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from conveyor.files import write_atomically


def test_a_file_is_written_whole_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "config" / "credentials.json"
    write_atomically(path, '{"a": 1}', mode=0o600)
    assert path.read_text() == '{"a": 1}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_atomically(path, '{"a": 2}', mode=0o600)
    assert path.read_text() == '{"a": 2}'
    assert [p.name for p in path.parent.iterdir()] == ["credentials.json"]


def test_a_write_that_fails_leaves_the_file_as_it_was_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ports.json"
    path.write_text('{"s3.port": 8333}')

    def no_space(_descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, '{"s3.port": 9000}')

    assert path.read_text() == '{"s3.port": 8333}'
    assert [p.name for p in tmp_path.iterdir()] == ["ports.json"]
