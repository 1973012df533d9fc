"""Results that leave the platform: a service triggered on the embedded store writes its outputs to a
WebDAV server (a real WsgiDAV) and to a local directory, each output with its own filters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import DeployError
from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from conveyor.storage.webdav import WebdavProvider, WebdavSettings
from tests.conftest import PlatformFactory
from tests.support.platform import put_text, service, wait_for_jobs
from tests.support.webdav import WebdavServer, run_webdav

pytestmark = pytest.mark.e2e

SCRIPT = """
name=$(basename "$INPUT_FILE_PATH" .txt)
cd "$TMP_OUTPUT_DIR"
cp "$INPUT_FILE_PATH" "keep-$name.txt"
echo "a log" > "keep-$name.log"
echo "not kept locally" > "drop-$name.txt"
mkdir -p sub && echo "nested" > "sub/keep-$name.txt"
"""


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[WebdavServer]:
    with run_webdav(tmp_path / "dav") as server:
        yield server


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_outputs_land_on_webdav_and_in_a_local_directory_through_their_filters(
    make_platform: PlatformFactory, dav: WebdavServer, tmp_path: Path
) -> None:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    platform: Platform = make_platform()
    svc = service(
        "exporter",
        SCRIPT,
        ["inbox/in"],
        [
            {"storage_provider": "webdav.dcache", "path": "results/dav", "suffix": [".txt"]},
            {"storage_provider": "local.shelf", "path": "archive/out", "prefix": ["keep-"]},
        ],
        storage_providers={"webdav": {"dcache": dav.settings()}, "local": {"shelf": {"path": str(shelf)}}},
    )
    platform.catalog.apply([svc])
    assert (dav.root / "results/dav").is_dir(), "apply prepares the WebDAV folder before any job runs"
    assert (shelf / "archive/out").is_dir()

    put_text(platform, "inbox/in/photo.txt", "the input")
    job = wait_for_jobs(platform, "exporter", 1)[0]

    assert job.state == JobState.SUCCEEDED, job.message
    assert files_under(dav.root / "results") == ["dav/drop-photo.txt", "dav/keep-photo.txt", "dav/sub/keep-photo.txt"]
    assert (dav.root / "results/dav/keep-photo.txt").read_text() == "the input"
    assert files_under(shelf / "archive") == ["out/keep-photo.log", "out/keep-photo.txt"]
    assert (shelf / "archive/out/keep-photo.txt").read_text() == "the input"
    reader = WebdavProvider(WebdavSettings.model_validate(dav.settings()))
    assert [i.ref.key for i in reader.list("results", "dav/")] == [
        "dav/drop-photo.txt",
        "dav/keep-photo.txt",
        "dav/sub/keep-photo.txt",
    ]
    reader.close()


def test_a_webdav_output_with_a_wrong_password_is_refused_at_apply(
    make_platform: PlatformFactory, dav: WebdavServer
) -> None:
    platform: Platform = make_platform()
    svc = service(
        "refused",
        SCRIPT,
        ["inbox2/in"],
        [{"storage_provider": "webdav.dcache", "path": "results/dav"}],
        storage_providers={"webdav": {"dcache": dav.settings(password="not-the-password")}},
    )

    with pytest.raises(DeployError, match="401") as refused:
        platform.catalog.apply([svc])

    assert "not-the-password" not in str(refused.value)
    assert dav.url in str(refused.value)
    assert [s.name for s in platform.ledger.list_services()] == []


def test_an_output_missing_a_setting_names_the_provider_and_the_key(make_platform: PlatformFactory) -> None:
    platform: Platform = make_platform()
    svc = service(
        "incomplete",
        SCRIPT,
        ["inbox3/in"],
        [{"storage_provider": "webdav.dcache", "path": "results/dav"}],
        storage_providers={"webdav": {"dcache": {"hostname": "dcache.example.org", "login": "me"}}},
    )

    with pytest.raises(DeployError, match=r"webdav\.dcache.*password: Field required"):
        platform.catalog.apply([svc])
