"""`conveyor put/get/ls` on stores other than the platform's: `PROVIDER:bucket/path`, with the
provider's settings from an FDL file (`--fdl`) or from the config file's [providers] section."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.cli import Cli, cli_environment
from tests.support.webdav import WebdavServer, run_webdav

pytestmark = pytest.mark.e2e


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[WebdavServer]:
    with run_webdav(tmp_path / "dav") as server:
        yield server


def test_put_ls_and_get_on_a_webdav_store_named_in_an_fdl(dav: WebdavServer, tmp_path: Path) -> None:
    fdl = tmp_path / "workflow.yaml"
    fdl.write_text(
        yaml.safe_dump({"functions": {"oscar": []}, "storage_providers": {"webdav": {"dcache": dav.settings()}}})
    )
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    cli = Cli(cli_environment(tmp_path), tmp_path)  # no platform runs: other stores need none

    cli("put", "--fdl", str(fdl), str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "webdav.dcache:results/in/")
    listed = json.loads(cli("ls", "--fdl", str(fdl), "webdav.dcache:results/in/", "--json").stdout)
    cli("get", "--fdl", str(fdl), "webdav.dcache:results/in/", str(tmp_path / "back"))

    assert sorted(o["key"] for o in listed) == ["in/a.txt", "in/b.txt"]
    assert (tmp_path / "back" / "b.txt").read_text() == "beta"
    assert "results" in json.loads(cli("ls", "--fdl", str(fdl), "webdav.dcache:", "--json").stdout)


def test_a_local_store_from_the_config_file_and_a_missing_one_explained(tmp_path: Path) -> None:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    config = tmp_path / "conveyor.toml"
    config.write_text(f'[providers.local.shelf]\npath = "{shelf}"\n')
    cli = Cli(cli_environment(tmp_path, CONVEYOR_CONFIG=str(config)), tmp_path)
    (tmp_path / "c.txt").write_text("gamma")

    cli("put", str(tmp_path / "c.txt"), "local.shelf:archive/2026/")
    missing = cli("ls", "s3.nowhere:bucket", check=False)

    assert (shelf / "archive" / "2026" / "c.txt").read_text() == "gamma"
    assert missing.returncode == 2 and "s3.nowhere" in missing.stderr
