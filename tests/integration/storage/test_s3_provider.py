"""The S3 provider against a real SeaweedFS: the storage contract every provider keeps."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conveyor.errors import ObjectNotFound, StorageAuthError, StorageUnavailable
from conveyor.model.event import ObjectRef
from conveyor.storage.embedded import EmbeddedSeaweed
from conveyor.storage.s3 import SINGLE_PUT_LIMIT, S3Credentials, S3Provider


def ref(text: str) -> ObjectRef:
    return ObjectRef.parse(text)


def test_upload_download_stat_and_list_round_trip(s3: S3Provider, tmp_path: Path) -> None:
    assert s3.ensure_bucket("things") is True
    assert s3.ensure_bucket("things") is False
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(10_000))

    stored = s3.upload(source, ref("things/a/b/in.bin"))
    fetched = s3.download(ref("things/a/b/in.bin"), tmp_path / "out.bin")

    assert fetched.read_bytes() == source.read_bytes()
    assert stored.etag == hashlib.md5(source.read_bytes()).hexdigest()
    info = s3.stat(ref("things/a/b/in.bin"))
    assert info is not None and (info.size, info.etag) == (10_000, stored.etag)
    assert [i.ref.key for i in s3.list("things", "a/")] == ["a/b/in.bin"]
    assert "things" in s3.list_buckets()


def test_a_large_file_goes_multipart_and_its_etag_matches_the_store(s3: S3Provider, tmp_path: Path) -> None:
    s3.ensure_bucket("large")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(SINGLE_PUT_LIMIT + 3 * 2**20))

    stored = s3.upload(source, ref("large/big.bin"))

    assert "-" in stored.etag, "a multipart upload has a composite etag (md5-of-md5s-partcount)"
    assert s3.stat(ref("large/big.bin")).etag == stored.etag
    assert s3.download(ref("large/big.bin"), tmp_path / "back.bin").stat().st_size == source.stat().st_size


def test_listing_pages_through_more_than_a_thousand_objects(s3: S3Provider) -> None:
    s3.ensure_bucket("many")
    for i in range(1100):
        s3.put_bytes(ref(f"many/p/{i:05d}"), b"x")

    keys = [info.ref.key for info in s3.list("many", "p/")]

    assert keys == [f"p/{i:05d}" for i in range(1100)]


def test_folder_markers_are_created_once(s3: S3Provider) -> None:
    s3.ensure_bucket("marks")
    s3.ensure_folder("marks", "in/deep")
    s3.ensure_folder("marks", "in/deep")
    assert [i.ref.key for i in s3.list("marks")] == ["in/deep/"]


def test_errors_come_back_as_the_storage_error_family(
    s3: S3Provider, seaweedfs: EmbeddedSeaweed, tmp_path: Path
) -> None:
    s3.ensure_bucket("errs")
    with pytest.raises(ObjectNotFound, match="errs/missing"):
        s3.download(ref("errs/missing"), tmp_path / "x")
    assert s3.stat(ref("errs/missing")) is None
    with pytest.raises(ObjectNotFound):
        list(s3.list("no-such-bucket"))

    wrong_keys = S3Provider(
        S3Credentials(endpoint=seaweedfs.s3_endpoint, access_key="testkey", secret_key="not-the-secret")
    )
    with pytest.raises(StorageAuthError):
        wrong_keys.put_bytes(ref("errs/x"), b"x")
    wrong_keys.close()

    seaweedfs.stop()
    with pytest.raises(StorageUnavailable, match="cannot be reached"):
        s3.put_bytes(ref("errs/y"), b"y")
