"""Real container engines for tests: Debian's dockerd and podman's Docker-compatible API service.

Each engine runs as a child of the test process with ALL of its state in a private directory, so the
tests never touch the host's default stores (/var/lib/docker, /var/lib/containers) nor an engine that
is already running on the machine. Both context managers always stop the engine and remove its state,
also when the body raises or the engine never became ready.

Usage from a fixture::

    with run_dockerd(tmp_path_factory.mktemp("dockerd")) as engine:
        client = engine.client()
        ...
        client.close()
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import docker
from docker.errors import DockerException, ImageNotFound

EngineName = Literal["dockerd", "podman"]

BUSYBOX_TAG = "localhost/conveyor-test:busybox"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
INSTALL_HINT = "run scripts/install-system-deps.sh as root to install the container engines"

# Long state dirs move to a short mkdtemp() dir under /tmp: podman refuses a --runroot longer than
# 50 chars (ours is "<state>/run"), and unix socket paths must fit in 108 bytes (the deepest one is
# dockerd's "<state>/exec/libnetwork/<12 hex>.sock").
_MAX_STATE_DIR_LEN = 46
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1
_MNT_DETACH = 2
# Loaded once in the parent: calling dlopen() between fork and exec is not safe.
_LIBC = ctypes.CDLL(None, use_errno=True)

# default_ulimits = []: this VM lacks CAP_SYS_RESOURCE, so podman's default nofile ulimit cannot be set.
# lock_type = "file": locks live in our private --tmpdir instead of the host-wide /dev/shm/libpod_lock
# that every other podman on the machine shares.
_PODMAN_CONF = '[containers]\ndefault_ulimits = []\n\n[engine]\nlock_type = "file"\nevents_logger = "file"\n'

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_BRIDGE_NAME = re.compile(r"cvd-(\d+)-\d+")
_BRIDGE_COUNTER = itertools.count()

_BUSYBOX_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
"""


class EngineError(RuntimeError):
    """An engine is missing, did not become ready, or left state that cannot be removed safely."""


@dataclass
class Engine:
    """A running engine. `timings` gets "ready_s" on start and "stop_s" once the context exits."""

    name: EngineName
    url: str
    pid: int
    socket_path: Path
    state_dir: Path
    log_path: Path
    timings: dict[str, float] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A new Docker SDK client for this engine (API version negotiated). The caller must close() it."""
        return docker.DockerClient(base_url=self.url, timeout=timeout)


@contextlib.contextmanager
def run_dockerd(base_dir: Path) -> Iterator[Engine]:
    """Start a private dockerd whose log is base_dir/dockerd.log; stop it and remove its state on exit."""
    dockerd = _require_binary("dockerd")
    with contextlib.ExitStack() as stack:
        state = stack.enter_context(_state_dir(base_dir, "dockerd"))
        bridge = stack.enter_context(_private_bridge())
        config = state / "daemon.json"
        # Our own (empty) config file, so a host /etc/docker/daemon.json cannot change or break the daemon.
        config.write_text("{}\n")
        socket_path = state / "docker.sock"
        argv = [
            dockerd,
            f"--host=unix://{socket_path}",
            f"--data-root={state / 'data'}",
            f"--exec-root={state / 'exec'}",
            f"--pidfile={state / 'dockerd.pid'}",
            f"--config-file={config}",
            "--storage-driver=vfs",
            # No iptables chains, no sysctl change and no NAT: tests only use network "none" and "host".
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            # NOT --bridge=none: that makes dockerd delete the host's docker0, which belongs to any other
            # dockerd on the machine. A bridge of our own is created here and deleted on exit instead.
            f"--bridge={bridge}",
        ]
        yield stack.enter_context(_daemon("dockerd", argv, socket_path, state, base_dir, _engine_env()))


@contextlib.contextmanager
def run_podman_service(base_dir: Path) -> Iterator[Engine]:
    """Start `podman system service` (Docker-compatible API) with a private store; always stop and clean."""
    podman = _require_binary("podman")
    with contextlib.ExitStack() as stack:
        state = stack.enter_context(_state_dir(base_dir, "podman"))
        config = state / "containers.conf"
        config.write_text(_PODMAN_CONF)
        socket_path = state / "podman.sock"
        argv = [
            podman,
            *podman_options(state),
            "system",
            "service",
            "--time=0",
            f"unix://{socket_path}",
        ]
        env = _engine_env(CONTAINERS_CONF=str(config))
        yield stack.enter_context(_daemon("podman", argv, socket_path, state, base_dir, env))


def podman_options(state: Path) -> list[str]:
    """podman's global options for a private store in `state` (the service's, or a CLI reaching the same one)."""
    return [
        "--runtime=runc",
        "--cgroup-manager=cgroupfs",
        "--storage-driver=vfs",
        f"--root={state / 'root'}",
        f"--runroot={state / 'run'}",
        # Private tmpdir, volumes and network configs: podman's defaults (/run/libpod, /etc/containers/
        # networks) are shared with every other podman on the machine.
        f"--tmpdir={state / 'tmp'}",
        f"--volumepath={state / 'volumes'}",
        f"--network-config-dir={state / 'networks'}",
        "--events-backend=file",
    ]


def build_busybox_image(engine: Engine, tag: str = BUSYBOX_TAG) -> str:
    """Build FROM scratch + the host's static busybox (no registry needed); skip if `tag` exists."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise EngineError(f"{busybox} is missing (Debian package busybox-static): {INSTALL_HINT}")
    client = engine.client()
    try:
        if _image_exists(client, tag):
            return tag
        with tempfile.TemporaryDirectory(prefix="cvd-ctx-") as ctx:
            shutil.copy2(busybox, Path(ctx) / "busybox")
            (Path(ctx) / "Dockerfile").write_text(_BUSYBOX_DOCKERFILE)
            # network_mode="none": the RUN step needs no network, and podman would otherwise set up its
            # netavark bridge (and firewall rules) on the host just for the build.
            client.images.build(path=ctx, tag=tag, rm=True, forcerm=True, pull=False, network_mode="none")
    finally:
        client.close()
    return tag


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first, as listed in /proc/self/mounts."""
    prefix = str(root.resolve())
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            mountpoint = _unescape_mount_path(line.split()[1])
            if mountpoint == prefix or mountpoint.startswith(prefix + "/"):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


# --- engine process -------------------------------------------------------------------------------


@contextlib.contextmanager
def _daemon(
    name: EngineName, argv: list[str], socket_path: Path, state: Path, base_dir: Path, env: dict[str, str]
) -> Iterator[Engine]:
    log_path = base_dir.resolve() / f"{name}.log"
    started = time.monotonic()
    process = _spawn(argv, log_path, env)
    engine = Engine(name, f"unix://{socket_path}", process.pid, socket_path, state, log_path, argv=argv, env=env)
    engine.process = process
    try:
        _wait_ready(engine, process)
        engine.timings["ready_s"] = time.monotonic() - started
        yield engine
    finally:
        stopping = time.monotonic()
        process = engine.process  # restart_engine() may have replaced it
        if process.poll() is None:
            _remove_all_containers(engine)
        _stop_process(process)
        # Normally a no-op. If the engine died or had to be SIGKILLed, its containers and helpers
        # (containerd, shims, conmon) outlive it.
        _kill_leftover_containers(state)
        _kill_processes_mentioning(state)
        engine.timings["stop_s"] = time.monotonic() - stopping


def restart_engine(engine: Engine, *, pause_s: float = 0.0) -> float:
    """Stop the engine as an operator's restart does (SIGTERM, wait), then start it again with the same
    command line, socket and state after `pause_s`. Returns the seconds it was away."""
    assert engine.process is not None
    stopped = time.monotonic()
    _stop_process(engine.process)
    time.sleep(pause_s)
    engine.process = _spawn(engine.argv, engine.log_path, engine.env)
    engine.pid = engine.process.pid
    _wait_ready(engine, engine.process)
    return time.monotonic() - stopped


def _spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        # Own session: a Ctrl-C in the terminal reaches pytest (which then runs our cleanup) but not the
        # engine, so the engine is not stopped twice.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    # Runs in the child before exec: if the test process dies without cleaning up (SIGKILL, crash), the
    # engine gets SIGTERM instead of running forever. Caveat: the signal fires when the *thread* that
    # started the engine exits, so start engines from the main thread (pytest fixtures do).
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _wait_ready(engine: Engine, process: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _log_tail(engine.log_path)
            raise EngineError(f"{engine.name} exited with code {process.returncode} before it was ready; {tail}")
        if engine.socket_path.exists():
            try:
                _ping(engine.url)
                return
            except (DockerException, OSError) as exc:  # requests' errors are OSErrors
                last_error = exc
        time.sleep(0.05)
    raise EngineError(
        f"{engine.name} did not answer ping on {engine.url} within {timeout:.0f} s "
        f"(last error: {last_error}); {_log_tail(engine.log_path)}"
    )


def _ping(url: str) -> None:
    # Creating the client already calls /version (API negotiation); ping() checks /_ping too.
    client = docker.DockerClient(base_url=url, timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _log_tail(log_path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"its log {log_path} is unreadable: {exc}"
    return f"last {len(tail)} lines of {log_path}:\n" + "\n".join(tail)


def _remove_all_containers(engine: Engine) -> None:
    # Best effort, before the engine stops: podman leaves running containers (and their conmon) behind
    # when its service exits, and dockerd waits 10 s per container that ignores SIGTERM (busybox sh).
    try:
        client = docker.DockerClient(base_url=engine.url, timeout=20)
    except (DockerException, OSError):
        return
    try:
        for container in client.containers.list(all=True):
            with contextlib.suppress(DockerException, OSError):
                container.remove(force=True, v=True)
    except (DockerException, OSError):
        pass
    finally:
        client.close()


def _stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _kill_leftover_containers(state: Path) -> None:
    """SIGKILL processes in the cgroups of this engine's containers, then remove those cgroups.

    Container ids are random 256-bit values found in our private state dir, so only our containers match.
    """
    ids = _container_ids(state)
    if not ids:
        return
    victims = [pid for pid, cgroups in _process_cgroups() if any(i in cgroups for i in ids)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_for_exit(victims)
    # dockerd uses <hierarchy>/docker/<id>, podman <hierarchy>/libpod_parent/libpod-<id>.
    for cgroup_dir in _dirs_named_after(ids, _cgroup_mountpoints()):
        with contextlib.suppress(OSError):
            cgroup_dir.rmdir()


def _container_ids(state: Path, depth: int = 3) -> set[str]:
    # dockerd keeps <data-root>/containers/<id>, podman <root|runroot>/vfs-containers/<id>.
    ids: set[str] = set()
    with contextlib.suppress(OSError), os.scandir(state) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if _CONTAINER_ID.fullmatch(entry.name):
                ids.add(entry.name)
            elif depth > 1:
                ids |= _container_ids(Path(entry.path), depth - 1)
    return ids


def _process_cgroups() -> Iterator[tuple[int, str]]:
    """(pid, content of /proc/<pid>/cgroup) for every process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cgroup").read_text()
            except OSError:  # the process exited meanwhile
                continue


def _cgroup_mountpoints() -> list[Path]:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        fields = [line.split() for line in mounts]
    return [Path(_unescape_mount_path(f[1])) for f in fields if f[2] in ("cgroup", "cgroup2")]


def _dirs_named_after(ids: set[str], roots: list[Path], depth: int = 3) -> list[Path]:
    """Dirs up to `depth` levels below `roots` whose name contains one of `ids`, deepest first."""
    found: list[Path] = []
    for root in roots:
        subdirs: list[Path] = []
        with contextlib.suppress(OSError), os.scandir(root) as entries:
            subdirs = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        for subdir in subdirs:
            if any(i in subdir.name for i in ids):
                found.append(subdir)
            elif depth > 1:
                found.extend(_dirs_named_after(ids, [subdir], depth - 1))
    return sorted(found, key=lambda d: len(d.parts), reverse=True)


def _wait_for_exit(pids: list[int], timeout: float = 5.0) -> None:
    # Processes reparented to init stay zombies until init reaps them; a zombie counts as exited.
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _running(pid)]
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_processes_mentioning(state: Path) -> None:
    """SIGKILL leftover helpers (containerd, shims, conmon) whose command line names our private state dir.

    The dir is unique to this engine instance, so this cannot hit another engine's processes.
    """
    marker = os.fsencode(str(state.resolve())) + b"/"
    victims = [pid for pid in _pids_with_cmdline_containing(marker) if pid != os.getpid()]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_for_exit(victims)


def _pids_with_cmdline_containing(marker: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # the process exited meanwhile
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _require_binary(name: str) -> str:
    # Fixtures may run with a PATH lacking /usr/sbin (where Debian puts dockerd).
    found = shutil.which(name) or shutil.which(name, path=_SYSTEM_PATH)
    if found is None:
        raise EngineError(f"{name} is not installed: {INSTALL_HINT}")
    return found


def _engine_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The engines look up containerd, runc, conmon, docker-init... on PATH.
    env["PATH"] = f"{env.get('PATH', '')}:{_SYSTEM_PATH}".lstrip(":")
    env.update(extra)
    return env


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


# --- host state: bridge, state dir, mounts --------------------------------------------------------


@contextlib.contextmanager
def _private_bridge() -> Iterator[str]:
    # dockerd only accepts a non-default --bridge that already exists; it gives it an unused private
    # subnet. The name carries our pid (IFNAMSIZ allows 15 chars) so a later run can tell a bridge left
    # by a killed test process from one in use.
    _delete_stale_bridges()
    name = f"cvd-{os.getpid()}-{next(_BRIDGE_COUNTER)}"
    _ip("link", "add", "name", name, "type", "bridge")
    try:
        yield name
    finally:
        _ip("link", "delete", name, check=False)


def _delete_stale_bridges() -> None:
    for net in Path("/sys/class/net").iterdir():
        match = _BRIDGE_NAME.fullmatch(net.name)
        if match is None or Path(f"/proc/{match.group(1)}").exists():
            continue  # not ours, or its creator still runs
        if not _pids_with_cmdline_containing(f"--bridge={net.name}".encode()):
            _ip("link", "delete", net.name, check=False)


def _ip(*args: str, check: bool = True) -> None:
    ip = shutil.which("ip", path=_SYSTEM_PATH)
    if ip is None:
        raise EngineError(f"`ip` (Debian package iproute2) is missing: {INSTALL_HINT}")
    result = subprocess.run([ip, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise EngineError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


@contextlib.contextmanager
def _state_dir(base_dir: Path, name: str) -> Iterator[Path]:
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(base_dir / f"{name}.lock"), _fresh_dir(base_dir / f"{name}-state") as state:
        yield state


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # Two engines sharing a base_dir would delete each other's state: fail fast instead.
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EngineError(f"{path.parent} is already used by another running engine") from None
        yield


@contextlib.contextmanager
def _fresh_dir(state: Path) -> Iterator[Path]:
    if len(str(state)) > _MAX_STATE_DIR_LEN:
        state = Path(tempfile.mkdtemp(prefix="cvd-", dir="/tmp"))
    else:
        _remove_tree(state)  # left by an earlier run with the same base_dir that was killed
        state.mkdir()
    try:
        yield state
    finally:
        _remove_tree(state)


def _remove_tree(root: Path) -> None:
    """Unmount everything below `root`, then delete it, even read-only dirs from image layers."""
    if not root.exists():
        return
    _unmount_under(root)
    leftovers = mounts_under(root)
    if leftovers:
        # Deleting through a mount (a bind-mounted host dir...) would destroy data outside `root`.
        raise EngineError(f"refusing to delete {root}: still mounted: {leftovers}")
    if sys.version_info >= (3, 12):
        shutil.rmtree(root, onexc=_make_writable_and_retry)
    else:
        shutil.rmtree(root, onerror=_make_writable_and_retry)


def _unmount_under(root: Path) -> None:
    # Several passes: a mount point can be stacked (dockerd bind-mounts its data root onto itself).
    for _ in range(5):
        mountpoints = mounts_under(root)
        if not mountpoints:
            return
        for mountpoint in mountpoints:
            path = os.fsencode(mountpoint)
            if _LIBC.umount2(path, 0) != 0:
                # Busy (e.g. an nsfs still referenced): detach it now, the kernel frees it later.
                _LIBC.umount2(path, _MNT_DETACH)


def _make_writable_and_retry(func: Callable[[str], Any], path: str, _exc: object) -> None:
    # Image layers can contain read-only dirs (e.g. chmod 555); root usually ignores that, but not on
    # every filesystem, so make the parent and the entry writable and try once more.
    for target in (os.path.dirname(path), path):
        with contextlib.suppress(OSError):
            mode = os.lstat(target).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(target, stat.S_IMODE(mode) | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
    if func in (os.rmdir, os.unlink, os.remove):
        func(path)
    else:
        # A dir that could not be opened or listed: rmtree skipped it, so remove that subtree now.
        shutil.rmtree(path)


def _unescape_mount_path(field_: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field_)
