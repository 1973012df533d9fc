"""A workflow across three stores: Ceph RGW → the embedded SeaweedFS → a WebDAV server.

The first service is triggered by RGW's SNS push (a file put in Ceph) and writes to the embedded
store; its output triggers the second service through SeaweedFS's webhook, which writes to a
WebDAV server (a real WsgiDAV). Each hop uses the store's own notifications; the reconciler's
rounds are off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.model.job import JobState
from conveyor.model.service import Service
from tests.conftest import PlatformFactory
from tests.support.ceph import CephRgw, run_ceph_rgw
from tests.support.platform import read_text, wait_for_jobs
from tests.support.webdav import WebdavServer, run_webdav

pytestmark = pytest.mark.e2e

UPPER = 'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
EXCLAIM = 'sed "s/$/!/" "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
NO_RECONCILER = {"reconcile_interval_s": 0}


@pytest.fixture(scope="module")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRgw]:
    with run_ceph_rgw(tmp_path_factory.mktemp("ceph")) as rgw:
        yield rgw


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[WebdavServer]:
    with run_webdav(tmp_path / "dav") as server:
        yield server


def workflow(ceph: CephRgw, dav: WebdavServer) -> list[Service]:
    providers = {"s3": {"ceph": ceph.settings(events="sns")}, "webdav": {"dav": dav.settings()}}
    first = {
        "name": "ceph-to-seaweed",
        "image": "-",
        "script": UPPER,
        "input": [{"storage_provider": "s3.ceph", "path": "xstore/in"}],
        "output": [{"storage_provider": "minio.default", "path": "xstore/mid"}],
        "storage_providers": providers,
    }
    second = {
        "name": "seaweed-to-dav",
        "image": "-",
        "script": EXCLAIM,
        "input": [{"storage_provider": "minio.default", "path": "xstore/mid"}],
        "output": [{"storage_provider": "webdav.dav", "path": "results/out"}],
        "storage_providers": providers,
    }
    return [Service.model_validate(first), Service.model_validate(second)]


def test_a_file_put_in_ceph_goes_through_seaweedfs_to_webdav(
    make_platform: PlatformFactory, ceph: CephRgw, dav: WebdavServer, tmp_path: Path
) -> None:
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply(workflow(ceph, dav))
    s3: Any = ceph.client()

    s3.put_object(Bucket="xstore", Key="in/greeting one.txt", Body=b"hello from ceph\n")

    first = wait_for_jobs(platform, "ceph-to-seaweed", 1)[0]
    second = wait_for_jobs(platform, "seaweed-to-dav", 1)[0]
    assert (first.state, second.state) == (JobState.SUCCEEDED, JobState.SUCCEEDED), (first.message, second.message)
    assert first.trigger is not None and first.trigger.ref.provider == "s3.ceph"
    assert read_text(platform, "xstore/mid/greeting one.txt", tmp_path) == "HELLO FROM CEPH\n"
    assert second.trigger is not None and second.trigger.ref.key == "mid/greeting one.txt"
    assert (second.parent_job, second.depth) == (first.job_id, 1), "the embedded store passes the lineage on"
    assert (dav.root / "results/out/greeting one.txt").read_text() == "HELLO FROM CEPH!\n"

    for name in ("ceph-to-seaweed", "seaweed-to-dav"):
        platform.catalog.delete(name)
    assert s3.get_bucket_notification_configuration(Bucket="xstore").get("TopicConfigurations", []) == []
    s3.close()
