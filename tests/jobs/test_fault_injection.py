"""The fault-injection job used by the dispatcher's tests: it says what it was given and exits as told."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_exits_with_the_requested_status_and_names_its_input():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.fault_injection", "input=s3://b/incoming/x.parquet", "exit_code=3"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3
    assert "fault injection job for s3://b/incoming/x.parquet: exiting with 3" in result.stdout


def test_exit_code_zero_succeeds():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.fault_injection", "input=x", "exit_code=0"], cwd=REPO, timeout=60
    )
    assert result.returncode == 0
