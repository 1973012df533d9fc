"""Provenance of objects a real chain of services wrote: through the API and `conveyor trace`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.cli import cli_for
from tests.support.platform import put_text, service, wait_for_jobs

pytestmark = pytest.mark.e2e

UPPER = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
EXCLAIM = 'sed "s/$/!/" "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'


@pytest.fixture
def chained(make_platform: PlatformFactory) -> Platform:
    """upper: chain/in → chain/mid, exclaim: chain/mid → chain/out, run on one uploaded file."""
    platform = make_platform()
    platform.catalog.apply(
        [
            service("upper", UPPER, ["chain/in"], ["chain/mid"]),
            service("exclaim", EXCLAIM, ["chain/mid"], ["chain/out"]),
        ]
    )
    put_text(platform, "chain/in/a.txt", "hello")
    wait_for_jobs(platform, "upper", 1)
    wait_for_jobs(platform, "exclaim", 1)
    return platform


def get_trace(platform: Platform, path: str) -> httpx.Response:
    auth = (platform.credentials.admin_user, platform.credentials.admin_password)
    return httpx.get(f"{platform.api_url}/conveyor/v1/trace", params={"path": path}, auth=auth, timeout=30)


def test_the_middle_object_shows_its_writer_from_the_upload_and_its_reader(chained: Platform) -> None:
    [upper] = [r for _, r in chained.ledger.list_jobs("upper")]
    [exclaim] = [r for _, r in chained.ledger.list_jobs("exclaim")]

    answer = get_trace(chained, "chain/mid/a.txt")

    assert answer.status_code == 200, answer.text
    [version] = answer.json()["versions"]
    assert version["etag"] == exclaim.trigger.etag and version["size"] == len("HELLO")
    writer = version["produced_by"]
    assert (writer["job"]["job_id"], writer["job"]["service"], writer["job"]["state"]) == (
        upper.job_id,
        "upper",
        "succeeded",
    )
    assert writer["trigger"]["ref"]["key"] == "in/a.txt"
    assert writer["trigger"]["etag"] == upper.trigger.etag
    assert writer["trigger"]["produced_by"] is None, "the user's upload is the root"
    [reader] = version["consumed_by"]
    assert (reader["job"]["job_id"], reader["job"]["state"], reader["job"]["depth"]) == (
        exclaim.job_id,
        "succeeded",
        1,
    )
    assert [(o["ref"]["bucket"], o["ref"]["key"]) for o in reader["outputs"]] == [("chain", "out/a.txt")]
    assert reader["outputs"][0]["consumed_by"] == []


def test_an_object_the_ledger_never_saw_is_404_and_a_folder_is_400(chained: Platform) -> None:
    assert get_trace(chained, "chain/mid/never.txt").status_code == 404
    assert get_trace(chained, "chain/mid/").status_code == 400
    unauthenticated = httpx.get(f"{chained.api_url}/conveyor/v1/trace", params={"path": "chain/mid/a.txt"})
    assert unauthenticated.status_code == 401


def test_conveyor_trace_prints_the_provenance_as_json_and_as_a_tree(chained: Platform, tmp_path: Path) -> None:
    json_answer = conveyor(chained, tmp_path, "trace", "chain/mid/a.txt", "--json")
    tree = conveyor(chained, tmp_path, "trace", "chain/out/a.txt")

    [version] = json.loads(json_answer.stdout)["versions"]
    assert version["produced_by"]["job"]["service"] == "upper"
    assert version["consumed_by"][0]["outputs"][0]["ref"]["key"] == "out/a.txt"
    lines = [line.strip(" │├└─") for line in tree.stdout.splitlines()]
    assert lines[0] == "chain/out/a.txt" and lines[1].startswith("version ")
    assert lines[2].startswith("← written by exclaim-") and lines[2].endswith("(exclaim, succeeded)")
    assert lines[3] == "← for chain/mid/a.txt"
    assert lines[4].startswith("← written by upper-") and lines[4].endswith("(upper, succeeded)")
    assert lines[5:] == ["← for chain/in/a.txt", "← put by a user"]


def test_conveyor_trace_of_an_unknown_object_exits_2(chained: Platform, tmp_path: Path) -> None:
    done = conveyor(chained, tmp_path, "trace", "chain/in/missing.txt", check=False)

    assert done.returncode == 2
    assert "knows nothing of chain/in/missing.txt" in done.stderr


def conveyor(platform: Platform, tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, pointed at the platform through the environment."""
    cwd = tmp_path / "cli"
    cwd.mkdir(exist_ok=True)
    return cli_for(platform, cwd)(*args, check=check, timeout=60)
