"""The summarization job end to end on a real local Ray and a real S3 API.

Fast engine here (tiny Llama on transformers) so the Ray/S3 mechanics — bad input,
errors table, exactly-once output after a real kill — are what is tested; the vLLM +
SmolLM2 path through ``ray job submit`` is tests/jobs/test_summarize_submit.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.summarize import SummarizeConfig, main
from rayfleet import storage
from rayfleet.tables import read_folder, write_table

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def documents(prefix: str, n: int, name: str = "docs.parquet") -> list[str]:
    ids = [f"doc-{i:03d}" for i in range(n)]
    texts = [f"Report {i}. The committee met on day {i} and approved budget line {i}." for i in range(n)]
    write_table(storage.join(prefix, name), pa.table({"doc_id": ids, "text": texts}))
    return ids


def job_arguments(tiny_llama_path, input_uri, output_uri, batch_size=4):
    return [
        f"input={input_uri}", f"output={output_uri}", "engine.kind=transformers",
        f"engine.model={tiny_llama_path}", "engine.max_model_len=512", "sampling.max_tokens=16",
        f"batch_size={batch_size}",
    ]  # fmt: skip


def config(tiny_llama_path, input_uri, output_uri, **overrides) -> SummarizeConfig:
    from rayfleet.config import load_config

    return load_config(SummarizeConfig, job_arguments(tiny_llama_path, input_uri, output_uri, **overrides))


def test_bad_input_goes_to_errors_and_the_rest_is_summarized(ray_cluster, s3_prefix, tiny_llama_path, caplog):
    caplog.set_level("INFO", logger="jobs.summarize")
    good = documents(f"{s3_prefix}/in", 6)
    write_table(f"{s3_prefix}/in/mistyped.parquet", pa.table({"doc_id": ["m1"], "text": pa.array([1], pa.int64())}))
    write_table(f"{s3_prefix}/in/missing.parquet", pa.table({"doc_id": ["x1"], "content": ["no text column"]}))
    write_table(
        f"{s3_prefix}/in/rows.parquet",
        pa.table(
            {
                "doc_id": ["r-empty", "r-bytes", "r-ok"],
                "text": pa.array([b"   ", b"\xc3\x28 broken", b"fine text"], pa.binary()),
            }
        ),
    )
    storage.write_bytes(f"{s3_prefix}/in/corrupt.parquet", b"PAR1 not really parquet")

    report = main(config(tiny_llama_path, f"{s3_prefix}/in", f"{s3_prefix}/out"))

    summaries = read_folder(f"{s3_prefix}/out", ["doc_id", "summary", "engine", "model", "completion_tokens"])
    assert sorted(summaries["doc_id"].to_pylist()) == sorted(good + ["r-ok"])
    assert set(summaries["engine"].to_pylist()) == {"transformers"}
    assert all(tokens >= 1 for tokens in summaries["completion_tokens"].to_pylist())
    errors = read_folder(f"{s3_prefix}/out/_errors", ["source", "row", "doc_id", "error"]).to_pylist()
    by_source = {(e["source"].rsplit("/", 1)[-1], e["doc_id"]): e for e in errors}
    assert "has type int64" in by_source[("mistyped.parquet", None)]["error"]
    assert "missing column 'text'" in by_source[("missing.parquet", None)]["error"]
    assert "unreadable Parquet file" in by_source[("corrupt.parquet", None)]["error"]
    assert by_source[("rows.parquet", "r-empty")]["row"] == 0
    assert len(storage.list_files(f"{s3_prefix}/out/_errors")) == 1, "the run's error files are merged"
    assert "not valid UTF-8" in by_source[("rows.parquet", "r-bytes")]["error"]
    assert report["summarized"] == 7 and report["errors"] == 5
    progress = [record.getMessage() for record in caplog.records if record.getMessage().startswith("progress:")]
    assert progress[-1].startswith("progress: 9/9 documents (100%), 2 errors"), (
        "rows set aside while reading count as done"
    )


def test_rerun_of_a_finished_job_does_nothing(ray_cluster, s3_prefix, tiny_llama_path):
    documents(f"{s3_prefix}/in", 3)
    first = main(config(tiny_llama_path, f"{s3_prefix}/in", f"{s3_prefix}/out"))
    second = main(config(tiny_llama_path, f"{s3_prefix}/in", f"{s3_prefix}/out"))
    assert (first["summarized"], second["summarized"], second["already_done"]) == (3, 0, 3)
    assert read_folder(f"{s3_prefix}/out", ["doc_id"]).num_rows == 3


def test_a_rerun_whose_rows_left_have_no_text_starts_no_engine(s3_prefix, tiny_llama_path, tmp_path):
    write_table(f"{s3_prefix}/in/rows.parquet", pa.table({"doc_id": ["blank", "null"], "text": ["\x00 \u200b", None]}))
    # No model there: had the job started an engine for these rows, it would have failed.
    no_engine = job_arguments(tiny_llama_path, f"{s3_prefix}/in", f"{s3_prefix}/out") + [
        f"engine.model={tmp_path}/none"
    ]
    from rayfleet.config import load_config

    report = main(load_config(SummarizeConfig, no_engine))
    assert (report["summarized"], report["errors"]) == (0, 2)
    errors = read_folder(f"{s3_prefix}/out/_errors", ["doc_id", "error"]).to_pylist()
    assert sorted((e["doc_id"], e["error"]) for e in errors) == [("blank", "empty 'text'"), ("null", "empty 'text'")]


def test_an_ingest_documents_table_is_summarized_at_its_files_current_versions(ray_cluster, tiny_llama_path, tmp_path):
    """The documents table keeps every version ingest read; its _files ledger says which each file holds now."""
    from jobs.ingest import IngestConfig
    from jobs.ingest import main as ingest
    from rayfleet.config import load_config

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("budget", "minutes", "roster"):
        (raw / f"{name}.md").write_text(f"# {name.title()}\n\nThe {name} of the spring meeting, in full.")
    ingest_args = [f"input={raw}", f"output={tmp_path}/corpus"]
    ingest(load_config(IngestConfig, ingest_args))
    time.sleep(1)
    (raw / "budget.md").write_text("# Budget\n\nThe budget of the spring meeting, as amended in May.")
    (raw / "roster.md").unlink()
    ingest(load_config(IngestConfig, ingest_args))
    current = {row["title"]: row["doc_id"] for row in read_folder(f"{tmp_path}/corpus/documents", ["doc_id", "title"])
               .to_pylist()}  # fmt: skip
    assert len(read_folder(f"{tmp_path}/corpus/documents", ["doc_id"])) == 4, "both budgets and the roster are kept"

    report = main(config(tiny_llama_path, f"{tmp_path}/corpus/documents", f"{tmp_path}/summaries"))
    summarized = set(read_folder(f"{tmp_path}/summaries", ["doc_id"])["doc_id"].to_pylist())
    amended = next(row["doc_id"] for row in read_folder(f"{tmp_path}/corpus/documents", ["doc_id", "text"]).to_pylist()
                   if "amended" in row["text"])  # fmt: skip
    assert summarized == {amended, current["Minutes"]}
    assert (report["summarized"], report["superseded_documents"]) == (2, 2)
    sources = {row["doc_id"]: row["source"] for row in read_folder(f"{tmp_path}/summaries", ["doc_id", "source"])
               .to_pylist()}  # fmt: skip
    assert sources == {amended: str(raw / "budget.md"), current["Minutes"]: str(raw / "minutes.md")}, "the files"
    main(config(tiny_llama_path, f"{tmp_path}/corpus", f"{tmp_path}/from_root"))  # the ingest output as the input
    assert set(read_folder(f"{tmp_path}/from_root", ["doc_id"])["doc_id"].to_pylist()) == summarized, "not its chunks"
    every_version = config(tiny_llama_path, f"{tmp_path}/corpus/documents", f"{tmp_path}/all")
    assert main(every_version.model_copy(update={"follow_ingest_ledger": False}))["summarized"] == 4
    again = main(every_version)
    assert (again["summarized"], again["superseded_summaries"]) == (0, 2), "the old budget's and the roster's"


def test_killed_job_resumes_with_nothing_lost_or_doubled(ray_cluster, s3_prefix, smollm2_path):
    """Kill the job's driver for real (SIGKILL) after some batches are committed, then rerun."""
    ids = documents(f"{s3_prefix}/in", 24)
    output = f"{s3_prefix}/out"
    # SmolLM2 on transformers: slow enough (seconds per batch) to kill part-way.
    arguments = job_arguments(smollm2_path, f"{s3_prefix}/in", output, batch_size=2)
    environment = {**os.environ, "RAY_ADDRESS": ray_cluster.address_info["address"], "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "jobs.summarize", *arguments]
    process = subprocess.Popen(command, cwd=REPO, env=environment, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    committed = 0
    while time.monotonic() < deadline and committed < 4:
        time.sleep(1)
        committed = read_folder(output, ["doc_id"]).num_rows if storage.exists(output) else 0
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(3)  # let Ray reap the dead driver's actors
    after_kill = read_folder(output, ["doc_id"]).num_rows
    assert 4 <= after_kill < len(ids), f"the kill must land part-way ({after_kill} of {len(ids)} done)"

    rerun = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    done = read_folder(output, ["doc_id"])["doc_id"].to_pylist()
    assert sorted(done) == sorted(ids), "every document exactly once"
    rerun_id = json.loads(rerun.stdout.strip().splitlines()[-1])["run_id"]
    files = storage.list_files(output, suffixes=(".parquet",), recursive=False)
    assert len([uri for uri in files if f"/part-{rerun_id}-" in uri]) == 1, f"the rerun's batch files merged: {files}"


class OutputWatchingEngine:
    """Wraps the worker's real engine and records, at each call, which summaries are already committed (a spy)."""

    def __init__(self, engine, output: str):
        self.engine, self.output, self.committed_at_call = engine, output, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, conversations, sampling):
        done = read_folder(self.output, ["doc_id"])["doc_id"].to_pylist() if storage.exists(self.output) else []
        self.committed_at_call.append(sorted(done))
        return self.engine.generate(conversations, sampling)


def test_a_batch_commits_its_short_documents_before_its_long_one_is_reduced(tiny_llama_path, tmp_path):
    from jobs.summarize import SummarizeWorker
    from tests.test_summarization import LONG_TEXT

    output = str(tmp_path / "out")
    worker = SummarizeWorker(config(tiny_llama_path, str(tmp_path / "in"), output), "R1")
    watcher = worker.summarizer.engine = OutputWatchingEngine(worker.summarizer.engine, output)
    ids = ["short-1", "long", "short-2"]
    batch = {"doc_id": ids, "text": ["Two words.", LONG_TEXT, "Three more words."], "source": ["in.parquet"] * 3,
             "row": [0, 1, 2], "document_source": [None] * 3, "set_aside": [False] * 3}  # fmt: skip

    figures = worker(batch)

    assert len(watcher.committed_at_call) >= 2, "the long document takes a map level and a reduce level"
    assert watcher.committed_at_call[0] == [] and watcher.committed_at_call[1] == ["short-1", "short-2"]
    assert sorted(read_folder(output, ["doc_id"])["doc_id"].to_pylist()) == sorted(ids), "each summary once"
    assert figures["summaries"] == [3] and figures["errors"] == [0]


class FaultAfterFirstCallEngine:
    """Fault injection: the real engine answers the first call, then every call fails."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, conversations, sampling):
        self.calls.append([conversation[-1]["content"] for conversation in conversations])
        if len(self.calls) > 1:
            raise RuntimeError("injected engine failure")
        return self.engine.generate(conversations, sampling)


def test_a_batch_that_fails_after_an_early_commit_retries_only_the_rest(tiny_llama_path, tmp_path):
    from jobs.summarize import SummarizeWorker
    from tests.test_summarization import LONG_TEXT

    output = str(tmp_path / "out")
    worker = SummarizeWorker(config(tiny_llama_path, str(tmp_path / "in"), output), "R1")
    faulty = worker.summarizer.engine = FaultAfterFirstCallEngine(worker.summarizer.engine)
    batch = {"doc_id": ["short", "long"], "text": ["Two words.", LONG_TEXT], "source": ["in.parquet"] * 2,
             "row": [0, 1], "document_source": [None] * 2, "set_aside": [False] * 2}  # fmt: skip

    figures = worker(batch)

    assert len(faulty.calls) == 3 and any("Two words." in prompt for prompt in faulty.calls[0])
    assert not any("Two words." in prompt for prompt in faulty.calls[2]), "only the long document is retried"
    assert read_folder(output, ["doc_id"])["doc_id"].to_pylist() == ["short"], "committed once, early"
    errors = read_folder(f"{output}/_errors", ["doc_id", "error"]).to_pylist()
    assert errors == [{"doc_id": "long", "error": "RuntimeError: injected engine failure"}]
    assert figures["summaries"] == [1] and figures["errors"] == [1]
