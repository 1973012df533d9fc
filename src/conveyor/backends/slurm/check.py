"""`conveyor slurm check`: submit a probe job and say what a node offers Conveyor's jobs.

A node must import Conveyor with the configured Python, have the configured container engine (or
run scripts as processes), and reach the object store; each missing piece is named with its fix.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from conveyor.backends.slurm.commands import SlurmCommands
from conveyor.settings import SlurmSettings


class ProbeReport(BaseModel):
    ok: bool
    seconds: float
    """From sbatch to the probe's report."""
    slurm: str = ""
    node: dict[str, Any] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)


def check_cluster(config: SlurmSettings, shared_dir: Path, store_endpoint: str | None, timeout_s: float) -> ProbeReport:
    commands = SlurmCommands()
    started = time.monotonic()
    missing = commands.missing()
    if missing:
        return ProbeReport(ok=False, seconds=0.0, problems=[f"{', '.join(missing)} not on this host's PATH"])
    probe_dir = shared_dir / "probes" / uuid.uuid4().hex[:12]
    probe_dir.mkdir(parents=True)
    report_file = probe_dir / "report.json"
    python = config.python or sys.executable
    endpoint = f" {shlex.quote(store_endpoint)}" if store_endpoint else ""
    script = probe_dir / "probe.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(python)} -m conveyor.backends.slurm.node probe {shlex.quote(str(report_file))}{endpoint}\n"
    )
    options = ["--job-name=conveyor.probe", f"--output={probe_dir}/slurm.out", "--time=5", "--wait"]
    options += [f"--{name}={value}" for name in ("partition", "account", "qos") if (value := getattr(config, name))]
    options += config.sbatch_options
    try:
        answer = subprocess.run(
            ["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return ProbeReport(
            ok=False,
            seconds=time.monotonic() - started,
            problems=[f"the probe job did not finish within {timeout_s:.0f} s (is the partition busy or down?)"],
        )
    report = ProbeReport(ok=False, seconds=time.monotonic() - started, slurm=commands.version())
    if not report_file.exists():
        output = (probe_dir / "slurm.out").read_text(errors="replace") if (probe_dir / "slurm.out").exists() else ""
        report.problems.append(
            f"the probe wrote no report (sbatch: {answer.stderr.strip() or answer.stdout.strip()}; node output: "
            f"{output.strip()[-500:] or 'none'}). The nodes must run {python} with Conveyor installed and see "
            f"{shared_dir} at the same path: set [slurm] python and shared_dir"
        )
        return report
    report.node = json.loads(report_file.read_text())
    report.problems += _problems(config, report.node)
    report.ok = not report.problems
    for path in sorted(probe_dir.iterdir()):
        path.unlink()
    probe_dir.rmdir()
    return report


def _problems(config: SlurmSettings, node: dict[str, Any]) -> list[str]:
    problems = []
    if config.runtime != "process" and config.runtime not in node.get("engines", {}):
        found = ", ".join(node.get("engines", {})) or "none"
        problems.append(
            f"runtime {config.runtime!r} is not on node {node.get('host')}'s PATH (engines found: {found}); "
            "set [slurm] runtime to one of them, or to 'process'"
        )
    store = node.get("store")
    if store is not None and not str(store).startswith("reachable"):
        problems.append(
            f"node {node.get('host')} cannot reach the object store: {store}; the nodes need the store's endpoint "
            "(set [storage] s3_public_endpoint to an address they can reach)"
        )
    return problems
