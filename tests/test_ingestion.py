"""What the ingest job passes over before parsing: files an operating system or Office leaves beside documents."""

from __future__ import annotations

import pytest

from rayfleet.ingestion import is_system_file


@pytest.mark.parametrize(
    "uri, system",
    [
        ("s3://b/raw/~$arterly report.docx", True),  # Office's owner (lock) file
        ("/data/raw/Thumbs.db", True),
        ("/data/raw/photos/desktop.ini", True),
        ("s3://b/raw/.DS_Store", True),
        ("s3://b/raw/quarterly report.docx", False),
        ("s3://b/raw/thumbs.db.pdf", False),
        ("s3://b/raw/notes~$.md", False),
    ],
)
def test_system_files_are_told_from_documents(uri, system):
    assert is_system_file(uri) is system
