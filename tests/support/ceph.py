"""A real Ceph RGW for tests: scripts/ceph-rgw-up.sh in a private directory, always stopped after.

Usage from a module-scoped fixture (a cluster takes ~12 s to start, so modules share one)::

    @pytest.fixture(scope="module")
    def ceph(tmp_path_factory):
        with run_ceph_rgw(tmp_path_factory.mktemp("ceph")) as rgw:
            yield rgw

The daemons fork away from the test process: if pytest itself is killed, they outlive it and
`scripts/ceph-rgw-down.sh DIR` stops them.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
START_TIMEOUT_S = 180.0
READY_TIMEOUT_S = 60.0
INSTALL_HINT = "run scripts/install-system-deps.sh as root to install Ceph (radosgw, ceph-mon, ceph-osd)"
_PROBE_BUCKET = "conveyor-probe"
# Admin sockets live in DIR/run and unix socket paths must fit in 108 bytes.
_MAX_DIR_LEN = 60
_LOG_TAIL_LINES = 30


class CephError(RuntimeError):
    """Ceph is missing or did not become ready; the message carries the end of its logs."""


@dataclass
class CephRgw:
    endpoint: str
    access_key: str
    secret_key: str
    directory: Path
    timings: dict[str, float] = field(default_factory=dict)
    """"start_s": the script; "ready_s": until a PUT and a GET worked (pools created)."""

    def settings(self, **extra: Any) -> dict[str, Any]:
        """`storage_providers.s3.<id>` for this gateway."""
        return {"endpoint": self.endpoint, "access_key": self.access_key, "secret_key": self.secret_key, **extra}

    def client(self, service: str = "s3") -> Any:
        """A boto3 client (`s3` or `sns`) for this gateway; the caller closes it."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}),
        )


@contextlib.contextmanager
def run_ceph_rgw(base: Path, *, access_key: str = "testkey", secret_key: str = "testsecret") -> Iterator[CephRgw]:
    """Start a cluster under `base`, wait until S3 PUT and GET work, yield it, always stop it."""
    if shutil.which("radosgw") is None or shutil.which("ceph-mon") is None:
        raise CephError(f"Ceph is not installed: {INSTALL_HINT}")
    directory = _cluster_dir(base)
    started = time.monotonic()
    try:
        endpoint = _start(directory, access_key, secret_key)
        rgw = CephRgw(endpoint, access_key, secret_key, directory, {"start_s": time.monotonic() - started})
        _wait_until_usable(rgw)
        rgw.timings["ready_s"] = time.monotonic() - started
        yield rgw
    finally:
        subprocess.run(["bash", str(SCRIPTS / "ceph-rgw-down.sh"), str(directory)], check=False, timeout=60)


def _cluster_dir(base: Path) -> Path:
    """`base/cluster`, or a short directory under /tmp when that path is too long for the sockets."""
    base.mkdir(parents=True, exist_ok=True)
    directory = base / "cluster"
    if len(str(directory)) > _MAX_DIR_LEN:
        directory = Path(tempfile.mkdtemp(prefix="ceph-", dir="/tmp"))
    return directory


def _start(directory: Path, access_key: str, secret_key: str) -> str:
    command = ["bash", str(SCRIPTS / "ceph-rgw-up.sh"), str(directory), "0"]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env |= {"ACCESS_KEY": access_key, "SECRET_KEY": secret_key}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise CephError(f"ceph-rgw-up.sh took over {START_TIMEOUT_S:.0f} s\n{_log_tail(directory)}") from None
    if done.returncode != 0:
        raise CephError(f"ceph-rgw-up.sh failed: {done.stderr.strip()}\n{_log_tail(directory)}")
    return done.stdout.strip().splitlines()[-1]


def _wait_until_usable(rgw: CephRgw) -> None:
    """The gateway answers before its data pools exist: the first bucket and PUT create them."""
    s3 = rgw.client()
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            try:
                _probe(s3)
                return
            except (ClientError, BotoCoreError) as error:
                if time.monotonic() > deadline:
                    raise CephError(f"RGW did not store an object: {error}\n{_log_tail(rgw.directory)}") from error
                time.sleep(0.2)
    finally:
        s3.close()


def _probe(s3: Any) -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=_PROBE_BUCKET)
    s3.put_object(Bucket=_PROBE_BUCKET, Key="probe", Body=b"probe")
    if s3.get_object(Bucket=_PROBE_BUCKET, Key="probe")["Body"].read() != b"probe":
        raise CephError("RGW returned another object than the one stored")
    # The tests get an empty store.
    s3.delete_object(Bucket=_PROBE_BUCKET, Key="probe")
    s3.delete_bucket(Bucket=_PROBE_BUCKET)


def _log_tail(directory: Path) -> str:
    parts = []
    for log in sorted((directory / "log").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        parts.append(f"--- {log.name}\n" + "\n".join(lines))
    return "\n".join(parts)
