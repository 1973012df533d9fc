"""The `conveyor` command line as a user runs it: a real `conveyor up` and CLI subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import Cli, cli_environment, start_up, stop_up

pytestmark = pytest.mark.e2e


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return cli_environment(tmp_path)


@pytest.fixture
def cli(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Cli]:
    up = start_up(cli_env, tmp_path)
    try:
        yield Cli(cli_env, tmp_path)
    finally:
        stop_up(up, tmp_path)


WORKFLOW = """\
functions:
  oscar:
  - my-cluster:
      name: shout
      image: busybox
      script: shout.sh
      environment:
        Variables:
          SUFFIX: "!"
      input:
      - storage_provider: minio.default
        path: words/in
      output:
      - storage_provider: minio.default
        path: words/loud
"""


def write_workflow(directory: Path) -> Path:
    (directory / "shout.sh").write_text(
        'echo "shouting $(basename "$INPUT_FILE_PATH")"\n'
        'tr a-z A-Z < "$INPUT_FILE_PATH" | sed "s/$/$SUFFIX/" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"\n'
    )
    fdl = directory / "workflow.yaml"
    fdl.write_text(WORKFLOW)
    return fdl


def test_the_cli_drives_a_workflow_from_apply_to_delete(cli: Cli, tmp_path: Path) -> None:
    fdl = write_workflow(tmp_path)
    applied = cli("apply", str(fdl))
    assert "created shout" in applied.stdout
    assert "image 'busybox' is ignored" in applied.stderr
    assert "updated shout" in cli("apply", str(fdl)).stdout

    words = tmp_path / "words"
    words.mkdir()
    for word in ("alpha", "beta", "gamma", "delta", "epsilon"):
        (words / f"{word}.txt").write_text(word)
    assert "uploaded 5 file(s)" in cli("put", *sorted(str(p) for p in words.iterdir()), "words/in/").stdout
    assert "5 succeeded" in cli("wait", "shout", "--jobs", "5", "--timeout", "60").stdout

    jobs = cli.json("jobs", "shout")
    assert len(jobs) == 5 and {j["state"] for j in jobs} == {"succeeded"}
    assert sorted(j["trigger"]["ref"]["key"] for j in jobs) == [
        f"in/{w}.txt" for w in ("alpha", "beta", "delta", "epsilon", "gamma")
    ]
    latest = cli("logs", "shout")
    assert "shouting" in latest.stdout and "latest job" in latest.stderr
    short = jobs[-1]["job_id"][: len("shout-") + 8]
    assert short in cli("jobs", "shout").stdout
    assert jobs[-1]["job_id"] in cli("logs", "shout", short).stdout
    listed = cli.json("ls", "words/loud/")
    assert sorted(o["key"] for o in listed) == [f"loud/{w}.txt" for w in ("alpha", "beta", "delta", "epsilon", "gamma")]
    cli("get", "words/loud/", str(tmp_path / "got"))
    assert (tmp_path / "got" / "alpha.txt").read_text() == "ALPHA!"

    (tmp_path / "one.txt").write_text("direct")
    cli("run", "shout", "--input", str(tmp_path / "one.txt"), "--output", str(tmp_path / "answer"))
    assert (tmp_path / "answer").read_text() == "DIRECT!"

    assert [s["service"]["name"] for s in cli.json("services")] == ["shout"]
    stored = cli.json("ls", "words/loud/")
    assert len(stored) == 6, "five from the uploads and one from the run"
    assert "deleted shout" in cli("delete", str(fdl)).stdout
    assert cli.json("services") == []
    assert cli.json("ls", "words/loud/") == stored, "deleting a service must keep its data"


def test_the_cli_speaks_plain_oscar_routes_to_an_oscar_cluster(cli: Cli, tmp_path: Path) -> None:
    """With client.api=oscar the CLI uses only the routes a real OSCAR cluster serves."""
    oscar = Cli(cli.env | {"CONVEYOR_CLIENT__API": "oscar"}, cli.cwd)
    fdl = write_workflow(tmp_path)
    assert "created shout" in oscar("apply", str(fdl)).stdout
    assert "updated shout" in oscar("apply", str(fdl)).stdout
    (tmp_path / "x.txt").write_text("oscar")
    oscar("put", str(tmp_path / "x.txt"), "words/in/")
    assert "1 succeeded" in oscar("wait", "shout", "--jobs", "1", "--timeout", "60").stdout

    jobs = oscar.json("jobs", "shout")
    assert [j["state"] for j in jobs] == ["succeeded"]
    assert "shouting x.txt" in oscar("logs", "shout").stdout
    assert oscar.json("services")[0]["jobs"] == {"succeeded": 1}
    (tmp_path / "y.txt").write_text("run")
    oscar("run", "shout", "--input", str(tmp_path / "y.txt"), "--output", str(tmp_path / "y.out"))
    assert (tmp_path / "y.out").read_text() == "RUN!"


def test_apply_lists_every_problem_with_its_line_and_deploys_nothing(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "ok.sh").write_text("true\n")
    (tmp_path / "bad.yaml").write_text(
        "functions:\n"
        "  oscar:\n"
        "  - c:\n"
        "      name: fine\n"
        "      image: busybox\n"
        "      script: ok.sh\n"
        "      input: [{path: fine/in}]\n"
        "  - c:\n"
        "      name: broken\n"
        "      script: missing.sh\n"
        "      memory: 1Gx\n"
        "      input: [{path: loop/in}]\n"
        "      output: [{path: loop/in/out}, {storage_provider: s3.nowhere, path: x/y}]\n"
    )

    refused = cli("apply", str(tmp_path / "bad.yaml"), check=False)

    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert any("bad.yaml:10:" in e and "missing.sh" in e for e in errors), errors
    assert any("bad.yaml:11:" in e and "memory" in e and "1Gx" in e for e in errors), errors
    assert any(":9:" in e and "image" in e and "required" in e for e in errors), errors
    assert len(errors) >= 3
    assert cli.json("services") == []


def test_bad_input_gets_one_line_and_exit_code_2(cli: Cli, tmp_path: Path) -> None:
    cases = [
        ("put", "only-one-argument"),
        ("run", "nosuch", "--text", "x"),
        ("jobs", "--status", "bogus"),
        ("logs", "nosuch"),
        ("put", str(tmp_path / "absent.txt"), "bucket/in/"),
    ]
    for args in cases:
        done = cli(*args, check=False)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.strip(), args


def test_commands_say_how_to_start_the_platform_when_it_is_not_running(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = Cli(cli_env, tmp_path)("services", check=False)
    assert done.returncode == 1
    assert "conveyor up" in done.stderr


def test_ctrl_c_stops_up_and_a_second_up_finds_everything(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli = Cli(cli_env, tmp_path)
    up = start_up(cli_env, tmp_path)
    try:
        cli("apply", str(write_workflow(tmp_path)))
        (tmp_path / "a.txt").write_text("a")
        cli("put", str(tmp_path / "a.txt"), "words/in/")
        cli("wait", "--jobs", "1", "--timeout", "60")
    finally:
        stop_up(up, tmp_path)
    assert not (Path(cli_env["CONVEYOR_DATA_DIR"]) / "platform.json").exists()

    up = start_up(cli_env, tmp_path)
    try:
        assert [s["service"]["name"] for s in cli.json("services")] == ["shout"]
        assert [j["state"] for j in cli.json("jobs")] == ["succeeded"]
        assert [o["key"] for o in cli.json("ls", "words/loud/")] == ["loud/a.txt"]
    finally:
        stop_up(up, tmp_path)


def test_up_starts_again_after_being_killed_with_sigkill(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli = Cli(cli_env, tmp_path)
    up = start_up(cli_env, tmp_path)
    cli("apply", str(write_workflow(tmp_path)))
    up.kill()
    up.wait(10)
    stale = cli("services", check=False)
    assert stale.returncode == 1 and "was killed" in stale.stderr

    again = start_up(cli_env, tmp_path)
    try:
        assert [s["service"]["name"] for s in cli.json("services")] == ["shout"]
        (tmp_path / "b.txt").write_text("b")
        cli("put", str(tmp_path / "b.txt"), "words/in/")
        assert "1 succeeded" in cli("wait", "--jobs", "1", "--timeout", "60").stdout
    finally:
        stop_up(again, tmp_path)


def test_every_command_has_help_with_an_example(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli = Cli(cli_env, tmp_path)
    for command in ("up", "apply", "delete", "services", "put", "get", "ls", "jobs", "logs", "wait", "run", "demo"):
        shown = cli(command, "--help").stdout
        assert "Example" in shown, command
