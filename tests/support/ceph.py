"""A real Ceph RGW for tests: scripts/ceph-rgw-up.sh in a private directory, always stopped after.

Usage from a module-scoped fixture (a cluster takes ~12 s to start, so modules share one)::

    @pytest.fixture(scope="module")
    def ceph(tmp_path_factory):
        with run_ceph_rgw(tmp_path_factory.mktemp("ceph")) as rgw:
            yield rgw

The daemons fork away from the test process: if pytest itself is killed, they outlive it and
`scripts/ceph-rgw-down.sh DIR` stops them.

An outage of the gateway alone: `rgw.stop_gateway()` kills radosgw (the monitor and the OSD keep
running: the OSD is on memstore, so stopping it would lose every object), `rgw.start_gateway()`
starts it again with the same command line, environment and configuration (same port), and returns
once an S3 request is answered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
GATEWAY_NAME = "client.rgw.conveyor"
"""radosgw's Ceph name in ceph-rgw-up.sh: its pid file is DIR/run/<name>.pid."""
STOP_TIMEOUT_S = 30.0


class CephError(RuntimeError):
    """Ceph is missing or did not become ready; the message carries the end of its logs."""


@dataclass(frozen=True)
class GatewayCommand:
    """How the running radosgw was started, read from /proc before it is stopped."""

    argv: list[str]
    env: dict[str, str]
    cwd: str


@dataclass
class CephRgw:
    endpoint: str
    access_key: str
    secret_key: str
    directory: Path
    timings: dict[str, float] = field(default_factory=dict)
    """"start_s": the script; "ready_s": until a PUT and a GET worked (pools created)."""
    stopped_gateway: GatewayCommand | None = None
    """Set while radosgw is stopped by stop_gateway: what start_gateway runs."""

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

    @property
    def gateway_pid_file(self) -> Path:
        return self.directory / "run" / f"{GATEWAY_NAME}.pid"

    def gateway_pid(self) -> int | None:
        """radosgw's pid while it runs (its pid file names a live process started with this cluster's config)."""
        try:
            pid = int(self.gateway_pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.directory / "ceph.conf").encode() in cmdline and _alive(pid) else None

    def stop_gateway(self, sig: signal.Signals = signal.SIGKILL, timeout_s: float = STOP_TIMEOUT_S) -> float:
        """Stop radosgw alone, by default as a crash would; returns time.monotonic() once it is gone.

        Only the gateway: the OSD keeps its objects in RAM (memstore) and must never be stopped."""
        if self.stopped_gateway is not None:
            raise CephError("the gateway is already stopped")
        pid = self.gateway_pid()
        if pid is None:
            raise CephError(f"radosgw is not running (no live pid in {self.gateway_pid_file})")
        proc = Path(f"/proc/{pid}")
        command = GatewayCommand(
            argv=[arg.decode() for arg in (proc / "cmdline").read_bytes().split(b"\0") if arg],
            env=dict(
                entry.decode().partition("=")[::2] for entry in (proc / "environ").read_bytes().split(b"\0") if entry
            ),
            cwd=os.readlink(proc / "cwd"),
        )
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while _alive(pid):
            if time.monotonic() > deadline:
                raise CephError(f"radosgw (pid {pid}) did not exit within {timeout_s:.0f} s of {sig.name}")
            time.sleep(0.02)
        gone = time.monotonic()
        self.gateway_pid_file.unlink(missing_ok=True)  # SIGKILL leaves it behind
        self.stopped_gateway = command
        return gone

    def start_gateway(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Start radosgw again exactly as it was (same command line, environment, configuration, so
        the same port); returns time.monotonic() when it first answered an S3 request."""
        command = self.stopped_gateway
        if command is None:
            raise CephError("the gateway was not stopped by stop_gateway")
        with (self.directory / "log" / "setup.log").open("ab") as log:
            # radosgw forks and its first process exits at once; the log keeps what either says.
            started = subprocess.run(
                command.argv, env=command.env, cwd=command.cwd, stdout=log, stderr=log, check=False
            )
        if started.returncode != 0:
            raise CephError(f"radosgw exited {started.returncode} at start\n{_log_tail(self.directory)}")
        self.stopped_gateway = None
        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5
            ),
        )
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    s3.list_buckets()
                    return time.monotonic()
                except (ClientError, BotoCoreError) as error:
                    if time.monotonic() > deadline:
                        raise CephError(
                            f"radosgw did not answer again: {error}\n{_log_tail(self.directory)}"
                        ) from error
                    time.sleep(0.05)
        finally:
            s3.close()


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


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a daemon's parent is init, which may reap it late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _log_tail(directory: Path) -> str:
    parts = []
    for log in sorted((directory / "log").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        parts.append(f"--- {log.name}\n" + "\n".join(lines))
    return "\n".join(parts)
