"""The Onedata provider against a fake Oneprovider: no Onedata server can run here.

`FakeOneprovider` is a real HTTP server on loopback (http.server in a thread) that answers the few
CDMI 1.1.1 calls the provider makes, the way the CDMI specification (SNIA ISO/IEC 17826) and
faas-supervisor's usage describe them, over files in a directory:

- `X-Auth-Token` must carry the token, else 401;
- PUT `/cdmi/<space>/<path>/` with `X-CDMI-Specification-Version` and `Content-Type:
  application/cdmi-container` creates a folder (201; 204 when it exists; 404 without its parent);
- a plain PUT `/cdmi/<space>/<path>` writes a file (201 new, 204 replaced; 404 without its parent);
- a plain GET reads a file; a CDMI GET (`X-CDMI-Specification-Version`) answers the object's CDMI
  JSON, only the fields the query names (`?objectID;metadata`, `?children:0-999;childrenrange`);
  children come back unsorted, folders ending in `/`;
- DELETE removes a file or a folder with everything in it (204; 404 when missing).

Every request is recorded, so tests can check the calls' shape as well as their effect.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from conveyor.errors import ObjectNotFound, StorageAuthError, StorageUnavailable
from conveyor.model.event import ObjectRef
from conveyor.storage import onedata
from conveyor.storage.onedata import OnedataProvider, OnedataSettings
from conveyor.storage.registry import build_provider

SPACE = "my-space"
TOKEN = "MDAxY2xvY2F0aW9uIG9uZXpvbmUK-test-token"
CDMI_HEADER = "X-CDMI-Specification-Version"


class FakeOneprovider(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _CdmiHandler)
        self.root = root
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"oneprovider_host": self.url, "token": TOKEN, "space": SPACE, **extra}


class _CdmiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body in one send: separate small writes meet delayed ACKs (40 ms each)
    server: FakeOneprovider

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the recorded requests say what happened."""

    # -- dispatch ---------------------------------------------------------------------------------

    def do_PUT(self) -> None:
        self._handle(self._put)

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_DELETE(self) -> None:
        self._handle(self._delete)

    def _handle(self, action: Any) -> None:
        parts = urlsplit(self.path)
        self.server.requests.append(
            {"method": self.command, "path": unquote(parts.path), "query": parts.query, "headers": dict(self.headers)}
        )
        if self.headers.get("X-Auth-Token") != TOKEN:
            self._discard_body()
            return self._answer(401, {"error": "invalid token"})
        space_root = f"/cdmi/{SPACE}/"
        path = unquote(parts.path)
        if not path.startswith(space_root):
            self._discard_body()
            return self._answer(404, {"error": "no such space"})
        relative = path[len(space_root) :]
        action(self.server.root / relative, relative.endswith("/") or not relative, parts.query)

    # -- the calls ----------------------------------------------------------------------------------

    def _put(self, target: Path, is_container: bool, _query: str) -> None:
        if not target.parent.is_dir():
            self._discard_body()
            return self._answer(404, {"error": "parent does not exist"})
        if is_container:
            if (
                self.headers.get(CDMI_HEADER) != "1.1.1"
                or self.headers.get("Content-Type") != "application/cdmi-container"
            ):
                return self._answer(400, {"error": "a container PUT needs the CDMI headers"})
            existed = target.is_dir()
            target.mkdir(exist_ok=True)
            return self._answer(204 if existed else 201, None if existed else self._container_json(target, ""))
        existed = target.exists()
        remaining = int(self.headers.get("Content-Length", "0"))
        with target.open("wb") as out:
            while remaining:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                remaining -= len(chunk)
        self._answer(204 if existed else 201, None)

    def _get(self, target: Path, is_container: bool, query: str) -> None:
        if not target.exists() or (is_container and not target.is_dir()):
            return self._answer(404, {"error": "not found"})
        if self.headers.get(CDMI_HEADER):
            return self._answer(200, self._cdmi_json(target, query))
        if target.is_dir():
            return self._answer(400, {"error": "a container has no value"})
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(target.stat().st_size))
        self.end_headers()
        with target.open("rb") as data:
            shutil.copyfileobj(data, self.wfile, 1 << 20)

    def _delete(self, target: Path, _is_container: bool, _query: str) -> None:
        if not target.exists():
            return self._answer(404, {"error": "not found"})
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        self._answer(204, None)

    # -- CDMI JSON ----------------------------------------------------------------------------------

    def _cdmi_json(self, target: Path, query: str) -> dict[str, Any]:
        if target.is_dir():
            return self._container_json(target, query)
        status = target.stat()
        whole = {
            "objectType": "application/cdmi-object",
            "objectID": f"{status.st_ino:032x}",
            "objectName": target.name,
            "metadata": {"cdmi_size": str(status.st_size), "cdmi_mtime": _iso(status.st_mtime_ns)},
            "valuetransferencoding": "base64",
            "value": "(not sent in these tests)",
        }
        return _select(whole, query)

    def _container_json(self, target: Path, query: str) -> dict[str, Any]:
        # Unsorted on purpose: CDMI promises no order, so the provider must sort.
        children = [e.name + ("/" if e.is_dir() else "") for e in os.scandir(target)]
        children.sort(key=lambda name: hashlib.md5(name.encode()).hexdigest())
        first, last = 0, len(children) - 1
        for field in query.split(";"):
            if field.startswith("children:"):
                first, last = (int(n) for n in field.removeprefix("children:").split("-"))
        page = children[first : last + 1]
        whole = {
            "objectType": "application/cdmi-container",
            "objectID": f"{target.stat().st_ino:032x}",
            "objectName": target.name + "/",
            "metadata": {"cdmi_mtime": _iso(target.stat().st_mtime_ns)},
            "children": page,
            "childrenrange": f"{first}-{first + len(page) - 1}" if page else "",
        }
        return _select(whole, query)

    def _answer(self, status: int, body: dict[str, Any] | None) -> None:
        payload = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/cdmi-object")
        self.send_header(CDMI_HEADER, "1.1.1")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _discard_body(self) -> None:
        remaining = int(self.headers.get("Content-Length", "0"))
        while remaining > 0:
            remaining -= len(self.rfile.read(min(remaining, 1 << 20)) or b"x" * remaining)


def _select(whole: dict[str, Any], query: str) -> dict[str, Any]:
    """CDMI's field selection: `?a;b;children:0-9` answers only those fields."""
    names = {field.partition(":")[0] for field in query.split(";") if field}
    return {k: v for k, v in whole.items() if k in names} if names else whole


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def oneprovider(tmp_path: Path) -> Iterator[FakeOneprovider]:
    root = tmp_path / "space"
    root.mkdir()
    server = FakeOneprovider(root)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def one(oneprovider: FakeOneprovider) -> Iterator[OnedataProvider]:
    provider = build_provider("onedata.test", oneprovider.settings())
    assert isinstance(provider, OnedataProvider)
    try:
        yield provider
    finally:
        provider.close()


def ref(text: str) -> ObjectRef:
    return ObjectRef.parse(text)


def test_a_file_goes_up_and_comes_back_through_cdmi(
    one: OnedataProvider, oneprovider: FakeOneprovider, tmp_path: Path
) -> None:
    assert one.ensure_bucket("results") is True
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(3 * 2**20 + 17))

    stored = one.upload(source, ref("results/a/b/in.bin"))
    fetched = one.download(ref("results/a/b/in.bin"), tmp_path / "out.bin")

    assert fetched.read_bytes() == source.read_bytes()
    assert (oneprovider.root / "results/a/b/in.bin").read_bytes() == source.read_bytes()
    info = one.stat(ref("results/a/b/in.bin"))
    assert info is not None and info.size == source.stat().st_size and info.etag == stored.etag
    assert info.last_modified is not None


def test_the_calls_have_the_shape_onedata_expects(one: OnedataProvider, oneprovider: FakeOneprovider) -> None:
    one.ensure_bucket("shape")
    one.put_bytes(ref("shape/x/y/file.txt"), b"hello")

    assert all(r["headers"].get("X-Auth-Token") == TOKEN for r in oneprovider.requests)
    folders = [r for r in oneprovider.requests if r["method"] == "PUT" and r["path"].endswith("/")]
    assert [r["path"] for r in folders] == [
        f"/cdmi/{SPACE}/shape/",
        f"/cdmi/{SPACE}/shape/x/",
        f"/cdmi/{SPACE}/shape/x/y/",
    ]
    assert {(r["headers"][CDMI_HEADER], r["headers"]["Content-Type"]) for r in folders} == {
        ("1.1.1", "application/cdmi-container")
    }
    upload = next(r for r in oneprovider.requests if r["path"] == f"/cdmi/{SPACE}/shape/x/y/file.txt")
    assert upload["method"] == "PUT" and CDMI_HEADER not in upload["headers"], "file bytes go as a plain PUT"
    stats = [r for r in oneprovider.requests if r["method"] == "GET"]
    assert stats and all("metadata" in r["query"] or "children" in r["query"] for r in stats), "never the value"


def test_parents_are_created_once_per_provider(one: OnedataProvider, oneprovider: FakeOneprovider) -> None:
    one.ensure_bucket("once")
    for name in ("a", "b", "c"):
        one.put_bytes(ref(f"once/deep/er/{name}.txt"), b"x")
    folder_puts = [r["path"] for r in oneprovider.requests if r["method"] == "PUT" and r["path"].endswith("/")]
    assert folder_puts.count(f"/cdmi/{SPACE}/once/deep/er/") == 1


def test_missing_objects(one: OnedataProvider, tmp_path: Path) -> None:
    one.ensure_bucket("gaps")
    assert one.stat(ref("gaps/missing.txt")) is None
    assert one.stat(ref("gaps/no/folder/file")) is None
    with pytest.raises(ObjectNotFound, match="missing"):
        one.download(ref("gaps/missing.txt"), tmp_path / "x")
    with pytest.raises(ObjectNotFound):
        list(one.list("no-such-bucket"))


def test_list_walks_folders_in_key_order_page_by_page(
    one: OnedataProvider, oneprovider: FakeOneprovider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onedata, "PAGE", 2)
    one.ensure_bucket("listing")
    keys = ["b.txt", "a/x.txt", "a-c.txt", "a/b/y.txt", "z/z/z.txt", "a.txt", "a b/c.txt", "a/b/a.txt", "ü.txt"]
    for key in keys:
        one.put_bytes(ref(f"listing/{key}"), key.encode())

    assert [i.ref.key for i in one.list("listing")] == sorted(keys)
    assert [i.ref.key for i in one.list("listing", "a/b")] == ["a/b/a.txt", "a/b/y.txt"]
    assert [i.ref.key for i in one.list("listing", "nothing/here/")] == []
    assert {i.ref.key: i.size for i in one.list("listing")} == {k: len(k.encode()) for k in keys}
    assert any("children:2-3" in r["query"] for r in oneprovider.requests), "a folder of more than one page"


def test_delete_and_buckets(one: OnedataProvider) -> None:
    assert one.ensure_bucket("tidy") is True
    assert one.ensure_bucket("tidy") is False
    one.put_bytes(ref("tidy/a/x.txt"), b"x")
    one.put_bytes(ref("tidy/a/y.txt"), b"y")

    one.delete(ref("tidy/a/x.txt"))
    one.delete(ref("tidy/a/x.txt"))
    one.delete(ref("tidy/a/"))  # not empty: stays, like an S3 folder marker

    assert [i.ref.key for i in one.list("tidy")] == ["a/y.txt"]
    assert one.list_buckets() == ["tidy"]
    one.delete_bucket("tidy")
    assert one.list_buckets() == []
    with pytest.raises(ObjectNotFound):
        one.delete_bucket("tidy")


def test_a_wrong_token_raises_storage_auth_error_without_showing_it(oneprovider: FakeOneprovider) -> None:
    intruder = OnedataProvider(OnedataSettings.model_validate(oneprovider.settings(token="stolen-or-expired")))
    with pytest.raises(StorageAuthError) as refused:
        intruder.put_bytes(ref("any/x.txt"), b"x")
    intruder.close()
    assert "stolen-or-expired" not in str(refused.value) and oneprovider.url in str(refused.value)


def test_an_unreachable_oneprovider_raises_storage_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = OnedataProvider(OnedataSettings(oneprovider_host=f"http://127.0.0.1:{port}", token=TOKEN, space=SPACE))
    with pytest.raises(StorageUnavailable, match=f"127.0.0.1:{port}"):
        dead.stat(ref("any/x.txt"))
    dead.close()


def test_a_bare_host_gets_https_as_faas_supervisor_builds_it() -> None:
    settings = OnedataSettings.model_validate(
        {"oneprovider_host": "oneprovider.example.org", "token": "t", "space": "sp"}
    )
    assert OnedataProvider(settings).url_for("b", "k/f.txt") == "https://oneprovider.example.org/cdmi/sp/b/k/f.txt"


def test_a_folder_removed_behind_its_back_is_created_again(one: OnedataProvider, oneprovider: FakeOneprovider) -> None:
    one.ensure_bucket("gone")
    one.put_bytes(ref("gone/sub/a.txt"), b"a")
    shutil.rmtree(oneprovider.root / "gone/sub")

    one.put_bytes(ref("gone/sub/b.txt"), b"b")

    assert [i.ref.key for i in one.list("gone")] == ["sub/b.txt"]
