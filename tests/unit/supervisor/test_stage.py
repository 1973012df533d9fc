"""Staging a job's files in and out, and the synchronous response."""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import StorageError, StorageUnavailable, UnsafeKeyError
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef
from conveyor.model.service import StorageIO
from conveyor.storage.base import StorageProvider
from conveyor.supervisor.stage import (
    StageOutError,
    decode_request_body,
    output_files,
    safe_input_name,
    stage_in_object,
    stage_in_request,
    stage_out,
    sync_response,
)


class MemoryStore(StorageProvider):
    """An in-memory provider; `fail_on` names keys whose upload fails."""

    kind = "memory"

    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.uploads: list[ObjectRef] = []
        self.fail_on = fail_on or set()

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        dest.write_bytes(self.objects[(ref.bucket, ref.key)])
        return dest

    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        if ref.key in self.fail_on:
            raise StorageUnavailable("store answered 503")
        return self.put_bytes(ref, path.read_bytes())

    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo:
        self.objects[(ref.bucket, ref.key)] = data
        self.uploads.append(ref)
        return ObjectInfo(ref=ref, size=len(data), etag=f"etag-{len(self.uploads)}")

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        data = self.objects.get((ref.bucket, ref.key))
        return None if data is None else ObjectInfo(ref=ref, size=len(data))

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        for (b, key), data in sorted(self.objects.items()):
            if b == bucket and key.startswith(prefix):
                yield ObjectInfo(ref=ObjectRef(bucket=b, key=key), size=len(data))

    def delete(self, ref: ObjectRef) -> None:
        self.objects.pop((ref.bucket, ref.key), None)

    def ensure_bucket(self, bucket: str) -> bool:
        return False

    def list_buckets(self) -> list[str]:
        return sorted({b for b, _ in self.objects})

    def delete_bucket(self, bucket: str) -> None:
        for key in [k for k in self.objects if k[0] == bucket]:
            del self.objects[key]


def write_files(root: Path, files: dict[str, bytes | str]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def names(output_dir: Path) -> list[str]:
    return [relative for relative, _ in output_files(output_dir)]


def output(path: str, provider: str = "minio.default", **filters: list[str]) -> StorageIO:
    return StorageIO(storage_provider=provider, path=path, **filters)


def stored_keys(infos: list[ObjectInfo]) -> list[str]:
    return [f"{i.ref.provider}:{i.ref.bucket}/{i.ref.key}" for i in infos]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "output"
    path.mkdir()
    return path


# ---- safe_input_name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("in/cat.jpg", "cat.jpg"),
        ("cat.jpg", "cat.jpg"),
        ("in/../../etc/passwd", "passwd"),
        ("in/../..", "input"),
        ("..", "input"),
        ("/etc/shadow", "shadow"),
        ("in/folder/", "folder"),
        ("in\\..\\..\\evil.sh", "evil.sh"),
        ("C:\\Users\\x\\photo.png", "photo.png"),
        (".", "input"),
        ("", "input"),
        ("/", "input"),
        ("in/ spaced name.txt ", "spaced name.txt"),
        ("in/a b+c.txt", "a b+c.txt"),
    ],
)
def test_safe_input_name(key: str, expected: str) -> None:
    name = safe_input_name(key)
    assert name == expected
    assert "/" not in name and "\\" not in name


def test_safe_input_name_refuses_nul_bytes() -> None:
    with pytest.raises(UnsafeKeyError, match="NUL"):
        safe_input_name("in/a\x00.txt")


def test_stage_in_object_lands_inside_the_input_dir_whatever_the_key(tmp_path: Path) -> None:
    store = MemoryStore()
    store.objects[("b", "in/../../../outside.txt")] = b"payload"
    event = ObjectEvent(ref=ObjectRef(bucket="b", key="in/../../../outside.txt"))

    path = stage_in_object(event, store, tmp_path)

    assert path == tmp_path / "outside.txt"
    assert path.read_bytes() == b"payload"
    assert not (tmp_path.parent / "outside.txt").exists()


# ---- stage_in_request and decode_request_body -----------------------------------------------


def test_stage_in_request_saves_the_decoded_body_in_the_input_dir(tmp_path: Path) -> None:
    path = stage_in_request(base64.b64encode(b"\x89PNG binary"), tmp_path)
    assert path.parent == tmp_path
    assert path.name.startswith("event-file-")
    assert path.read_bytes() == b"\x89PNG binary"


def test_stage_in_request_gives_every_body_its_own_file(tmp_path: Path) -> None:
    first = stage_in_request(b'{"a": 1}', tmp_path)
    second = stage_in_request(b'{"a": 2}', tmp_path)
    assert first != second
    assert (first.read_bytes(), second.read_bytes()) == (b'{"a": 1}', b'{"a": 2}')


@pytest.mark.parametrize(
    "body",
    [b'{"Records": []}', b"[1, 2]", b"1234", b'"abcd"', json.dumps({"k": "dGVzdA=="}).encode()],
)
def test_json_bodies_are_kept_as_they_are(body: bytes) -> None:
    assert decode_request_body(body) == body


@pytest.mark.parametrize(
    "data",
    [b"hello world", b"\x00\x01\x02\xff" * 100, "ñandú".encode()],
)
def test_base64_bodies_are_decoded(data: bytes) -> None:
    assert decode_request_body(base64.b64encode(data)) == data


def test_base64_with_line_breaks_is_decoded() -> None:
    data = os.urandom(300)
    wrapped = base64.encodebytes(data)  # MIME style: a newline every 76 characters
    assert b"\n" in wrapped.strip()
    assert decode_request_body(wrapped) == data
    assert decode_request_body(wrapped.replace(b"\n", b"\r\n")) == data


@pytest.mark.parametrize("body", [b"plain text, not base64!", b"\xff\xfe\xfd", b"abc"])
def test_other_bodies_are_kept_as_they_are(body: bytes) -> None:
    assert decode_request_body(body) == body


# ---- output_files ---------------------------------------------------------------------------


def test_output_files_is_recursive_with_slash_separated_relative_names(out_dir: Path) -> None:
    write_files(out_dir, {"top.txt": "1", "sub/mid.txt": "2", "sub/deeper/low.txt": "3"})
    files = dict(output_files(out_dir))
    assert set(files) == {"top.txt", "sub/mid.txt", "sub/deeper/low.txt"}
    assert files["sub/deeper/low.txt"].read_text() == "3"


def test_output_files_are_sorted_by_relative_name(out_dir: Path) -> None:
    write_files(out_dir, {"b.txt": "", "a/x.txt": "", "c/y.txt": "", "a.txt": "", "z.txt": ""})
    listed = names(out_dir)
    assert listed == sorted(listed)
    assert listed == ["a.txt", "a/x.txt", "b.txt", "c/y.txt", "z.txt"]


def test_output_files_order_is_stable_within_a_directory(out_dir: Path) -> None:
    write_files(out_dir, {"c.txt": "", "a.txt": "", "b.txt": ""})
    assert names(out_dir) == ["a.txt", "b.txt", "c.txt"]


def test_output_files_empty_dir(out_dir: Path) -> None:
    assert names(out_dir) == []


def test_output_files_skips_symlinks_to_files_and_dirs_outside(tmp_path: Path, out_dir: Path) -> None:
    secret_dir = tmp_path / "secret"
    write_files(secret_dir, {"shadow": "root:x", "inner/key": "k"})
    write_files(out_dir, {"real.txt": "ok"})
    (out_dir / "shadow-link").symlink_to(secret_dir / "shadow")
    (out_dir / "dir-link").symlink_to(secret_dir, target_is_directory=True)
    (out_dir / "dangling").symlink_to(tmp_path / "missing")

    assert names(out_dir) == ["real.txt"]


def test_output_files_skips_symlinks_to_files_inside_too(out_dir: Path) -> None:
    write_files(out_dir, {"real.txt": "ok"})
    (out_dir / "alias.txt").symlink_to(out_dir / "real.txt")
    assert names(out_dir) == ["real.txt"]


def test_output_files_skips_fifos(out_dir: Path) -> None:
    write_files(out_dir, {"real.txt": "ok"})
    os.mkfifo(out_dir / "pipe")
    assert names(out_dir) == ["real.txt"]


def test_output_files_through_a_symlinked_output_dir(tmp_path: Path, out_dir: Path) -> None:
    write_files(out_dir, {"sub/a.txt": "a"})
    link = tmp_path / "link-to-output"
    link.symlink_to(out_dir, target_is_directory=True)
    assert names(link) == ["sub/a.txt"]


# ---- stage_out ------------------------------------------------------------------------------


def test_stage_out_sends_every_file_to_every_accepting_output(out_dir: Path) -> None:
    write_files(out_dir, {"a.png": "A", "b.jpg": "B", "sub/c.png": "C"})
    store = MemoryStore()
    outputs = [
        output("results/all"),
        output("results/png", suffix=[".png"]),
        output("thumbs", provider="s3.mine", prefix=["sub/"]),
    ]

    stored = stage_out(out_dir, outputs, lambda name: store)

    assert sorted(stored_keys(stored)) == sorted(
        [
            "minio.default:results/all/a.png",
            "minio.default:results/all/b.jpg",
            "minio.default:results/all/sub/c.png",
            "minio.default:results/png/a.png",
            "minio.default:results/png/sub/c.png",
            "s3.mine:thumbs/sub/c.png",
        ]
    )
    assert store.objects[("results", "all/sub/c.png")] == b"C"
    assert store.objects[("thumbs", "sub/c.png")] == b"C"
    assert all(info.size == 1 and info.etag.startswith("etag-") for info in stored)


def test_stage_out_asks_for_each_output_provider_by_name(out_dir: Path) -> None:
    write_files(out_dir, {"a.txt": "A"})
    stores = {"minio.default": MemoryStore(), "s3.mine": MemoryStore()}
    stage_out(out_dir, [output("xbucket/out"), output("ybucket/out", provider="s3.mine")], stores.__getitem__)
    assert list(stores["minio.default"].objects) == [("xbucket", "out/a.txt")]
    assert list(stores["s3.mine"].objects) == [("ybucket", "out/a.txt")]


def test_stage_out_prefix_filter_applies_to_the_relative_path(out_dir: Path) -> None:
    write_files(out_dir, {"result-1.txt": "1", "sub/result-2.txt": "2"})
    store = MemoryStore()
    stored = stage_out(out_dir, [output("bkt/out", prefix=["result-"])], lambda _: store)
    assert stored_keys(stored) == ["minio.default:bkt/out/result-1.txt"]


def test_stage_out_whole_bucket_output_keys_are_the_relative_names(out_dir: Path) -> None:
    write_files(out_dir, {"a.txt": "A", "deep/b.txt": "B"})
    store = MemoryStore()
    stage_out(out_dir, [output("bucket-only", provider="webdav.d")], lambda _: store)
    assert set(store.objects) == {("bucket-only", "a.txt"), ("bucket-only", "deep/b.txt")}


def test_stage_out_with_no_files_or_no_outputs_stores_nothing(out_dir: Path) -> None:
    store = MemoryStore()
    assert stage_out(out_dir, [output("bkt/out")], lambda _: store) == []
    write_files(out_dir, {"a.txt": "A"})
    assert stage_out(out_dir, [], lambda _: store) == []
    assert store.uploads == []


def test_stage_out_error_keeps_what_was_stored_and_names_the_file(out_dir: Path) -> None:
    write_files(out_dir, {"a.txt": "A", "b.txt": "B", "c.txt": "C"})
    store = MemoryStore(fail_on={"out/b.txt"})

    with pytest.raises(StageOutError) as caught:
        stage_out(out_dir, [output("bucket/out")], lambda _: store)

    error = caught.value
    assert isinstance(error, StorageError)
    assert stored_keys(error.stored) == ["minio.default:bucket/out/a.txt"]
    assert "'b.txt'" in str(error)
    assert "bucket/out/b.txt" in str(error)
    assert "1 output(s) were stored" in str(error)
    assert isinstance(error.__cause__, StorageUnavailable)
    assert ("bucket", "out/c.txt") not in store.objects


def test_stage_out_unknown_provider_is_a_stage_out_error(out_dir: Path) -> None:
    write_files(out_dir, {"a.txt": "A"})

    def no_provider(name: str) -> StorageProvider:
        raise StorageError(f"storage provider {name!r} is not defined")

    with pytest.raises(StageOutError) as caught:
        stage_out(out_dir, [output("bkt/out", provider="s3.gone")], no_provider)
    assert caught.value.stored == []
    assert "s3.gone" in str(caught.value)


# ---- sync_response --------------------------------------------------------------------------


def test_sync_response_one_file_is_its_base64(out_dir: Path) -> None:
    write_files(out_dir, {"sub/only.bin": b"\x00\x01result"})
    assert base64.b64decode(sync_response(out_dir, b"logs")) == b"\x00\x01result"


def test_sync_response_several_files_is_base64_of_a_zip(out_dir: Path) -> None:
    files = {"a.txt": b"A", "sub/b.txt": b"B", "sub/deeper/c.bin": b"\x00C"}
    write_files(out_dir, files)

    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(sync_response(out_dir, b"logs"))))

    assert sorted(archive.namelist()) == sorted(files)
    assert {name: archive.read(name) for name in archive.namelist()} == files


def test_sync_response_without_files_is_the_script_output(out_dir: Path) -> None:
    assert sync_response(out_dir, b"script said hi\n") == b"script said hi\n"


def test_sync_response_ignores_symlinks(tmp_path: Path, out_dir: Path) -> None:
    write_files(tmp_path, {"secret": "s"})
    (out_dir / "link").symlink_to(tmp_path / "secret")
    assert sync_response(out_dir, b"output") == b"output"
