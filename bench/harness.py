"""What every benchmark shares: where results go, how the machine is described, percentiles, memory.

Numbers from this 2-core, shared machine are noisy, so every measurement is reported with the
machine and the command that produced it, and Conveyor is always compared with baselines run in
the same invocation.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLIENT_ENV = ("BENCH_ROLE", "client")
"""Marks a process that stands for the user (the uploader) so memory sampling leaves it out."""
PSS_SAMPLE_S = 0.2
"""How often a running measurement's process tree is weighed (one /proc scan costs ~2 ms of CPU)."""


class ToolMissing(Exception):
    """A baseline's tool is not installed; the message says how to install it."""


def describe_machine() -> str:
    """One line: CPU model, cores, memory, kernel, Python; enough to tell two machines apart."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def command_line(module: str | None = None) -> str:
    """The command as a user would retype it: interpreter name, and `-m module` for a module run."""
    start = ["-m", module] if module else [sys.argv[0]]
    return " ".join([Path(sys.executable).name, *start, *sys.argv[1:]])


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that was measured, never an interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/min/max in milliseconds of latencies given in seconds."""
    return {
        "p50": round(statistics.median(seconds) * 1000, 1),
        "p95": round(percentile(seconds, 0.95) * 1000, 1),
        "p99": round(percentile(seconds, 0.99) * 1000, 1),
        "min": round(min(seconds) * 1000, 1),
        "max": round(max(seconds) * 1000, 1),
        "count": len(seconds),
    }


def status_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status field in KiB (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def tree_pss_kib(root: int) -> int:
    """Summed PSS of `root` and all its descendants now (daemonised grandchildren escape the tree).

    PSS, not RSS: forked workers share their parent's pages, and summing RSS would count those once
    per worker. Processes started with CLIENT_ENV (the uploader: a user's client, not the platform)
    are left out with their children.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        if _is_client(pid):
            continue
        total += _pss_kib(pid)
        pending += children.get(pid, [])
    return total


def _pss_kib(pid: int) -> int:
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith("Pss:")), 0)


def _is_client(pid: int) -> bool:
    try:
        return "=".join(CLIENT_ENV).encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
