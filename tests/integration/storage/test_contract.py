"""The storage contract, one suite for every provider: S3 (a real SeaweedFS), WebDAV (a real WsgiDAV
server) and a local directory. Each provider is built through the registry from FDL settings, as a
service's outputs are. Onedata has its own file (no real server can run here: test_onedata.py).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.errors import ObjectNotFound, StorageAuthError, StorageError, StorageUnavailable, UnsafeKeyError
from conveyor.model.event import ObjectRef
from conveyor.model.kinds import PROVIDER_KINDS
from conveyor.storage.base import StorageProvider
from conveyor.storage.embedded import EmbeddedSeaweed
from conveyor.storage.local import LocalProvider, LocalSettings
from conveyor.storage.registry import build_provider
from conveyor.storage.s3 import S3Credentials
from conveyor.storage.seaweedfs import FilerReadS3Provider
from conveyor.storage.webdav import WebdavProvider, WebdavSettings
from tests.support.webdav import WebdavServer, run_webdav

Factory = Callable[[], StorageProvider]


@dataclass
class Store:
    """A provider under test, and how to build it with wrong credentials or a dead endpoint."""

    provider: StorageProvider
    wrong_credentials: Factory | None = None
    unreachable: Factory | None = None
    secret: str = ""
    """What must never appear in an error message."""


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def webdav_server(tmp_path: Path) -> Iterator[WebdavServer]:
    with run_webdav(tmp_path / "dav") as server:
        yield server


def s3_store(request: pytest.FixtureRequest) -> Store:
    seaweedfs: EmbeddedSeaweed = request.getfixturevalue("seaweedfs")

    def build(endpoint: str = seaweedfs.s3_endpoint, secret: str = "testsecret") -> StorageProvider:
        return build_provider("s3.test", {"endpoint": endpoint, "access_key": "testkey", "secret_key": secret})

    return Store(
        provider=build(),
        wrong_credentials=lambda: build(secret="not-the-secret"),
        unreachable=lambda: build(endpoint=f"http://127.0.0.1:{closed_port()}"),
        secret="not-the-secret",
    )


def webdav_store(request: pytest.FixtureRequest) -> Store:
    server: WebdavServer = request.getfixturevalue("webdav_server")
    return Store(
        provider=build_provider("webdav.test", server.settings()),
        wrong_credentials=lambda: build_provider("webdav.test", server.settings(password="not-the-password")),
        unreachable=lambda: build_provider(
            "webdav.test", server.settings(hostname=f"http://127.0.0.1:{closed_port()}")
        ),
        secret="not-the-password",
    )


def local_store(request: pytest.FixtureRequest) -> Store:
    root: Path = request.getfixturevalue("tmp_path") / "local-store"
    root.mkdir()
    return Store(provider=build_provider("local.test", {"path": str(root)}))


def own_store(request: pytest.FixtureRequest) -> Store:
    """The platform's own store: S3, with reads through the filer."""
    seaweedfs: EmbeddedSeaweed = request.getfixturevalue("seaweedfs")
    credentials = S3Credentials(endpoint=seaweedfs.s3_endpoint, access_key="testkey", secret_key="testsecret")
    return Store(provider=FilerReadS3Provider(credentials, filer_url=seaweedfs.filer_url))


STORES = {"s3": s3_store, "seaweedfs-filer": own_store, "webdav": webdav_store, "local": local_store}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    built = STORES[request.param](request)
    try:
        yield built
    finally:
        built.provider.close()


@pytest.fixture(params=["s3", "webdav"])
def remote_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    built = STORES[request.param](request)
    try:
        yield built
    finally:
        built.provider.close()


@pytest.fixture
def provider(store: Store) -> StorageProvider:
    return store.provider


def ref(text: str) -> ObjectRef:
    return ObjectRef.parse(text)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the contract -------------------------------------------------------------------------------------


def test_put_and_get_round_trip(provider: StorageProvider, tmp_path: Path) -> None:
    provider.ensure_bucket("round")
    data = os.urandom(100_000)

    stored = provider.upload(write(tmp_path / "in.bin", data), ref("round/in.bin"))
    fetched = provider.download(ref("round/in.bin"), tmp_path / "out.bin")
    small = provider.put_bytes(ref("round/small.txt"), b"hello")

    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(data).digest()
    info = provider.stat(ref("round/in.bin"))
    assert info is not None and info.size == 100_000
    assert stored.etag and info.etag == stored.etag, "the etag upload returns is the one stat sees"
    assert provider.download(ref("round/small.txt"), tmp_path / "small").read_bytes() == b"hello"
    assert small.size == 5


def test_an_upload_replaces_the_object_and_changes_its_etag(provider: StorageProvider, tmp_path: Path) -> None:
    provider.ensure_bucket("again")
    first = provider.upload(write(tmp_path / "a", b"first version"), ref("again/x.txt"))
    second = provider.upload(write(tmp_path / "b", b"the second, longer version"), ref("again/x.txt"))

    assert first.etag != second.etag
    assert provider.download(ref("again/x.txt"), tmp_path / "c").read_bytes() == b"the second, longer version"
    assert [i.ref.key for i in provider.list("again")] == ["x.txt"]


def test_upload_with_nested_keys_creates_the_parents(provider: StorageProvider, tmp_path: Path) -> None:
    provider.ensure_bucket("nested")

    provider.upload(write(tmp_path / "f", b"deep"), ref("nested/a/b/c/file.txt"))
    provider.upload(write(tmp_path / "g", b"deeper"), ref("nested/a/b/c/d/other.txt"))

    assert provider.download(ref("nested/a/b/c/file.txt"), tmp_path / "back").read_bytes() == b"deep"
    assert [i.ref.key for i in provider.list("nested")] == ["a/b/c/d/other.txt", "a/b/c/file.txt"]


def test_concurrent_uploads_into_one_new_folder_all_land(provider: StorageProvider, tmp_path: Path) -> None:
    provider.ensure_bucket("racing")
    source = write(tmp_path / "f", b"same parent")

    def upload(n: int) -> None:
        provider.upload(source, ref(f"racing/new/{n % 3}/file-{n}.txt"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, range(24)))

    assert len(list(provider.list("racing"))) == 24


def test_webdav_clients_racing_to_create_a_folder_all_succeed(webdav_server: WebdavServer, tmp_path: Path) -> None:
    """Separate clients (processes, in real life) share no lock: the loser of a MKCOL race gets a 500
    from some servers, and must see that the folder now exists."""
    clients = [build_provider("webdav.test", webdav_server.settings()) for _ in range(6)]
    clients[0].ensure_bucket("racing")
    source = write(tmp_path / "f", b"same parent")
    try:
        for round_ in range(5):
            keys = [ref(f"racing/r{round_}/a/b/{n}.txt") for n in range(len(clients))]
            with ThreadPoolExecutor(len(clients)) as pool:
                list(pool.map(lambda client, key: client.upload(source, key), clients, keys))
        assert len(list(clients[0].list("racing"))) == 5 * len(clients)
    finally:
        for client in clients:
            client.close()


def test_stat_of_a_missing_object_is_none(provider: StorageProvider) -> None:
    provider.ensure_bucket("stats")
    assert provider.stat(ref("stats/missing.txt")) is None
    assert provider.stat(ref("stats/no/such/folder/file")) is None


def test_download_of_a_missing_object_raises_object_not_found(provider: StorageProvider, tmp_path: Path) -> None:
    provider.ensure_bucket("gets")
    with pytest.raises(ObjectNotFound, match="missing"):
        provider.download(ref("gets/missing.bin"), tmp_path / "x")


def test_list_gives_nested_keys_in_key_order(provider: StorageProvider) -> None:
    provider.ensure_bucket("listing")
    keys = ["b.txt", "a/x.txt", "a/b/y.txt", "z/z/z.txt", "a0.txt", "a/b/a.txt", "ü.txt", "c/d.txt"]
    for key in keys:
        provider.put_bytes(ref(f"listing/{key}"), key.encode())

    def listed(prefix: str = "") -> list[str]:
        return [info.ref.key for info in provider.list("listing", prefix)]

    assert listed() == sorted(keys)
    assert listed("a/") == ["a/b/a.txt", "a/b/y.txt", "a/x.txt"]
    assert listed("a/b") == ["a/b/a.txt", "a/b/y.txt"]
    assert listed("a") == ["a/b/a.txt", "a/b/y.txt", "a/x.txt", "a0.txt"]
    assert listed("nothing/here/") == []
    sizes = {info.ref.key: info.size for info in provider.list("listing")}
    assert sizes == {key: len(key.encode()) for key in keys}


def test_keys_that_sort_around_slash_are_each_listed_once(provider: StorageProvider) -> None:
    """` `, `-`, `.` and `+` sort before `/`: S3 lists `a-c.txt` before `a/x.txt`, SeaweedFS lists
    folder by folder (`a/x.txt` first). The contract is every object once; order is the store's."""
    provider.ensure_bucket("strict")
    keys = ["a/x.txt", "a-c.txt", "a.txt", "a b/c.txt", "a/b/y.txt", "a+/z.txt"]
    for key in keys:
        provider.put_bytes(ref(f"strict/{key}"), b"x")

    listed = [info.ref.key for info in provider.list("strict")]

    assert sorted(listed) == sorted(keys)


def test_list_of_a_missing_bucket_raises_object_not_found(provider: StorageProvider) -> None:
    with pytest.raises(ObjectNotFound):
        list(provider.list("no-such-bucket"))


def test_delete_is_idempotent(provider: StorageProvider) -> None:
    provider.ensure_bucket("deletes")
    provider.put_bytes(ref("deletes/a/x.txt"), b"x")
    provider.put_bytes(ref("deletes/a/y.txt"), b"y")

    provider.delete(ref("deletes/a/x.txt"))
    provider.delete(ref("deletes/a/x.txt"))
    provider.delete(ref("deletes/never/was.txt"))

    assert provider.stat(ref("deletes/a/x.txt")) is None
    assert [i.ref.key for i in provider.list("deletes")] == ["a/y.txt"]


def test_ensure_bucket_is_idempotent(provider: StorageProvider) -> None:
    assert provider.ensure_bucket("idem") is True
    assert provider.ensure_bucket("idem") is False
    provider.ensure_folder("idem", "in/deep")
    provider.ensure_folder("idem", "in/deep")

    assert "idem" in provider.list_buckets()
    assert provider.stat(ref("idem/in/deep/")) is not None
    assert [i.ref.key for i in provider.list("idem") if not i.ref.key.endswith("/")] == []


def test_delete_bucket_removes_it_with_everything_in_it(provider: StorageProvider) -> None:
    provider.ensure_bucket("doomed")
    provider.put_bytes(ref("doomed/a/b.txt"), b"b")

    provider.delete_bucket("doomed")

    assert "doomed" not in provider.list_buckets()
    with pytest.raises(ObjectNotFound):
        provider.delete_bucket("doomed")


def test_wrong_credentials_raise_storage_auth_error(remote_store: Store) -> None:
    assert remote_store.wrong_credentials is not None
    remote_store.provider.ensure_bucket("guarded")
    intruder = remote_store.wrong_credentials()
    try:
        with pytest.raises(StorageAuthError) as refused:
            intruder.put_bytes(ref("guarded/x.txt"), b"x")
        with pytest.raises(StorageAuthError):
            intruder.download(ref("guarded/x.txt"), Path(os.devnull))
    finally:
        intruder.close()
    assert remote_store.secret not in str(refused.value)


def test_an_unreachable_endpoint_raises_storage_unavailable(remote_store: Store, tmp_path: Path) -> None:
    assert remote_store.unreachable is not None
    dead = remote_store.unreachable()
    try:
        with pytest.raises(StorageUnavailable, match=r"127\.0\.0\.1"):
            dead.upload(write(tmp_path / "x", b"x"), ref("anything/x.txt"))
        with pytest.raises(StorageUnavailable):
            dead.stat(ref("anything/x.txt"))
    finally:
        dead.close()


# -- building providers from FDL settings -----------------------------------------------------------


def test_every_provider_kind_is_built_by_the_registry(tmp_path: Path) -> None:
    settings = {
        "minio": {"endpoint": "http://127.0.0.1:9000"},
        "s3": {},
        "webdav": {"hostname": "dcache.example.org:2880", "login": "me", "password": "pw"},
        "onedata": {"oneprovider_host": "one.example.org", "token": "t", "space": "sp"},
        "local": {"path": str(tmp_path)},
    }
    built = {kind: build_provider(f"{kind}.x", settings[kind]) for kind in PROVIDER_KINDS}
    assert {kind: provider.kind for kind, provider in built.items()} == {
        "minio": "s3",
        "s3": "s3",
        "webdav": "webdav",
        "onedata": "onedata",
        "local": "local",
    }


def test_missing_settings_name_the_provider_and_the_key() -> None:
    with pytest.raises(StorageError, match=r"'webdav\.dcache'.*password: Field required"):
        build_provider("webdav.dcache", {"hostname": "dcache.example.org", "login": "me"})
    with pytest.raises(StorageError, match=r"'onedata\.one'.*space: Field required"):
        build_provider("onedata.one", {"oneprovider_host": "h", "token": "secret-token"})
    with pytest.raises(StorageError, match=r"'local\.out'.*path"):
        build_provider("local.out", {"path": "relative/dir"})
    with pytest.raises(StorageError, match="did you mean 'webdav'"):
        build_provider("webdab.x", {})


def test_settings_errors_never_show_secrets() -> None:
    with pytest.raises(StorageError) as refused:
        build_provider("webdav.d", {"hostname": "", "login": "me", "password": "hunter2"})
    assert "hunter2" not in str(refused.value) and refused.value.__cause__ is None


# -- what only some providers have --------------------------------------------------------------------


def test_webdav_prepends_https_to_a_bare_hostname_and_keeps_a_full_url() -> None:
    bare = WebdavSettings.model_validate({"hostname": "dcache.example.org:2880", "login": "u", "password": "p"})
    full = WebdavSettings.model_validate(
        {"hostname": "http://127.0.0.1:8080/", "login": "u", "password": "p", "path_prefix": "/pnfs/data/"}
    )
    assert WebdavProvider(bare).url_for("b", "k/x y.txt") == "https://dcache.example.org:2880/b/k/x%20y.txt"
    assert WebdavProvider(full).url_for("b", "", collection=True) == "http://127.0.0.1:8080/pnfs/data/b/"
    with pytest.raises(ValueError, match="credentials"):
        WebdavSettings.model_validate({"hostname": "https://me:pw@dav.example.org", "login": "u", "password": "p"})


def test_webdav_follows_a_dcache_door_that_redirects_reads_and_writes(
    webdav_server: WebdavServer, tmp_path: Path
) -> None:
    door = WebdavProvider(WebdavSettings.model_validate(webdav_server.settings(path_prefix="door")))
    door.ensure_bucket("pool")
    data = os.urandom(3 * 2**20)

    stored = door.upload(write(tmp_path / "in", data), ref("pool/sub/file.bin"))

    assert (webdav_server.root / "pool/sub/file.bin").read_bytes() == data
    assert door.download(ref("pool/sub/file.bin"), tmp_path / "out").read_bytes() == data
    assert door.stat(ref("pool/sub/file.bin")).etag == stored.etag
    door.close()


def test_webdav_recreates_a_parent_folder_removed_behind_its_back(webdav_server: WebdavServer, tmp_path: Path) -> None:
    dav = WebdavProvider(WebdavSettings.model_validate(webdav_server.settings()))
    dav.ensure_bucket("gone")
    dav.put_bytes(ref("gone/sub/a.txt"), b"a")
    for path in sorted((webdav_server.root / "gone/sub").iterdir()):
        path.unlink()
    (webdav_server.root / "gone/sub").rmdir()

    dav.put_bytes(ref("gone/sub/b.txt"), b"b")

    assert [i.ref.key for i in dav.list("gone")] == ["sub/b.txt"]
    dav.close()


@pytest.mark.parametrize(
    "key",
    ["../outside.txt", "a/../../outside.txt", "/etc/passwd", "a/./b", "a//b", "nul\x00byte"],
)
def test_local_refuses_keys_that_escape(tmp_path: Path, key: str) -> None:
    local = LocalProvider(LocalSettings(path=tmp_path))
    local.ensure_bucket("jail")
    with pytest.raises(UnsafeKeyError):
        local.put_bytes(ObjectRef(bucket="jail", key=key), b"x")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize("key", ["../outside.txt", "a/../../outside.txt", "/abs", "a/./b", "a//b"])
def test_webdav_refuses_keys_that_would_climb_out_of_the_bucket(key: str) -> None:
    dav = WebdavProvider(WebdavSettings(hostname="http://127.0.0.1:9", login="u", password="p"))
    with pytest.raises(UnsafeKeyError):
        dav.put_bytes(ObjectRef(bucket="jail", key=key), b"x")  # refused before any request


def test_local_refuses_a_symlink_that_points_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    local = LocalProvider(LocalSettings(path=root))
    root.mkdir()
    local.ensure_bucket("jail")
    (root / "jail/link").symlink_to(outside)

    with pytest.raises(UnsafeKeyError, match="outside"):
        local.put_bytes(ObjectRef(bucket="jail", key="link/x.txt"), b"x")
    assert list(outside.iterdir()) == []


def test_local_uploads_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    local = LocalProvider(LocalSettings(path=tmp_path))
    local.ensure_bucket("atomic")
    data = os.urandom(5 * 2**20)

    info = local.upload(write(tmp_path / "in.bin", data), ObjectRef(bucket="atomic", key="o/out.bin"))

    assert info.etag == hashlib.md5(data).hexdigest()
    assert sorted(p.name for p in (tmp_path / "atomic/o").iterdir()) == ["out.bin"]
    (tmp_path / "atomic/o/out.bin").write_bytes(b"edited by hand")
    assert local.stat(ObjectRef(bucket="atomic", key="o/out.bin")).etag == hashlib.md5(b"edited by hand").hexdigest()


def test_local_needs_its_directory_to_exist(tmp_path: Path) -> None:
    local = LocalProvider(LocalSettings(path=tmp_path / "not-mounted"))
    with pytest.raises(StorageUnavailable, match="not-mounted"):
        local.ensure_bucket("x")
    assert not (tmp_path / "not-mounted").exists()


def test_the_own_store_reads_through_the_filer_and_falls_back_to_s3_for_what_is_not_a_file(
    seaweedfs: EmbeddedSeaweed, tmp_path: Path
) -> None:
    right = S3Credentials(endpoint=seaweedfs.s3_endpoint, access_key="testkey", secret_key="testsecret")
    writer = FilerReadS3Provider(right, filer_url=seaweedfs.filer_url)
    # Wrong S3 keys: a read that succeeds cannot have gone through the S3 gateway.
    reader = FilerReadS3Provider(right.model_copy(update={"secret_key": "wrong"}), filer_url=seaweedfs.filer_url)
    try:
        writer.ensure_bucket("filer")
        writer.put_bytes(ref("filer/odd name/ü?#%.txt"), b"through the filer")
        writer.put_bytes(ref("filer/folder/inside.txt"), b"x")

        fetched = reader.download(ref("filer/odd name/ü?#%.txt"), tmp_path / "back")

        assert fetched.read_bytes() == b"through the filer"
        with pytest.raises(ObjectNotFound):  # a folder: the filer lists it, S3 has no such key
            writer.download(ref("filer/folder"), tmp_path / "folder")
        with pytest.raises(ObjectNotFound):
            writer.download(ref("filer/missing.txt"), tmp_path / "missing")
    finally:
        writer.close()
        reader.close()
