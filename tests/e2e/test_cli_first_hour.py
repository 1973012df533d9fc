"""Rough edges a newcomer meets in the first hour (issue 15), each tried as they would: the `conveyor`
command as a subprocess, its output read from a pipe as in a CI log."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.cli.app import hoist_global_options
from tests.support.cli import Cli, cli_environment, start_up, stop_up

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
