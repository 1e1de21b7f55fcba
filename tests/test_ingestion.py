"""What the ingest job passes over before parsing: files an operating system or Office leaves beside documents."""

from __future__ import annotations

import pyarrow as pa
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
        ("s3://b/incoming/hr/._Leave policy.md", True),  # macOS's AppleDouble copy beside "Leave policy.md"
        ("s3://b/incoming/hr/notes._draft.md", False),
    ],
)
def test_system_files_are_told_from_documents(uri, system):
    assert is_system_file(uri) is system


def test_a_file_ingested_again_after_a_change_supersedes_its_earlier_versions():
    from datetime import datetime, timezone

    from rayfleet.ingestion import files_behind, superseded_documents

    def row(source, doc_id, outcome, minute, run="r"):
        return {"source": source, "doc_id": doc_id, "outcome": outcome, "run_id": run,
                "created_at": datetime(2026, 11, 30, 12, minute, tzinfo=timezone.utc)}  # fmt: skip

    ledger = [row("a.md", "a1", "ingested", 0), row("a.md", "a2", "ingested", 5),  # edited
              row("b.md", "b1", "ingested", 0), row("b.md", None, "error", 5),  # edited into something unreadable
              row("c.md", "c1", "ingested", 0), row("c.md", "c2", "ingested", 3),
              row("c.md", "c1", "ingested", 6),  # reverted
              row("d.md", "a1", "duplicate", 7)]  # a copy of a.md's first version, still on disk  # fmt: skip
    assert superseded_documents(ledger) == {"c2"}
    assert superseded_documents(ledger[:-1]) == {"a1", "c2"}
    assert files_behind(ledger) == ["b.md"], "b.md's unreadable change leaves b1 served"
    assert files_behind(ledger + [row("b.md", None, "deleted", 8)]) == []


def test_a_deleted_file_holds_no_document_until_it_is_put_back():
    from datetime import datetime, timezone

    from rayfleet.ingestion import latest_rows, superseded_documents

    def row(source, doc_id, outcome, minute):
        return {"source": source, "doc_id": doc_id, "outcome": outcome, "run_id": "r",
                "created_at": datetime(2026, 11, 30, 12, minute, tzinfo=timezone.utc)}  # fmt: skip

    ledger = [row("a.md", "a1", "ingested", 0), row("b.md", "b1", "ingested", 0), row("a.md", "a1", "deleted", 5)]
    assert superseded_documents(ledger) == {"a1"}
    assert latest_rows(ledger)["a.md"]["outcome"] == "deleted"
    assert superseded_documents(ledger + [row("a.md", "a1", "ingested", 9)]) == set()


def test_a_file_still_parsing_is_named_in_the_log_until_it_is_done(tmp_path, monkeypatch, caplog):
    import logging
    import time

    import rayfleet.ingestion as ingestion
    from rayfleet import storage
    from rayfleet.ingestion import ChunkingConfig, FileIngester

    def slow_parse_fault(name, data, *options):
        time.sleep(0.5)  # a parse this slow, at a heartbeat of 0.1 s
        return real_parse(name, data, *options)

    real_parse = ingestion.parse_file
    monkeypatch.setattr(ingestion, "parse_file", slow_parse_fault)
    monkeypatch.setattr(ingestion, "PARSE_HEARTBEAT_S", 0.1)
    (tmp_path / "long.md").write_text("# Long\n\nA document that takes a while to parse.\n")
    [entry] = storage.list_entries(str(tmp_path / "long.md"))
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1 << 20, run_id="test")

    def beats() -> list[str]:
        return [record.getMessage() for record in caplog.records if "still parsing" in record.getMessage()]

    with caplog.at_level(logging.INFO, logger="rayfleet.ingestion"):
        result = ingester.ingest(entry, {})
        beats_when_done = len(beats())
        time.sleep(0.3)  # three heartbeats' time after the parse: none may come

    assert result.document and result.chunks
    assert beats_when_done >= 3 and len(beats()) == beats_when_done
    assert all(beat.startswith(f"still parsing {entry.uri} (0.0 MB): ") for beat in beats())


def test_a_copy_met_later_in_the_run_is_a_duplicate_of_the_file_parsed_first(tmp_path):
    from rayfleet import storage
    from rayfleet.ingestion import OUTCOME_DUPLICATE, OUTCOME_INGESTED, ChunkingConfig, FileIngester

    for name in ("first.md", "copy.md"):
        (tmp_path / name).write_text("# Report\n\nThe same words in two files.\n")
    first, copy = (storage.list_entries(str(tmp_path / name))[0] for name in ("first.md", "copy.md"))
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1 << 20, run_id="test")

    parsed, again = ingester.ingest(first, {}), ingester.ingest(copy, {})

    assert parsed.ledger["outcome"] == OUTCOME_INGESTED and parsed.document and parsed.chunks
    assert again.ledger["outcome"] == OUTCOME_DUPLICATE and again.ledger["doc_id"] == parsed.document["doc_id"]
    assert again.document is None and not again.chunks, "the copy is not parsed or chunked again"


def test_a_gzipped_file_becomes_the_document_inside_and_a_bomb_is_set_aside(tmp_path):
    import gzip

    from rayfleet import storage
    from rayfleet.ingestion import OUTCOME_ERROR, OUTCOME_INGESTED, ChunkingConfig, FileIngester

    markdown = b"# Field notes\n\nThe pump on line two was replaced in March.\n"
    (tmp_path / "notes.md").write_bytes(markdown)
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "notes.md.gz").write_bytes(gzip.compress(markdown))
    (tmp_path / "archive" / "zeros.txt.gz").write_bytes(gzip.compress(b"0" * (2 << 20)))
    plain, packed, bomb = (
        storage.list_entries(str(tmp_path / path))[0]
        for path in ("notes.md", "archive/notes.md.gz", "archive/zeros.txt.gz")
    )
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1 << 20, run_id="test")

    expected, result, refused = ingester.ingest(plain, {}), ingester.ingest(packed, {}), ingester.ingest(bomb, {})

    assert result.ledger["outcome"] == OUTCOME_INGESTED and result.document["source"] == packed.uri
    assert (
        result.document["bytes"] == packed.size and result.document["parser"] == f"gzip+{expected.document['parser']}"
    )
    for key in ("title", "text", "mime_type", "page_offsets", "headings"):
        assert result.document[key] == expected.document[key], key
    assert [chunk["text"] for chunk in result.chunks] == [chunk["text"] for chunk in expected.chunks]
    assert refused.ledger["outcome"] == OUTCOME_ERROR and refused.document is None
    assert refused.error["stage"] == "parse" and "inflates past max_file_bytes=1048576" in refused.error["error"]


def test_extensions_named_as_text_are_read_as_plain_text_and_others_stay_unknown(tmp_path):
    from rayfleet import storage
    from rayfleet.ingestion import OUTCOME_ERROR, ChunkingConfig, FileIngester

    changelog = b"pump (1.2) stable; urgency=low\n\n  * Replace the impeller seal.\n"
    (tmp_path / "changelog.Debian").write_bytes(changelog)
    (tmp_path / "setup.cfg").write_bytes(b"[metadata]\nname = pump\n")
    debian, cfg = storage.list_entries(str(tmp_path))
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1 << 20, run_id="test", text_extensions={".debian"})

    read, unknown = ingester.ingest(debian, {}), ingester.ingest(cfg, {})

    assert read.document["mime_type"] == "text/plain" and "Replace the impeller seal." in read.document["text"]
    assert unknown.ledger["outcome"] == OUTCOME_ERROR
    assert "unknown file type '.cfg'" in unknown.error["error"] and "text_extensions" in unknown.error["error"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_ingest_outputs_root_stands_for_the_table_a_job_reads(where, tmp_path, request):
    from rayfleet import storage
    from rayfleet.ingestion import table_of_ingest_output
    from rayfleet.tables import write_table

    root = str(tmp_path / "corpus") if where == "local" else f"{request.getfixturevalue('s3_prefix')}/corpus"
    for folder in ("_files", "chunks", "documents"):
        write_table(storage.join(root, folder, "part-1.parquet"), pa.table({"doc_id": ["d"]}))
    assert table_of_ingest_output(root, "chunks") == storage.join(root, "chunks")
    assert table_of_ingest_output(root + "/", "documents") == storage.join(root, "documents")
    assert table_of_ingest_output(storage.join(root, "chunks"), "chunks") == storage.join(root, "chunks")
    plain = str(tmp_path / "plain") if where == "local" else f"{request.getfixturevalue('s3_prefix')}/plain"
    write_table(storage.join(plain, "chunks", "part-1.parquet"), pa.table({"doc_id": ["d"]}))  # no _files ledger
    assert table_of_ingest_output(plain, "chunks") == plain, "only an ingest output is read for its table"
