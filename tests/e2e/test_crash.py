"""kill -9 of the platform in the middle of a workflow: nothing lost, nothing done twice.

The size is a parameter: CONVEYOR_TEST_CRASH_FILES (default 500) here; bench/crash_recovery.py
runs the same scenario at 10,000 files.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests.support.crash import SERVICES, run_crash_scenario

pytestmark = pytest.mark.e2e

CRASH_FILES = int(os.environ.get("CONVEYOR_TEST_CRASH_FILES", "500"))


def test_kill_9_mid_workflow_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    result = run_crash_scenario(tmp_path, CRASH_FILES)

    assert result.lost == 0
    assert result.middles == CRASH_FILES
    for name in SERVICES:
        assert result.succeeded[name] == CRASH_FILES, result.states
        assert result.jobs_per_input[name] == Counter({1: CRASH_FILES}), "one succeeded job per input object"
        assert result.pending[name] == 0
    assert "picked up where they were" in result.recovery_note


@pytest.mark.parametrize("mode", ["each", "directory"])
def test_kill_9_mid_batches_loses_nothing_and_each_input_succeeds_once(tmp_path: Path, mode: str) -> None:
    files = max(100, CRASH_FILES // 3)
    result = run_crash_scenario(tmp_path, files, batch=mode)

    assert result.lost == 0
    assert result.middles == files
    for name in SERVICES:
        assert result.succeeded[name] == files, result.states
        assert result.jobs_per_input[name] == Counter({1: files}), "one succeeded job per input object"
        assert result.pending[name] == 0
