"""Every file under cluster/ parses: YAML (all documents), Python, shell and the Dockerfile."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
DOCKERFILE_INSTRUCTIONS = {"FROM", "ARG", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "USER", "CMD", "ENTRYPOINT",
                           "EXPOSE", "LABEL", "VOLUME", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"}  # fmt: skip


def cluster_files() -> list[Path]:
    return sorted(path for path in CLUSTER.rglob("*") if path.is_file() and "__pycache__" not in path.parts)


def dockerfile_instructions(text: str) -> list[str]:
    """The instruction of each logical line (continuations joined, comments dropped)."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.rstrip("\\")
        if not stripped.endswith("\\"):
            logical.append(current.split()[0])
            current = ""
    assert not current, "the last instruction ends in a line continuation"
    return logical


@pytest.mark.parametrize("path", cluster_files(), ids=lambda path: str(path.relative_to(CLUSTER)))
def test_cluster_file_parses(path):
    if path.suffix in (".yaml", ".yml"):
        documents = list(yaml.safe_load_all(path.read_text()))
        assert documents and all(isinstance(document, dict) for document in documents)
    elif path.suffix == ".py":
        ast.parse(path.read_text(), filename=str(path))
    elif path.suffix == ".sh":
        subprocess.run(["bash", "-n", str(path)], check=True)
    elif path.name == "Dockerfile":
        instructions = dockerfile_instructions(path.read_text())
        assert instructions[0] in ("FROM", "ARG") and "FROM" in instructions
        assert set(instructions) <= DOCKERFILE_INSTRUCTIONS, set(instructions) - DOCKERFILE_INSTRUCTIONS
    else:
        pytest.fail(f"{path}: no parser for this kind of file; add one to this test")
