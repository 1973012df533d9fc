"""The suite's results as JSON (everything measured), markdown (ratios first) and a PNG chart.

Ratios compare medians per file (seconds ÷ N), so a slow row run with a smaller N still compares
with the others; for every other row N is the same and the ratio is plain medians.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import PSS_SAMPLE_S
from bench.rows import Row
from bench.workloads import Workload

if TYPE_CHECKING:
    from bench.suite import Outcome

MAKE_BENCH_MIN = 30
MAKE_BENCH_QUICK_MIN = 2
"""Measured on the 2-core VM (see the Makefile); the suite's --help says the same."""
TARGETS_NOTE = 'Targets: ../shared/DESIGN.md, "Performance targets".'


@dataclass(frozen=True)
class Report:
    when: str
    command: str
    machine: str
    params: dict[str, Any]
    duration_s: float
    rows: list[Row]
    workloads: list[Workload]
    outcomes: list[Outcome]
    missing: dict[str, str]


@dataclass(frozen=True)
class Stats:
    """A throughput row's repeats for one workload."""

    files: int
    runs: list[float]
    peak_pss_mib: float
    extras: dict[str, float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def per_file(self) -> float:
        return self.median / self.files


def throughput(report: Report) -> dict[str, dict[str, Stats]]:
    """workload → row key → Stats, for the throughput rows that produced at least one number."""
    table: dict[str, dict[str, Stats]] = {}
    for workload in report.workloads:
        for row in report.rows:
            done = [o for o in report.outcomes if o.task.row is row and o.task.workload == workload.key and not o.error]
            if not done or not row.is_throughput:
                continue
            extras: dict[str, float] = {
                key: statistics.median(o.result[key] for o in done)
                for key in ("mean_job_s", "serial_s", "script_cpu_s", "runner_peak_rss_mib")
                if key in done[0].result
            }
            files = report.params["slow_files" if row.slow else "files"]
            runs = [o.result["elapsed_s"] for o in done]
            table.setdefault(workload.key, {})[row.key] = Stats(files, runs, max(o.peak_pss_mib for o in done), extras)
    return table


def ratios(stats: dict[str, Stats], references: list[Row]) -> dict[str, dict[str, float]]:
    """row → reference row → this row's time per file ÷ the reference's."""
    return {
        key: {ref.key: row.per_file / stats[ref.key].per_file for ref in references if ref.key in stats}
        for key, row in stats.items()
    }


def scenarios(report: Report) -> dict[str, dict[str, Any]]:
    return {o.task.row.key: o.result for o in report.outcomes if not o.task.row.is_throughput and not o.error}


def errors(report: Report) -> dict[str, str]:
    return {o.task.describe(): o.error for o in report.outcomes if o.error}


def write_report(report: Report, out: Path) -> str:
    """Write suite.json, suite.md and suite.png under `out`; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(as_json(report), indent=2, ensure_ascii=False) + "\n")
    markdown = as_markdown(report)
    (out / "suite.md").write_text(markdown)
    draw_chart(report, out / "suite.png")
    return markdown


def _references(report: Report) -> list[Row]:
    return [row for row in report.rows if row.kind in ("floor", "baseline")]


def as_json(report: Report) -> dict[str, Any]:
    table = throughput(report)
    references = _references(report)
    return {
        "benchmark": "suite",
        "when": report.when,
        "command": report.command,
        "machine": report.machine,
        "params": report.params,
        "duration_s": round(report.duration_s, 1),
        "workloads": {w.key: {"title": w.title, "script": w.script} for w in report.workloads},
        "throughput": {
            workload: {
                key: {
                    "files": s.files,
                    "runs_s": s.runs,
                    "median_s": s.median,
                    "per_file_ms": s.per_file * 1000,
                    "peak_pss_mib": round(s.peak_pss_mib, 1),
                    **s.extras,
                    "ratios": ratios(stats, references)[key],
                }
                for key, s in stats.items()
            }
            for workload, stats in table.items()
        },
        "scenarios": scenarios(report),
        "targets": [t.as_json() for t in targets(report)],
        "not_installed": report.missing,
        "errors": errors(report),
    }


# ---- targets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    what: str
    limit: float
    measured: float | None
    unit: str

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "not measured"
        return "met" if self.measured <= self.limit else "missed"

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "limit": self.limit,
            "measured": self.measured,
            "unit": self.unit,
            "verdict": self.verdict,
        }


def targets(report: Report) -> list[Target]:
    """DESIGN.md's targets against this invocation's numbers (None where a row did not run)."""
    table = throughput(report)
    latency = scenarios(report)

    def ratio(workload: str, row: str, reference: str) -> float | None:
        stats = table.get(workload, {})
        if row not in stats or reference not in stats:
            return None
        return round(stats[row].per_file / stats[reference].per_file, 2)

    def p50(row: str) -> float | None:
        return latency.get(row, {}).get("PUT → script start", {}).get("p50")

    queue = latency.get("queue", {})
    return [
        Target("W, Conveyor host processes ÷ bare pool", 2.0, ratio("w", "conveyor-process", "pool"), "×"),
        Target("W, Conveyor batches of 20 in one run ÷ bare pool", 2.0, ratio("w", "conveyor-batch-dir", "pool"), "×"),
        Target("W2, Conveyor host processes ÷ compute floor", 1.05, ratio("w2", "conveyor-process", "floor"), "×"),
        Target("W2, Conveyor batches of 20 in one run ÷ floor", 1.05, ratio("w2", "conveyor-batch-dir", "floor"), "×"),
        Target("W, Conveyor podman ÷ one podman run per file", 0.3, ratio("w", "conveyor-podman", "podman-run"), "×"),
        Target("W, Conveyor dockerd ÷ one podman run per file", 0.3, ratio("w", "conveyor-dockerd", "podman-run"), "×"),
        Target("upload → script start p50, host processes", 15, p50("latency-process"), "ms"),
        Target("upload → script start p50, podman", 60, p50("latency-podman"), "ms"),
        Target("upload → script start p50, dockerd", 60, p50("latency-dockerd"), "ms"),
        Target(
            f"{report.params['queue_events']:,} queued events: peak RSS of `conveyor up`",
            300,
            round(queue["peak_rss_mib"]) if queue else None,
            "MiB",
        ),
    ]


# ---- markdown ---------------------------------------------------------------------------------


def as_markdown(report: Report) -> str:
    parts = [
        "# Conveyor benchmark suite\n",
        f"- machine: {report.machine}\n- when: {report.when}; took {report.duration_s / 60:.1f} min\n"
        f"- command: `{report.command}`\n- parameters: "
        + ", ".join(f"{k}={v}" for k, v in report.params.items())
        + "\n",
        _targets_md(report),
        *(_throughput_md(report, workload) for workload in report.workloads),
        _scenarios_md(report),
        _notes_md(report),
    ]
    return "\n".join(part for part in parts if part)


def _targets_md(report: Report) -> str:
    lines = ["## Targets\n", TARGETS_NOTE + "\n", "| target | limit | measured | |", "|---|---|---|---|"]
    for t in targets(report):
        measured = "–" if t.measured is None else f"{t.measured:g} {t.unit}"
        lines.append(f"| {t.what} | ≤ {t.limit:g} {t.unit} | {measured} | {t.verdict} |")
    return "\n".join(lines) + "\n"


def _throughput_md(report: Report, workload: Workload) -> str:
    stats = throughput(report).get(workload.key, {})
    references = [row for row in _references(report) if row.key in stats]
    table = ratios(stats, references)
    header = ["row", "N", *(f"× {ref.key}" for ref in references), "min s", "median s", "max s", "ms/file", "peak MiB"]
    lines = [
        f"## {workload.title}, {report.params['workers']} at a time\n",
        _row_md(header),
        _row_md(["---"] * len(header)),
    ]
    for row in (r for r in report.rows if r.is_throughput):
        if row.key in stats:
            s = stats[row.key]
            cells = [
                row.title,
                str(s.files),
                *(f"{table[row.key][ref.key]:.2f}" for ref in references),
                f"{min(s.runs):.2f}",
                f"{s.median:.2f}",
                f"{max(s.runs):.2f}",
                f"{s.per_file * 1000:.1f}",
                f"{s.peak_pss_mib:.0f}",
            ]
        else:
            cells = [row.title, _absent(report, row, workload.key), *[""] * (len(header) - 2)]
        lines.append(_row_md(cells))
    if floor := stats.get("floor"):
        cpu, wall = (floor.extras[key] / floor.files * 1000 for key in ("script_cpu_s", "serial_s"))
        lines.append(
            f"\nThe script alone costs {cpu:.1f} ms of CPU per file ({wall:.1f} ms wall when run serially); "
            f"the floor is N times that CPU, divided by {report.params['workers']} workers."
        )
    if mean_job := stats.get("conveyor-process", None):
        lines.append(
            f"Conveyor host processes: mean job (stage-in + script + stage-out) "
            f"{mean_job.extras.get('mean_job_s', 0) * 1000:.0f} ms."
        )
    return "\n".join(lines) + "\n"


def _absent(report: Report, row: Row, workload: str | None) -> str:
    """Why a row has no number: not installed (and how to install it), failed, or not selected."""
    if row.key in report.missing:
        return report.missing[row.key]
    for outcome in report.outcomes:
        if outcome.task.row is row and outcome.task.workload == workload and outcome.error:
            return "FAILED: " + outcome.error.splitlines()[-1][:150]
    return "not selected"


def _scenarios_md(report: Report) -> str:
    results = scenarios(report)
    parts = []
    latency_rows = [row for row in report.rows if row.key.startswith("latency") or row.key == "chain"]
    if latency_rows:
        lines = [
            f"## Latency, {report.params['uploads']} single uploads one at a time (ms)\n",
            "| row | interval | p50 | p95 | p99 | min | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in latency_rows:
            for what, s in results.get(row.key, {}).items():
                if isinstance(s, dict):
                    lines.append(
                        f"| {row.title} | {what} | {s['p50']} | {s['p95']} | {s['p99']} | {s['min']} | {s['max']} |"
                    )
            if row.key not in results:
                lines.append(f"| {row.title} | {_absent(report, row, None)} | | | | | |")
        parts.append("\n".join(lines) + "\n")
    for row in (r for r in report.rows if r.key == "queue"):
        parts.append(_queue_md(report, row, results.get("queue")))
    return "\n".join(parts)


def _queue_md(report: Report, row: Row, queue: dict[str, Any] | None) -> str:
    events = report.params["queue_events"]
    if not queue:
        return f"## {events:,} events queued at once\n\n{_absent(report, row, None)}\n"
    return (
        f"## {events:,} events queued at once (`conveyor up`, host processes)\n\n| | |\n|---|---|\n"
        f"| peak RSS of `conveyor up` (Python) | {queue['peak_rss_mib']:.0f} MiB |\n"
        f"| RSS of the embedded SeaweedFS at the end | {queue['seaweedfs_rss_mib']:.0f} MiB |\n"
        f"| API latency while draining, p50 / p99 / max | {queue['api_p50_ms']:.0f} / {queue['api_p99_ms']:.0f} / "
        f"{queue['api_max_ms']:.0f} ms ({queue['api_samples']} requests) |\n"
        f"| most jobs queued at one time | {queue['max_queued']} |\n"
        f"| put rate (16 threads) | {queue['put_per_s']:.0f} files/s |\n"
        f"| drain: first put → last job done | {queue['drain_s']:.0f} s ({queue['jobs_per_s']:.1f} jobs/s) |\n"
    )


def _notes_md(report: Report) -> str:
    notes = [
        "## How to read this\n",
        "- Ratios come first and are what to quote: this machine is shared and its seconds drift; each ratio is "
        "this row's median time per file ÷ the column's, both from this invocation.",
        f"- Slow rows (a container or a Lithops v2 call per file) run N = {report.params['slow_files']} files, the "
        f"others N = {report.params['files']}; ratios are per file, so they compare.",
        "- Conveyor rows: the clock runs from the first PUT (a separate uploader process, 8 threads) to the "
        "ledger's end time of the last job, whose outputs are stored; every output is checked. Platform and "
        "engine start-up are not timed. Baselines read and write local files.",
        "- Lithops: the clock includes creating the FunctionExecutor; `podman run`: a private store, `--rm`, "
        "`--network none`, one container per file.",
        "- Peak MiB: the largest PSS (shared pages split, not double-counted) of the measured process tree, "
        f"sampled every 10 ms at first, then every {PSS_SAMPLE_S:g} s: the runner and its children (for Conveyor: "
        "SeaweedFS and the engine's daemons too; not the uploader, which stands for the user, nor the containers, "
        "which their engine daemonises); never less than the runner's own peak RSS.",
        "- Latency: one upload at a time, the next after the previous job finished. Script start is written "
        "by the script's first command; output stored is the job's end in the ledger, just after stage-out.",
        f"- This invocation took {report.duration_s / 60:.1f} min. `make bench` (the defaults) takes about "
        f"{MAKE_BENCH_MIN} min on this machine, `make bench-quick` (`--quick`) about {MAKE_BENCH_QUICK_MIN} min.",
    ]
    return "\n".join(notes) + "\n"


def _row_md(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# ---- chart ------------------------------------------------------------------------------------


def draw_chart(report: Report, path: Path) -> None:
    """Median ms per file of every throughput row, min-max whiskers, one panel per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = throughput(report)
    panels = [w for w in report.workloads if w.key in table]
    figure, axes = plt.subplots(
        len(panels) or 1, 1, figsize=(9, 1.2 + 0.45 * len(report.rows) * len(panels or [1])), squeeze=False
    )
    for axis, workload in zip(axes[:, 0], panels, strict=False):
        stats = table[workload.key]
        keys = [row.key for row in report.rows if row.key in stats]
        medians = [stats[k].per_file * 1000 for k in keys]
        low = [m - min(stats[k].runs) / stats[k].files * 1000 for k, m in zip(keys, medians, strict=True)]
        high = [max(stats[k].runs) / stats[k].files * 1000 - m for k, m in zip(keys, medians, strict=True)]
        colors = ["tab:orange" if k.startswith("conveyor") else "tab:blue" for k in keys]
        axis.barh(keys, medians, xerr=[low, high], color=colors)
        axis.set_xscale("log")
        axis.invert_yaxis()
        axis.set_xlabel("ms per file (median, min–max), log scale")
        axis.set_title(f"{workload.title}, {report.params['workers']} at a time", fontsize=9)
    figure.suptitle(f"Conveyor vs baselines: {report.machine}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
