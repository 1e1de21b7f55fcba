"""The ingestion job end to end on a real local Ray and a real S3 API, with the real PDFs.

One S3 corpus holds the real manual and reference card, an HTML page, a Markdown file,
a DOCX, an exact duplicate and one file of each kind of bad input; runs are checked
for content, error reasons, exactly-once output and incremental reruns.
"""

from __future__ import annotations

import dataclasses
import time
import zipfile
from pathlib import Path

import pyarrow.compute as pc
import pytest

from jobs.ingest import IngestConfig, InputListing, exit_status, main, plan_files, warn_of_vanished_files_elsewhere
from rayfleet import storage
from rayfleet.config import ConfigError, load_config
from rayfleet.documents import plan_input
from rayfleet.ingestion import LEDGER_COLUMNS, latest_rows
from rayfleet.tables import drop_rows_of, read_folder
from tests.jobs.storage_faults import ray_workers_failing_to_open
from tests.text.samples import (
    PDFS, blank_pdf, docx_bytes, eml_bytes, encrypted_pdf, picture_bytes, pptx_bytes, scanned_pdf, xlsx_bytes,
)  # fmt: skip

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MAX_TOKENS = 200

HTML = b"""<html><head><title>Plotting notes</title></head><body><h1>Plotting notes</h1>
<p>Use <code>set logscale y</code> to plot growth on a log axis.</p></body></html>"""
MARKDOWN = b"# Octave tips\n\nRun `octave --eval code` to evaluate code without a session.\n"
EDITED_MARKDOWN = b"# Octave tips\n\nRun `octave --no-gui` to work in the terminal only.\n"
NOTICE = ["Close valve 7 before the pump is opened."]
SCANNED = ["Inspection of the cooling tower, page one.", "The fan belt showed wear and was replaced."]


def upload_corpus(prefix: str) -> None:
    files = {
        "pdfs/gnuplot.pdf": (PDFS / "gnuplot.pdf").read_bytes(),
        "pdfs/refcard-a4.pdf": (PDFS / "refcard-a4.pdf").read_bytes(),
        "copies/refcard-again.pdf": (PDFS / "refcard-a4.pdf").read_bytes(),
        "web/notes.html": HTML,
        "notes/tips.md": MARKDOWN,
        "notes/pump.docx": docx_bytes(),
        "slides/review.pptx": pptx_bytes(),
        "sheets/costs.xlsx": xlsx_bytes(),
        "mail/review.eml": eml_bytes(),
        "scans/notice.png": picture_bytes(NOTICE, "PNG"),
        "scans/scanned.pdf": scanned_pdf(SCANNED),
        "bad/corrupt.pdf": b"%PDF-1.4 not a pdf at all",
        "bad/locked.pdf": encrypted_pdf(),
        "bad/scan.pdf": blank_pdf(),
        "bad/photo.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
        "bad/huge.txt": b"word " * 400_000,
        "bad/budget.xls": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512),
        "notes/~$pump.docx": b"\x05Alice" + bytes(157),  # Office's lock file beside an open document
        "slides/Thumbs.db": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512),
    }
    for name, data in files.items():
        storage.write_bytes(storage.join(prefix, name), data)


def ingest(input_uri: str, output_uri: str) -> dict:
    overrides = [
        f"input={input_uri}",
        f"output={output_uri}",
        "max_file_bytes=1500000",
        f"chunking.max_tokens={MAX_TOKENS}",
    ]
    return main(load_config(IngestConfig, overrides))


def test_corpus_is_ingested_with_errors_duplicates_and_incremental_reruns(ray_cluster, s3_prefix):
    upload_corpus(f"{s3_prefix}/raw")
    output = f"{s3_prefix}/corpus"

    first = ingest(f"{s3_prefix}/raw", output)

    documents = read_folder(
        f"{output}/documents", ["doc_id", "source", "title", "text", "page_count", "mime_type", "bytes"]
    )
    by_name = {row["source"].rsplit("/", 1)[-1]: row for row in documents.to_pylist()}
    names = sorted(by_name)
    assert [name for name in names if "refcard" not in name] == [
        "costs.xlsx", "gnuplot.pdf", "notes.html", "notice.png", "pump.docx", "review.eml", "review.pptx",
        "scanned.pdf", "tips.md"]  # fmt: skip
    assert len(names) == 10, "the two copies of the refcard are one document"
    assert by_name["gnuplot.pdf"]["page_count"] == 311 and by_name["review.pptx"]["page_count"] == 3
    assert "Seal failures fell by a third." in by_name["review.pptx"]["text"]
    assert by_name["costs.xlsx"]["page_count"] == 2 and "seals | 1200" in by_name["costs.xlsx"]["text"]
    assert "impeller | yearly" in by_name["review.eml"]["text"], "the e-mail's DOCX attachment is read too"
    assert "The load command executes each line" in by_name["gnuplot.pdf"]["text"]
    assert by_name["notes.html"]["title"] == "Plotting notes" and by_name["notes.html"]["mime_type"] == "text/html"
    assert len(set(documents["doc_id"].to_pylist())) == documents.num_rows == 10
    assert "valve 7" in by_name["notice.png"]["text"] and by_name["notice.png"]["mime_type"] == "image/png"
    assert "cooling tower" in by_name["scanned.pdf"]["text"], "a scanned page is read by OCR in the job's workers"

    errors = read_folder(f"{output}/errors", ["source", "stage", "error"]).to_pylist()
    reasons = {row["source"].rsplit("/", 1)[-1]: row["error"] for row in errors}
    assert set(reasons) == {"corrupt.pdf", "locked.pdf", "scan.pdf", "photo.png", "huge.txt", "budget.xls"}
    assert "corrupt PDF" in reasons["corrupt.pdf"] and "encrypted" in reasons["locked.pdf"]
    assert "no extractable text" in reasons["scan.pdf"] and "unreadable image" in reasons["photo.png"]
    assert "oversize" in reasons["huge.txt"] and "save it as XLSX" in reasons["budget.xls"]

    chunks = read_folder(
        f"{output}/chunks", ["chunk_id", "doc_id", "text", "token_count", "page_start", "page_end", "source", "title"]
    )
    assert set(chunks["doc_id"].to_pylist()) == set(documents["doc_id"].to_pylist())
    names = {row["doc_id"]: (row["source"], row["title"]) for row in documents.to_pylist()}
    chunk_names = [(c["doc_id"], c["source"], c["title"]) for c in chunks.to_pylist()]
    assert all((source, title) == names[doc_id] for doc_id, source, title in chunk_names), "named for citations"
    assert len(set(chunks["chunk_id"].to_pylist())) == chunks.num_rows, "no chunk twice (the duplicate's are removed)"
    assert pc.max(chunks["token_count"]).as_py() <= MAX_TOKENS and pc.min(chunks["token_count"]).as_py() >= 1
    assert pc.max(chunks["page_end"]).as_py() == 311
    assert (first["documents"], first["duplicates"], first["errors"], first["files"]) == (10, 1, 6, 17)
    assert (first["files_in_error"], exit_status(first)) == (6, 0), "bad files beside good ones fail nothing"
    assert first["system_files_skipped"] == 2, "the lock file and the thumbnail cache are passed over, not errors"
    assert first["pages"] == 311 + 3 + 3 + 2 + 4 + 1 + 1 and first["chunks"] == chunks.num_rows

    for table in ("documents", "chunks", "_files", "errors"):
        files = storage.list_files(f"{output}/{table}", suffixes=(".parquet",))
        assert len(files) == 1 and "--merged-" in files[0], f"the run's batch files of {table} are merged: {files}"

    # The documents table is a valid input of the summarization job.
    plan = plan_input(storage.list_parquet_files(f"{output}/documents"), "doc_id", "text", set(), "check")
    assert not plan.errors and plan.todo_rows == 10

    rerun = ingest(f"{s3_prefix}/raw", output)
    assert (rerun["files"], rerun["already_done"], rerun["documents"], rerun["chunks"]) == (0, 17, 0, 0)

    time.sleep(1)  # a new file, and nothing else, is picked up
    storage.write_bytes(f"{s3_prefix}/raw/notes/later.md", b"# Later\n\nA note added after the first run.\n")
    incremental = ingest(f"{s3_prefix}/raw", output)
    assert (incremental["files"], incremental["documents"], incremental["already_done"]) == (1, 1, 17)
    assert read_folder(f"{output}/documents", ["doc_id"]).num_rows == 11


def test_ray_job_submit_with_default_config_on_local_paths(ray_cluster, tmp_path):
    """`ray job submit --working-dir . -- python -m jobs.ingest input=... output=...`, as the checks run it."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "refcard-a4.pdf").write_bytes((PDFS / "refcard-a4.pdf").read_bytes())
    (raw / "tips.md").write_bytes(MARKDOWN)
    (raw / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    output = tmp_path / "out"

    client = JobSubmissionClient(f"http://{ray_cluster.dashboard_url}")
    job_id = client.submit_job(
        entrypoint=f"python -m jobs.ingest input={raw} output={output}", runtime_env={"working_dir": str(REPO)}
    )
    deadline = time.monotonic() + 300
    while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "job did not finish in 5 minutes"
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-5000:]
    assert "progress:" in logs

    documents = read_folder(str(output / "documents"), ["doc_id", "text", "page_count"]).to_pylist()
    assert sorted(row["page_count"] for row in documents) == [1, 3]
    chunks = read_folder(str(output / "chunks"), ["chunk_id", "doc_id", "text"])
    assert chunks.num_rows >= 10
    errors = read_folder(str(output / "errors"), ["source", "error"]).to_pylist()
    assert [row["source"].rsplit("/", 1)[-1] for row in errors] == ["photo.png"]


def test_ingest_brings_an_index_up_to_date_so_new_files_are_retrievable(ray_cluster, s3_prefix, monkeypatch):
    from rayfleet import tables
    from rayfleet.retrieval import Retriever

    monkeypatch.setattr(tables, "COMPACT_FAN_IN", 3)  # the small files of these one-file runs merged every 3

    storage.write_bytes(f"{s3_prefix}/raw/tips.md", MARKDOWN)
    storage.write_bytes(f"{s3_prefix}/raw/notes.html", HTML)
    overrides = [f"input={s3_prefix}/raw", f"output={s3_prefix}/corpus", f"index_output={s3_prefix}/index"]

    first = main(load_config(IngestConfig, overrides))
    assert first["index"]["build_mode"] == "full" and first["index"]["rows"] == first["chunks"]

    storage.write_bytes(f"{s3_prefix}/raw/pump.docx", docx_bytes())
    second = main(load_config(IngestConfig, overrides))
    assert second["index"]["build_mode"] == "incremental" and second["index"]["embedded"] == second["chunks"] > 0
    retriever = Retriever.load(f"{s3_prefix}/index")
    assert retriever.rows.num_rows == first["chunks"] + second["chunks"]
    hit = retriever.search("How often must the impeller be replaced?", k=1, hybrid=True)[0]
    assert hit.source.endswith("pump.docx")

    unchanged = main(load_config(IngestConfig, overrides))
    assert (
        unchanged["index"]["build_mode"] == "unchanged" and unchanged["index"]["version"] == second["index"]["version"]
    )

    # tips.md is edited: the index holds its new text only, never the version the file no longer says.
    def indexed_tips() -> list[str]:
        rows = Retriever.load(f"{s3_prefix}/index").rows
        texts, sources = rows["text"].to_pylist(), rows["source"].to_pylist()
        return [text for text, source in zip(texts, sources) if source.endswith("tips.md")]

    storage.write_bytes(f"{s3_prefix}/raw/tips.md", EDITED_MARKDOWN)
    edited = main(load_config(IngestConfig, overrides))
    assert edited["index"]["superseded_documents"] == 1 and edited["index"]["removed_documents"] == 0
    tips = indexed_tips()
    assert any("octave --no-gui" in text for text in tips) and not any("--eval" in text for text in tips)
    storage.write_bytes(f"{s3_prefix}/raw/tips.md", MARKDOWN)  # ...and put back as it was
    main(load_config(IngestConfig, overrides))
    tips = indexed_tips()
    assert any("--eval" in text for text in tips) and not any("--no-gui" in text for text in tips)

    # notes.html is deleted from the folder: its document leaves the index; put back, it returns.
    def indexed_sources() -> set[str]:
        return {source.rsplit("/", 1)[-1] for source in Retriever.load(f"{s3_prefix}/index").rows["source"].to_pylist()}

    storage.delete(f"{s3_prefix}/raw/notes.html")
    deleted = main(load_config(IngestConfig, overrides))
    assert deleted["deleted"] == 1 and indexed_sources() == {"tips.md", "pump.docx"}
    assert main(load_config(IngestConfig, overrides))["deleted"] == 0, "recorded once"
    storage.write_bytes(f"{s3_prefix}/raw/notes.html", HTML)
    restored = main(load_config(IngestConfig, overrides))
    assert restored["files"] == 1 and indexed_sources() == {"tips.md", "pump.docx", "notes.html"}

    # pump.docx is deleted and the job is given that one file, as the dispatcher does on its deletion.
    storage.delete(f"{s3_prefix}/raw/pump.docx")
    one_file = [f"input={s3_prefix}/raw/pump.docx", *overrides[1:]]
    gone = main(load_config(IngestConfig, one_file))
    assert (gone["deleted"], gone["files"]) == (1, 0) and indexed_sources() == {"tips.md", "notes.html"}
    assert main(load_config(IngestConfig, one_file))["deleted"] == 0, "recorded once"

    # Nine runs wrote to the tables, most a file each: merged by size tier, no row lost or doubled.
    for table, key in (("documents", "doc_id"), ("chunks", "chunk_id")):
        files = storage.list_files(f"{s3_prefix}/corpus/{table}", suffixes=(".parquet",))
        assert len(files) < 3 and any(tables.OUR_FILE.fullmatch(name.rsplit("/", 1)[-1])["dashes"] for name in files)
        keys = read_folder(f"{s3_prefix}/corpus/{table}", [key])[key].to_pylist()
        assert len(keys) == len(set(keys)), f"no {key} twice"
    documents = read_folder(f"{s3_prefix}/corpus/documents", ["source"])["source"].to_pylist()
    assert {source.rsplit("/", 1)[-1] for source in documents} == {"notes.html", "pump.docx", "tips.md"}


@pytest.mark.parametrize("name", ["handbook.zip", "handbook.tar.gz"])
def test_an_archive_is_ingested_file_by_file_and_kept_up_to_date_as_it_changes(ray_cluster, s3_prefix, name):
    """As the dispatcher runs it: the job given the one archive that arrived, changed, then was deleted."""
    from tests.test_archives import tarred, zipped

    def packed(files: dict[str, bytes]) -> bytes:
        return zipped(files) if name.endswith(".zip") else tarred(files, "gz")

    archive, pump = f"{s3_prefix}/incoming/{name}", docx_bytes()
    storage.write_bytes(archive, packed({"notes/tips.md": MARKDOWN, "web/notes.html": HTML, "pump.docx": pump}))
    overrides = [f"input={archive}", f"output={s3_prefix}/corpus", "missing_ok=true"]

    def sources() -> dict[str, str]:
        documents = read_folder(f"{s3_prefix}/corpus/documents", ["doc_id", "source"]).to_pylist()
        return {row["source"]: row["doc_id"] for row in documents}

    first = main(load_config(IngestConfig, overrides))
    assert (first["files"], first["documents"], first["errors"]) == (3, 3, 0)
    assert sorted(sources()) == [f"{archive}!/notes/tips.md", f"{archive}!/pump.docx", f"{archive}!/web/notes.html"]
    chunks = read_folder(f"{s3_prefix}/corpus/chunks", ["source", "text"]).to_pylist()
    assert any("octave --eval" in row["text"] and row["source"].endswith("!/notes/tips.md") for row in chunks)
    assert main(load_config(IngestConfig, overrides))["already_done"] == 3, "a rerun reads nothing again"

    time.sleep(1)  # the archive replaced: tips.md edited, notes.html taken out, pump.docx as it was
    before = sources()
    storage.write_bytes(archive, packed({"notes/tips.md": EDITED_MARKDOWN, "pump.docx": pump}))
    changed = main(load_config(IngestConfig, overrides))
    assert (changed["files"], changed["documents"], changed["deleted"]) == (2, 1, 1)
    latest = latest_rows(read_folder(f"{s3_prefix}/corpus/_files", LEDGER_COLUMNS).to_pylist())
    assert latest[f"{archive}!/web/notes.html"]["outcome"] == "deleted"
    assert latest[f"{archive}!/pump.docx"]["doc_id"] == before[f"{archive}!/pump.docx"], "same bytes, same document"
    assert latest[f"{archive}!/notes/tips.md"]["doc_id"] != before[f"{archive}!/notes/tips.md"]

    storage.delete(archive)
    gone = main(load_config(IngestConfig, overrides))
    assert (gone["files"], gone["deleted"]) == (0, 2), "the archive's files are recorded deleted with it"


def test_underscore_names_are_documents_hidden_ones_are_counted_and_a_link_to_the_output_is_not_read(
    ray_cluster, tmp_path, caplog
):
    """A site's sources (Hugo's _index.md, Jekyll's _posts/) are documents; a "." name is hidden, counted,
    and not recorded deleted when a run named it itself; a name that is not UTF-8 is skipped, named in the log;
    the output reached through a link to its folder is the job's own, never read back as input."""
    site = tmp_path / "site"
    (site / "_posts").mkdir(parents=True)
    pages = {"_index.md": "# Trails\n\nThe trail map of the valley.", "about.md": "# About\n\nWe walk on Sundays.",
             "_posts/hike.md": "# Hike\n\nTen kilometres along the ridge.",
             ".draft.md": "# Draft\n\nNot yet."}  # fmt: skip
    for name, text in pages.items():
        (site / name).write_text(text)
    (site / "caf\udce9.md").write_text("# Cafe\n\nLatin-1 named.")  # the byte 0xe9: not UTF-8
    (tmp_path / "alias").symlink_to(site)
    folder_run = [f"input={tmp_path}/alias", f"output={site}/corpus"]

    with caplog.at_level("WARNING", logger="rayfleet.storage"):
        first = main(load_config(IngestConfig, folder_run))
    assert (first["documents"], first["errors"], first["hidden_files_skipped"]) == (3, 0, 1)
    titles = set(read_folder(f"{site}/corpus/documents", ["title"])["title"].to_pylist())
    assert titles == {"Trails", "About", "Hike"}
    assert "whose names are not UTF-8" in caplog.text and "caf\\xe9.md" in caplog.text

    named = main(load_config(IngestConfig, [f"input={tmp_path}/alias/.draft.md", f"output={site}/corpus"]))
    assert named["documents"] == 1, "a hidden file named itself is read"
    again = main(load_config(IngestConfig, folder_run))
    assert (again["files"], again["already_done"], again["deleted"], again["errors"]) == (0, 3, 0, 0)
    latest = latest_rows(read_folder(f"{site}/corpus/_files", LEDGER_COLUMNS).to_pylist())
    assert latest[f"{tmp_path}/alias/.draft.md"]["outcome"] == "ingested", "still there: not deleted"
    assert not [source for source in latest if "/corpus/" in source], "the output's own tables are never input"


def test_a_file_put_back_as_an_earlier_version_with_its_times_is_ingested_again(tmp_path):
    """A backup restored with its modification time (``cp -p``, ``rsync -a``, ``tar x``) matches a ledger row of
    an older version: only the file's latest row says whether it is done."""
    config = load_config(IngestConfig, [f"input={tmp_path / 'docs'}", f"output={tmp_path / 'corpus'}"])
    source = str(tmp_path / "docs" / "prices.md")
    first = storage.FileEntry(source, 40, "2026-12-01T10:00:00+00:00")
    edited = storage.FileEntry(source, 40, "2026-12-02T10:00:00+00:00")
    ledger = [{"source": source, "bytes": entry.size, "modified": entry.modified, "doc_id": doc_id,
               "outcome": "ingested", "run_id": run_id, "created_at": created_at}
              for entry, doc_id, run_id, created_at in [(first, "v1", "r1", "2026-12-01T10:01:00"),
                                                        (edited, "v2", "r2", "2026-12-02T10:01:00")]]  # fmt: skip
    assert plan_files(config, [edited], latest_rows(ledger)) == ([], 1)
    assert plan_files(config, [first], latest_rows(ledger)) == ([first], 0), "the restored first version is current"


def test_files_of_a_folder_moved_away_from_the_inputs_are_warned_of_with_the_remedy(tmp_path, caplog):
    (tmp_path / "new").mkdir()
    (tmp_path / "elsewhere.md").write_text("still here")
    (tmp_path / "pack.zip").write_bytes(b"")
    sources = {str(tmp_path / "old" / "prices.md"): "ingested", str(tmp_path / "old" / "gone.md"): "deleted",
               str(tmp_path / "elsewhere.md"): "ingested", f"{tmp_path / 'pack.zip'}!/a.md": "ingested",
               f"{tmp_path / 'old.zip'}!/b.md": "duplicate", "s3://bucket/raw/x.md": "ingested",
               str(tmp_path / "new" / "prices.md"): "ingested"}  # fmt: skip
    ledger = [{"source": source, "bytes": 1, "modified": "m", "doc_id": "d", "outcome": outcome, "run_id": "r1",
               "created_at": "2026-12-01T10:00:00"} for source, outcome in sources.items()]  # fmt: skip
    listing = InputListing([], 0, [str(tmp_path / "new") + "/"], [])
    with caplog.at_level("WARNING", logger="jobs.ingest"):
        vanished = warn_of_vanished_files_elsewhere(listing, latest_rows(ledger))
    assert vanished == [f"{tmp_path / 'old.zip'}!/b.md", str(tmp_path / "old" / "prices.md")]
    assert "2 file(s) ingested before from outside this run's input no longer exist" in caplog.text
    assert "input=[<new>, <old>]" in caplog.text
    with_old = InputListing([], 0, [str(tmp_path / "new") + "/"], [str(tmp_path / "old"), str(tmp_path / "old.zip")])
    assert warn_of_vanished_files_elsewhere(with_old, latest_rows(ledger)) == [], "the old folder given: deleted"


def test_an_archive_storage_fails_to_list_keeps_its_files_and_fails_the_run_for_a_rerun(
    ray_cluster, tmp_path, monkeypatch, caplog
):
    """A read from storage that fails while an archive is listed says nothing of what it holds: its files are
    neither recorded deleted (out of the corpus and the index until the next run) nor is it ingested as itself."""
    (tmp_path / "raw").mkdir()
    archive = tmp_path / "raw" / "handbook.zip"
    with zipfile.ZipFile(archive, "w") as package:
        package.writestr("leave.md", MARKDOWN)
        package.writestr("canteen.md", EDITED_MARKDOWN)
    (tmp_path / "raw" / "notes.md").write_bytes(b"# Notes\n\nThe printer is on the second floor.\n")
    overrides = [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"]
    first = main(load_config(IngestConfig, overrides))
    assert (first["documents"], first["unread_archives"], exit_status(first)) == (3, 0, 0)

    class FailingOpen:  # fault injection: storage fails to open the archive (S3 down, after its retries)
        def open_input_file(self, path: str):
            raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: connection reset")

    resolve = storage.resolve
    monkeypatch.setattr(storage, "resolve", lambda uri: dataclasses.replace(resolve(uri), filesystem=FailingOpen())
                        if uri == str(archive) else resolve(uri))  # fmt: skip
    with caplog.at_level("ERROR"):
        failed = main(load_config(IngestConfig, overrides))
        assert exit_status(failed) == 1
    assert (failed["files"], failed["already_done"], failed["deleted"], failed["unread_archives"]) == (0, 1, 0, 1)
    assert f"{archive} could not be read to list its files" in caplog.text
    assert "run again to ingest them" in caplog.text
    latest = latest_rows(read_folder(f"{tmp_path}/corpus/_files", LEDGER_COLUMNS).to_pylist())
    assert {latest[f"{archive}!/{name}"]["outcome"] for name in ("leave.md", "canteen.md")} == {"ingested"}
    assert str(archive) not in latest, "not ingested as a document of its own"

    monkeypatch.undo()
    rerun = main(load_config(IngestConfig, overrides))
    assert (rerun["already_done"], rerun["deleted"], rerun["unread_archives"], exit_status(rerun)) == (3, 0, 0, 0)


def test_a_file_storage_fails_to_read_is_left_unrecorded_and_fails_the_run_for_a_rerun(ray_cluster, tmp_path, caplog):
    """A failed read says nothing of the file: it is not set aside as an error (then only retry_errors=true
    would read it again), its last good version stays current, and the run exits 1 so that a rerun (the
    dispatcher's retry) ingests it."""
    (tmp_path / "raw").mkdir()
    tips, notes = tmp_path / "raw" / "tips.md", tmp_path / "raw" / "notes.md"
    tips.write_bytes(MARKDOWN)
    notes.write_bytes(b"# Notes\n\nThe printer is on the second floor.\n")
    overrides = [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"]
    first = main(load_config(IngestConfig, overrides))
    tips.write_bytes(EDITED_MARKDOWN)

    with ray_workers_failing_to_open([str(tips)], ray_cluster), caplog.at_level("ERROR"):
        failed = main(load_config(IngestConfig, overrides))
        assert exit_status(failed) == 1
    assert (failed["files"], failed["already_done"], failed["errors"], failed["unread_files"]) == (0, 1, 0, 1)
    assert f"{tips} (OSError: AWS Error NETWORK_CONNECTION" in caplog.text
    assert "run again to ingest them" in caplog.text
    latest = latest_rows(read_folder(f"{tmp_path}/corpus/_files", LEDGER_COLUMNS).to_pylist())
    assert latest[str(tips)]["run_id"] == first["run_id"], "nothing recorded of the file: its last version stays"
    assert not read_folder(f"{tmp_path}/corpus/errors", ["source"]).num_rows, "nothing set aside"

    rerun = main(load_config(IngestConfig, overrides))
    assert (rerun["files"], rerun["documents"], rerun["unread_files"], exit_status(rerun)) == (1, 1, 0, 0)
    texts = read_folder(f"{tmp_path}/corpus/documents", ["source", "text", "run_id"]).to_pylist()
    assert [row["text"] for row in texts if row["run_id"] == rerun["run_id"]] == [EDITED_MARKDOWN.decode()]


def test_purge_superseded_removes_deleted_and_earlier_versions_text_and_keeps_the_current(ray_cluster, tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "tips.md").write_bytes(MARKDOWN)
    (tmp_path / "raw" / "notice.txt").write_text(NOTICE[0])
    (tmp_path / "raw" / "copy.txt").write_text(NOTICE[0])  # the notice's bytes: it keeps that document
    (tmp_path / "raw" / "plots.html").write_bytes(HTML)
    overrides = [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"]
    main(load_config(IngestConfig, overrides))
    time.sleep(1)
    (tmp_path / "raw" / "tips.md").write_bytes(EDITED_MARKDOWN)
    (tmp_path / "raw" / "notice.txt").unlink()
    (tmp_path / "raw" / "plots.html").unlink()

    kept = main(load_config(IngestConfig, overrides))
    assert (kept["deleted"], kept["purged_documents"]) == (2, 0)
    assert len(read_folder(f"{tmp_path}/corpus/documents", ["doc_id"])) == 4, "history kept by default"
    purged = main(load_config(IngestConfig, [*overrides, "purge_superseded=true"]))
    documents = read_folder(f"{tmp_path}/corpus/documents", ["text"])["text"].to_pylist()
    chunks = read_folder(f"{tmp_path}/corpus/chunks", ["text"])["text"].to_pylist()
    assert purged["purged_documents"] == 2, "the first tips.md and plots.html"
    assert len(documents) == 2, "the edited tips.md, and the notice its copy holds"
    assert not [text for text in documents + chunks if "logscale" in text or "--eval" in text]
    assert [text for text in chunks if "--no-gui" in text] and [text for text in chunks if "valve 7" in text]
    again = main(load_config(IngestConfig, [*overrides, "purge_superseded=true"]))
    assert (again["purged_documents"], again["already_done"]) == (0, 2)


def test_a_purge_killed_between_its_tables_leaves_a_file_put_back_whole(ray_cluster, tmp_path, monkeypatch):
    """The purge removes documents, then chunks: killed in between, a file put back is parsed again and
    indexed, not taken as already ingested with its chunks gone."""
    import jobs.ingest as ingest_job

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "plots.html").write_bytes(HTML)
    (tmp_path / "raw" / "tips.md").write_bytes(MARKDOWN)
    overrides = [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"]
    main(load_config(IngestConfig, overrides))
    (tmp_path / "raw" / "plots.html").unlink()
    purged_tables = []

    def killed_after_one_table(folder: str, column: str, values) -> int:  # fault injection: the run dies there
        purged_tables.append(folder.rsplit("/", 1)[-1])
        drop_rows_of(folder, column, values)
        raise RuntimeError("fault injection: killed mid-purge")

    monkeypatch.setattr(ingest_job, "drop_rows_of", killed_after_one_table)
    with pytest.raises(RuntimeError, match="killed mid-purge"):
        main(load_config(IngestConfig, [*overrides, "purge_superseded=true"]))
    monkeypatch.undo()
    (tmp_path / "raw" / "plots.html").write_bytes(HTML)  # put back

    main(load_config(IngestConfig, overrides))
    chunks = read_folder(f"{tmp_path}/corpus/chunks", ["text"])["text"].to_pylist()
    assert [text for text in chunks if "logscale" in text], "the file put back has its chunks: indexable again"
    assert purged_tables == ["documents"]
    assert main(load_config(IngestConfig, [*overrides, "purge_superseded=true"]))["purged_documents"] == 0


def test_an_input_that_never_existed_fails_the_run_and_is_named(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "tips.md").write_bytes(MARKDOWN)
    overrides = [f"input=[{tmp_path}/raw, {tmp_path}/raw/typo.md]", f"output={tmp_path}/corpus"]
    with pytest.raises(FileNotFoundError, match=r"typo\.md \(and no earlier run ingested one there\)"):
        main(load_config(IngestConfig, overrides))
    assert not (tmp_path / "corpus").exists(), "a refused run leaves no output folder behind"
    # As the dispatcher runs it on a file deleted before it was ingested: nothing to do.
    gone_file = [f"input={tmp_path}/raw/typo.md", f"output={tmp_path}/corpus", "missing_ok=true"]
    gone = main(load_config(IngestConfig, gone_file))
    assert (gone["files"], gone["deleted"], gone["documents"]) == (0, 0, 0)


def test_text_extensions_are_taken_with_or_without_a_dot_and_anything_else_is_refused(tmp_path):
    base = [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"]
    assert load_config(IngestConfig, [*base, "text_extensions=[cfg, .SQL]"]).text_extensions == [".cfg", ".sql"]
    assert load_config(IngestConfig, [*base, "text_extensions=ini"]).text_extensions == [".ini"]
    with pytest.raises(ConfigError, match="are not file extensions"):
        load_config(IngestConfig, [*base, "text_extensions=[notes/cfg]"])


def test_an_archive_cap_below_the_file_cap_is_refused(tmp_path):
    base = [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"]
    with pytest.raises(ConfigError, match=r"max_archive_bytes \(1000\) is below max_file_bytes \(2000\)"):
        load_config(IngestConfig, [*base, "max_archive_bytes=1000", "max_file_bytes=2000"])
    assert load_config(IngestConfig, [*base, "max_archive_bytes=2000", "max_file_bytes=2000"]).max_archive_bytes == 2000


@pytest.mark.parametrize("inside", ["corpus", "corpus/raw"])
def test_an_input_in_the_output_folder_is_refused_not_silently_empty(tmp_path, inside):
    with pytest.raises(ConfigError, match=r"lies in output .*whose files are never ingested"):
        load_config(IngestConfig, [f"input={tmp_path}/{inside}", f"output={tmp_path}/corpus"])
    apart = load_config(IngestConfig, [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"])
    assert apart.output == f"{tmp_path}/corpus"


def test_a_run_whose_every_file_is_set_aside_exits_1_with_the_reasons_and_so_does_its_rerun(
    ray_cluster, tmp_path, caplog
):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "empty.txt").write_bytes(b"")
    (tmp_path / "raw" / "blob.xyz").write_bytes(bytes(range(256)) * 4)
    overrides = [f"input={tmp_path}/raw", f"output={tmp_path}/corpus"]
    first = main(load_config(IngestConfig, overrides))
    caplog.clear()
    assert (first["errors"], first["files_in_error"], exit_status(first)) == (2, 2, 1)
    assert f"{tmp_path}/raw/blob.xyz: unknown file type" in caplog.text, "the reason, for a log tail or dead letter"
    rerun = main(
        load_config(IngestConfig, overrides)
    )  # nothing new to try: still a failure, as a dispatcher's retry sees
    caplog.clear()
    assert (rerun["files"], rerun["already_done"], rerun["files_in_error"], exit_status(rerun)) == (0, 2, 2, 1)
    assert "set aside by earlier runs" in caplog.text and "retry_errors=true" in caplog.text
    (tmp_path / "raw" / "tips.md").write_bytes(MARKDOWN)
    assert exit_status(main(load_config(IngestConfig, overrides))) == 0
