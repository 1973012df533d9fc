"""The workloads every row runs: the same script, the same 1 KB files, the same env contract.

W is the per-file overhead case (a trivial copy), W2 the compute case (the copy after ~50 ms of
deterministic CPU). The CPU part is a fixed number of iterations of a busybox `sh` loop: busybox
is the shell of the container image too (tests/support/engines.py builds it FROM scratch), so host
and container rows burn exactly the same instructions; only the machine's speed changes the time,
which is why the floor is measured in every invocation instead of assumed.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

FILE_BYTES = 1024
COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
CPU_ITERATIONS = 40_000
"""≈ 50 ms of one core on the 2-core VM this suite was written on."""
BURN = f"busybox sh -c 'i=0; while [ $i -lt {CPU_ITERATIONS} ]; do i=$((i+1)); done'"


COPY_EACH_INPUT = 'cp "$f" "$TMP_OUTPUT_DIR/"'


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    script: str
    per_input: str
    """The same work for one input `$f`, for a script that runs once per batch (`batch.mode: directory`)."""

    @property
    def batch_script(self) -> str:
        """The workload over every input of a batch run ($INPUT_FILE_PATHS, one path per line)."""
        return f'printf "%s\\n" "$INPUT_FILE_PATHS" | while read -r f; do {self.per_input}; done'


W = Workload("w", "W: 1 KB copy", COPY, COPY_EACH_INPUT)
W2 = Workload(
    "w2",
    f"W2: 1 KB copy after {CPU_ITERATIONS:,} busybox sh loop iterations (≈ 50 ms CPU)",
    f"{BURN}\n{COPY}",
    f"{BURN}; {COPY_EACH_INPUT}",
)
WORKLOADS = {workload.key: workload for workload in (W, W2)}


def payload(index: int) -> bytes:
    """The content of input file `index`: 1 KB, different for every file (stores may deduplicate)."""
    return f"{index:08d}".encode() * (FILE_BYTES // 8)


def input_name(index: int) -> str:
    return f"f{index:06d}.txt"


@dataclass(frozen=True)
class LocalJobs:
    """A workload laid out on the local disk for the baselines: script, inputs, one output dir."""

    script: Path
    inputs: list[Path]
    output: Path

    def count_outputs(self) -> int:
        return sum(1 for _ in self.output.iterdir())


def lay_out(root: Path, workload: Workload, files: int) -> LocalJobs:
    """Write the script and `files` inputs under `root` (untimed set-up)."""
    (root / "in").mkdir(parents=True)
    (root / "out").mkdir()
    script = root / "script.sh"
    script.write_text(workload.script + "\n")
    inputs = []
    for index in range(files):
        path = root / "in" / input_name(index)
        path.write_bytes(payload(index))
        inputs.append(path)
    return LocalJobs(script, inputs, root / "out")


def run_script(script: str, source: str, output: str) -> None:
    """One job as a baseline runs it: `sh script` with the contract's variables; fails loudly.

    Module-level with plain-string arguments so process pools and Lithops can pickle it.
    """
    env = {"INPUT_FILE_PATH": source, "TMP_OUTPUT_DIR": output, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    subprocess.run(["/bin/sh", script], env=env, check=True)
