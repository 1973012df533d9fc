"""A 1 GiB object up and down through the S3 provider (SeaweedFS, multipart) and the WebDAV provider
(WsgiDAV), with the test process's memory bounded: providers stream, they never hold an object.

The file is written to disk in 1 MiB chunks (each one different, so a reordered or repeated part
changes the checksum). Peak RSS is reset before each transfer (`/proc/self/clear_refs`, "5") and
read back from VmHWM after it. Both servers run in other processes, so only the client is measured.
The numbers are printed, so CI logs keep them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.model.event import ObjectRef
from conveyor.storage.base import StorageProvider
from conveyor.storage.embedded import EmbeddedSeaweed
from conveyor.storage.s3 import S3Credentials, S3Provider
from conveyor.storage.webdav import WebdavProvider, WebdavSettings
from tests.support.webdav import run_webdav

SIZE = 1 << 30
CHUNK = 1 << 20
RSS_BUDGET = 100 * 2**20
TIME_BUDGET_S = 60.0
"""For the upload and the download together."""


@dataclass(frozen=True)
class Transfer:
    seconds: float
    rss_growth: int

    def rate(self, size: int) -> float:
        return size / 2**20 / self.seconds


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def measured(action: Callable[[], object]) -> Transfer:
    """Run `action` with the peak RSS reset first: the growth is what the action itself needed."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    before = peak_rss()
    started = time.monotonic()
    action()
    return Transfer(seconds=time.monotonic() - started, rss_growth=peak_rss() - before)


def write_large_file(path: Path, size: int) -> str:
    """`size` bytes in 1 MiB chunks, each starting with its index; returns the sha256."""
    block = bytearray(os.urandom(CHUNK))
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(size // CHUNK):
            block[:8] = index.to_bytes(8, "big")
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def round_trip(provider: StorageProvider, scratch: Path, label: str) -> None:
    """Upload and download SIZE bytes through `provider`, checking checksum, memory and time."""
    source, back = scratch / "large.bin", scratch / "large.back"
    expected = write_large_file(source, SIZE)
    target = ObjectRef(bucket="large", key="deep/folder/large.bin")
    provider.ensure_bucket("large")
    try:
        up = measured(lambda: provider.upload(source, target))
        down = measured(lambda: provider.download(target, back))
        info = provider.stat(target)
        assert info is not None and info.size == SIZE
        assert sha256_of(back) == expected, "the bytes came back changed"
    finally:
        source.unlink(missing_ok=True)
        back.unlink(missing_ok=True)
    print(
        f"\n{label}: {SIZE / 2**30:.2f} GiB up {up.seconds:.1f} s ({up.rate(SIZE):.0f} MB/s, "
        f"RSS +{up.rss_growth / 2**20:.1f} MiB), down {down.seconds:.1f} s ({down.rate(SIZE):.0f} MB/s, "
        f"RSS +{down.rss_growth / 2**20:.1f} MiB)"
    )
    assert up.rss_growth < RSS_BUDGET, f"upload grew the peak RSS by {up.rss_growth / 2**20:.0f} MiB"
    assert down.rss_growth < RSS_BUDGET, f"download grew the peak RSS by {down.rss_growth / 2**20:.0f} MiB"
    assert up.seconds + down.seconds < TIME_BUDGET_S


def test_a_gibibyte_through_s3_multipart_stays_in_bounded_memory(
    seaweedfs: EmbeddedSeaweed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = S3Provider(S3Credentials(endpoint=seaweedfs.s3_endpoint, access_key="testkey", secret_key="testsecret"))
    try:
        with capsys.disabled():
            round_trip(provider, tmp_path, "s3 (SeaweedFS)")
    finally:
        provider.close()
        seaweedfs.stop()
        shutil.rmtree(seaweedfs.root, ignore_errors=True)  # a GiB of volume files: do not keep it in /tmp


def test_a_gibibyte_through_webdav_stays_in_bounded_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with run_webdav(tmp_path / "dav") as dav:
        provider = WebdavProvider(WebdavSettings.model_validate(dav.settings()))
        try:
            with capsys.disabled():
                round_trip(provider, tmp_path, "webdav (WsgiDAV)")
        finally:
            provider.close()
            shutil.rmtree(dav.root / "large", ignore_errors=True)
