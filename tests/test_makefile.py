"""The Makefile's recipes that need no set-up, run as users run them, in a copy of it (nothing of
this checkout, and no other Ray head, is touched: its head is found by the copy's own temp dir)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make(target: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", target], cwd=folder, capture_output=True, text=True, timeout=60
    )


def test_stopping_a_head_that_is_not_running_and_cleaning_up_succeed(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / ".data" / "s3").mkdir(parents=True)
    (tmp_path / ".run").mkdir()

    stopped = make("ray-down", tmp_path)
    assert stopped.returncode == 0 and "no Ray head of this checkout" in stopped.stdout, stopped.stderr
    cleaned = make("clean", tmp_path)  # ray-down, s3-down, then the folders
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (tmp_path / ".data").exists() and not (tmp_path / ".run").exists()
