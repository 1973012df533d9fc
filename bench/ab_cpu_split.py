"""An A/B of `bench.cpu_split` between two checkouts of Conveyor, interleaved in one invocation.

A change that should cost nothing per file is judged on this shared 2-core machine by running the
same workload through the code before (A) and after (B), alternately, several rounds, and comparing
medians: the noise of the machine falls on both sides alike. Each run uses its own checkout's
`bench.cpu_split` and `src/`, the interpreter running this script (one virtualenv for both).

    git worktree add /tmp/conveyor-before <commit>
    python -m bench.ab_cpu_split --a /tmp/conveyor-before --b . --rounds 3 --files 600

Writes bench/results/ab_cpu_split.json and .md (ab_cpu_split-<mode>.* with --batch): per round, per
side, the CPU per file of the platform's Python process, of every process together, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from bench.harness import RESULTS, command_line, describe_machine

METRICS = {
    "platform_ms_per_file": re.compile(r"platform \(Python\)\s+[\d.]+ s\s+([\d.]+) ms/file"),
    "total_cpu_ms_per_file": re.compile(r"total CPU\s+[\d.]+ s\s+([\d.]+) ms/file"),
}
_CONVEYOR_SECTION = re.compile(r"^Conveyor, host processes.*?: wall ([\d.]+) s$", re.M)


def run_side(checkout: Path, files: int, batch: str | None) -> dict[str, float]:
    """One `python -m bench.cpu_split` from `checkout`, its Conveyor figures parsed from the output."""
    env = os.environ | {"PYTHONPATH": f"{checkout / 'src'}{os.pathsep}{checkout}"}
    argv = [sys.executable, "-m", "bench.cpu_split", "--files", str(files), *(["--batch", batch] if batch else [])]
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: bench.cpu_split failed ({done.returncode}):\n{done.stderr[-2000:]}")
    section = _CONVEYOR_SECTION.search(done.stdout)
    if section is None:
        raise SystemExit(f"{checkout}: no Conveyor section in the output:\n{done.stdout}")
    conveyor_part = done.stdout[section.start() :]
    figures = {"wall_s": float(section.group(1))}
    for name, pattern in METRICS.items():
        found = pattern.search(conveyor_part)
        if found is None:
            raise SystemExit(f"{checkout}: no {name} in the output:\n{conveyor_part}")
        figures[name] = float(found.group(1))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="checkout of the code before (its src/ and bench/)")
    parser.add_argument("--b", type=Path, default=Path("."), help="checkout of the code after (default: here)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--batch", choices=["each", "directory"])
    args = parser.parse_args()
    sides = {"A": args.a.resolve(), "B": args.b.resolve()}
    rounds: list[dict[str, dict[str, float]]] = []
    for number in range(1, args.rounds + 1):
        # Alternate which side goes first, so neither always runs on a warmer (or busier) machine.
        order = ["A", "B"] if number % 2 else ["B", "A"]
        result = {side: run_side(sides[side], args.files, args.batch) for side in order}
        rounds.append(result)
        print(f"round {number}: " + "; ".join(f"{side} {result[side]}" for side in ("A", "B")), flush=True)
    write_results(args, sides, rounds)


def write_results(args: argparse.Namespace, sides: dict[str, Path], rounds: list[dict[str, dict[str, float]]]) -> None:
    names = ["platform_ms_per_file", "total_cpu_ms_per_file", "wall_s"]
    medians = {side: {name: statistics.median(r[side][name] for r in rounds) for name in names} for side in ("A", "B")}
    command = command_line("bench.ab_cpu_split")
    document = {
        "command": command,
        "machine": describe_machine(),
        "sides": {side: str(path) for side, path in sides.items()},
        "files": args.files,
        "batch": args.batch,
        "rounds": rounds,
        "medians": medians,
        "ratio_b_over_a": {name: round(medians["B"][name] / medians["A"][name], 3) for name in names},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "ab_cpu_split" + (f"-{args.batch}" if args.batch else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = [
        "# A/B: CPU per file, before (A) and after (B), interleaved",
        "",
        f"`{command}` on {document['machine']}; {args.files} files"
        + (f", batches ({args.batch})" if args.batch else "")
        + f", {len(rounds)} rounds. A = {sides['A']}, B = {sides['B']}.",
        "",
        "| | A (median) | B (median) | B ÷ A |",
        "|---|---|---|---|",
        *(
            f"| {name} | {medians['A'][name]:.2f} | {medians['B'][name]:.2f} | {document['ratio_b_over_a'][name]:.3f} |"
            for name in names
        ),
        "",
        "Every round (A; B): "
        + "; ".join(f"{r['A']['platform_ms_per_file']:.2f} / {r['B']['platform_ms_per_file']:.2f} ms" for r in rounds)
        + " platform CPU per file.",
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
