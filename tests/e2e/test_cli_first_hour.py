"""Rough edges a newcomer meets in the first hour (issue 15), each tried as they would: the `conveyor`
command as a subprocess, its output read from a pipe as in a CI log."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conveyor.cli.app import hoist_global_options
from conveyor.model.job import JobRecord, JobState
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.cli import CONVEYOR, Cli, cli_environment, cli_for, start_up, stop_up
from tests.support.platform import put_text, read_text, service, wait_for_jobs, wait_for_state

pytestmark = pytest.mark.e2e


def piped_cli(tmp_path: Path, **extra: str) -> Cli:
    """The CLI as a CI job runs it: no terminal and no COLUMNS."""
    env = cli_environment(tmp_path, **extra)
    env.pop("COLUMNS")
    return Cli(env, tmp_path)


def test_a_malformed_config_file_is_one_line_naming_file_line_and_column_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "conveyor.toml"
    config.write_text("[api]\nport = = 3\n")
    cli = piped_cli(tmp_path, CONVEYOR_CONFIG=str(config))

    for command in (["config", "show"], ["status"], ["services"]):
        done = cli(*command, check=False)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
        assert f"{config} is not valid TOML" in done.stderr
        assert "line 2, column 8" in done.stderr


def test_global_options_are_accepted_after_the_command_too() -> None:
    assert hoist_global_options(["up", "--data-dir", "d", "--port", "0"]) == ["--data-dir", "d", "up", "--port", "0"]
    assert hoist_global_options(["jobs", "svc", "--endpoint=http://x", "--user", "u"]) == [
        "--endpoint=http://x",
        "--user",
        "u",
        "jobs",
        "svc",
    ]
    assert hoist_global_options(["run", "svc", "--", "--user", "x"]) == ["run", "svc", "--", "--user", "x"]


def test_up_with_data_dir_after_the_command_starts_there_and_says_how_to_find_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    env = cli_environment(tmp_path)
    up = start_up(env, tmp_path, ["--data-dir", str(elsewhere)])
    try:
        cli = Cli(env, tmp_path)  # its own CONVEYOR_DATA_DIR is another directory
        assert cli("status", "--data-dir", str(elsewhere)).returncode == 0
        assert cli("status", check=False).returncode == 1
    finally:
        stop_up(up, tmp_path)
    banner = (tmp_path / "up.log").read_text()
    assert f"other commands find this platform with --data-dir {elsewhere}" in banner


def test_errors_and_notes_never_wrap_in_a_pipe(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 4) / "data"
    done = piped_cli(tmp_path)("services", "--data-dir", str(deep), check=False)

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert str(deep) in done.stderr


PICKY = """case "$(basename "$INPUT_FILE_PATH")" in
  bad*) echo "cannot read it"; exit 4 ;;
  slow*) sleep 60 ;;
esac
cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"
"""


def test_dead_jobs_show_retry_says_what_it_left_and_job_ids_are_accepted_as_copied(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    platform.catalog.apply(
        [service("picky", PICKY, ["picky/in"], ["picky/out"], retries=0, retry_script_failures=True)]
    )
    put_text(platform, "picky/in/bad.txt", "b")
    put_text(platform, "picky/in/good.txt", "g")
    put_text(platform, "picky/in/slow.txt", "s")
    slow = next(
        record.job_id
        for record in (
            wait_for_state(platform, job.job_id, {"running", "succeeded", "dead"}) for job in _jobs(platform)
        )
        if record.trigger and record.trigger.ref.name == "slow.txt"
    )
    wait_for_state(platform, slow, {"running"})
    platform.jobs.cancel("picky", [slow])
    jobs = wait_for_jobs(platform, "picky", 3)
    assert sorted(job.state for job in jobs) == sorted([JobState.DEAD, JobState.SUCCEEDED, JobState.CANCELLED])
    cancelled_log = platform.jobs.read_log("picky", slow) or ""
    assert cancelled_log.rstrip().endswith("job cancelled: cancelled on request"), cancelled_log
    assert "ERROR" not in cancelled_log.splitlines()[-1]
    cli = cli_for(platform, tmp_path)

    table = cli("services").stdout
    header, row = (re.split(r"\s*[│┃]\s*", line) for line in table.splitlines() if "picky" in line or "dead" in line)
    assert (header[-2], row[-2]) == ("dead", "1"), table

    done = cli("retry", "picky", "--failed")
    assert "queued again: 0 job(s)" in done.stdout
    assert "not retried: 1 dead job(s): add --dead" in done.stderr
    assert "not retried: 1 cancelled job(s): name them to run them again" in done.stderr

    dead = next(job.job_id for job in jobs if job.state == JobState.DEAD)
    uuid_part = dead.removeprefix("picky-")
    for copied in (dead, f"picky-{uuid_part[:4]}", uuid_part[:8]):
        assert "cannot read it" in cli("logs", "picky", copied).stdout, copied

    for command in (["jobs", "pickx"], ["logs", "pickx"], ["logs", "pickx", "1234"]):
        done = cli(*command, check=False)
        assert done.returncode == 2, (command, done.stdout)
        assert "there is no service 'pickx'; services: picky" in done.stderr


def _jobs(platform: Platform) -> list[JobRecord]:
    deadline = time.monotonic() + 30
    while len(records := [record for _, record in platform.ledger.list_jobs("picky")]) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return records


def test_wait_judges_the_jobs_of_this_round_and_its_numbers_add_up(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    platform.catalog.apply(
        [
            service("picky", PICKY, ["picky/in"], ["picky/out"], retries=0, retry_script_failures=True),
            service("strict", PICKY, ["strict/in"], ["strict/out"], retries=0),
        ]
    )
    cli = cli_for(platform, tmp_path)
    put_text(platform, "picky/in/bad-old.txt", "history")
    wait_for_jobs(platform, "picky", 1)
    time.sleep(3)

    put_text(platform, "picky/in/good.txt", "g")
    done = cli("wait", "--since", "2s", "--timeout", "60")
    assert "done: 1 succeeded" in done.stdout, "the dead job of an earlier round is not judged"
    time.sleep(3)

    put_text(platform, "picky/in/bad.txt", "b")
    put_text(platform, "strict/in/bad-1.txt", "b")
    put_text(platform, "strict/in/bad-2.txt", "b")
    done = cli("wait", "--since", "2s", "--timeout", "60", check=False)
    assert done.returncode == 1, done.stderr
    assert "3 of 3 job(s) did not succeed: 1 dead, 2 failed; see conveyor jobs --status dead" in done.stderr

    done = cli("wait", "nosuch", check=False)
    assert done.returncode == 2 and "there is no service 'nosuch'" in done.stderr
    done = cli("wait", "--since", "yesterday", check=False)
    assert done.returncode == 2 and "give an ISO time" in done.stderr


def test_put_refuses_where_no_service_reads_says_where_each_file_went_and_follows_rsync(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    platform.catalog.apply([service("shout", "cp $INPUT_FILE_PATH $TMP_OUTPUT_DIR/", ["text/in"], ["text/out"])])
    cli = cli_for(platform, tmp_path)
    (tmp_path / "f.txt").write_text("f")
    frames = tmp_path / "frames"
    (frames / "sub").mkdir(parents=True)
    (frames / "a.txt").write_text("a")
    (frames / "sub" / "b.txt").write_text("b")

    no_slash = cli("put", str(tmp_path / "f.txt"), "text/in", check=False)
    assert no_slash.returncode == 2
    assert "no service reads text/in, so no job would start; did you mean text/in/" in no_slash.stderr
    assert "read by shout" in no_slash.stderr and "--force" in no_slash.stderr
    typo = cli("put", str(tmp_path / "f.txt"), "txet/in/", check=False)
    assert typo.returncode == 2 and "no service reads txet/in/f.txt" in typo.stderr
    assert "txet" not in platform.storage.default.list_buckets(), "a refused upload creates no bucket"
    invalid = cli("put", "--force", str(tmp_path / "f.txt"), "b1/in/", check=False)
    assert invalid.returncode == 2 and "bucket 'b1' is not a valid S3 bucket name" in invalid.stderr

    done = cli("put", str(tmp_path / "f.txt"), "text/in/")
    assert f"{tmp_path / 'f.txt'} -> text/in/f.txt (starts shout)" in done.stdout
    contents = cli("put", f"{frames}/", "text/in/")
    assert "-> text/in/a.txt (starts shout)" in contents.stdout
    assert "-> text/in/sub/b.txt (starts shout)" in contents.stdout
    folder = cli("put", str(frames), "text/in/")
    assert "-> text/in/frames/sub/b.txt (starts shout)" in folder.stdout

    assert cli("get", "text/in/f.txt", "-").stdout == "f", "- is standard output"
    missing = cli("get", "text/in/nosuch.txt", check=False)
    assert missing.returncode == 2 and "there is no object text/in/nosuch.txt" in missing.stderr

    forced = cli("put", "--force", str(tmp_path / "f.txt"), "archive/2026/")
    assert "created bucket archive" in forced.stderr
    assert "-> archive/2026/f.txt (no service reads it)" in forced.stdout


def test_a_command_run_while_up_is_still_starting_waits_for_it(tmp_path: Path) -> None:
    """A script that starts `conveyor up` in the background and waits for /health, as the issue's user did."""
    env = cli_environment(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [*CONVEYOR, "up", "--port", str(port), "--s3-port", "0", "--runtime", "process"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and up.poll() is None, (tmp_path / "up.log").read_text()
                time.sleep(0.02)
        services = Cli(env, tmp_path)("services", "--json")
        assert services.returncode == 0, services.stderr
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)


def test_apply_lists_every_problem_in_one_round_and_json_gets_them_too(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("echo\n")
    (tmp_path / "loop.yaml").write_text(
        "functions:\n  oscar:\n  - c:\n      name: loop\n      image: busybox\n      script: s.sh\n"
        "      memory: lots\n      input:\n      - {storage_provider: minio.default, path: photos/in}\n"
        "      output:\n      - {storage_provider: minio.default, path: photos/in/out}\n"
        "      - {storage_provider: s3.nowhere, path: results/out}\n"
    )
    done = piped_cli(tmp_path)("apply", "loop.yaml", "--json", check=False)

    assert done.returncode == 2
    answer = json.loads(done.stdout)
    assert answer["created"] == [] and [p["field"] for p in answer["problems"]] == [
        "loop.yaml:7",
        "loop.yaml:11",
        "loop.yaml:12",
    ]
    assert done.stderr.count("error:") == 3


TWO_CLUSTERS = """\
functions:
  oscar:
  - cluster-a:
      name: first
      image: busybox
      script: copy.sh
      input:
      - {storage_provider: minio.default, path: start/in}
      output:
      - {storage_provider: minio.cluster-b, path: handover/in}
  - cluster-b:
      name: second
      image: busybox
      script: copy.sh
      input:
      - {storage_provider: minio.default, path: handover/in}
      output:
      - {storage_provider: minio.default, path: handover/out}
"""


def test_a_multi_cluster_fdl_deploys_each_entry_on_its_cluster_and_reaches_the_other_store(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    a = make_platform(data_dir=tmp_path / "a")
    b = make_platform(data_dir=tmp_path / "b")
    (tmp_path / "copy.sh").write_text('cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"\n')
    (tmp_path / "two.yaml").write_text(TWO_CLUSTERS)
    (tmp_path / "conveyor.toml").write_text(
        f'[clusters.cluster-b]\nendpoint = "{b.api_url}"\n'
        f'user = "{b.credentials.admin_user}"\npassword = "{b.credentials.admin_password}"\n'
    )
    on_a, on_b = cli_for(a, tmp_path), cli_for(b, tmp_path)
    on_a.env["CONVEYOR_CONFIG"] = str(tmp_path / "conveyor.toml")

    ambiguous = on_a("apply", "two.yaml", check=False)
    assert ambiguous.returncode == 2 and "deploys to clusters cluster-a, cluster-b: say which" in ambiguous.stderr
    on_b("apply", "two.yaml", "--cluster", "cluster-b")
    on_a("apply", "two.yaml", "--cluster", "cluster-a")
    assert [s.name for s in a.catalog.services()] == ["first"] and [s.name for s in b.catalog.services()] == ["second"]

    put_text(a, "start/in/x.txt", "across")
    wait_for_jobs(a, "first", 1)
    [handled] = wait_for_jobs(b, "second", 1)

    assert handled.state == JobState.SUCCEEDED
    assert read_text(b, "handover/out/x.txt", tmp_path) == "across"
