"""make_qa's split by document, without Ray or a model: a split left empty is said, not left to be found later."""

from __future__ import annotations

import datetime

import pyarrow as pa

from jobs.make_qa import MakeQaConfig, build_dataset
from rayfleet.config import load_config
from rayfleet.ingestion import superseded_beside
from rayfleet.tables import read_folder, write_table
from schemas import FILES_SCHEMA, QA_CANDIDATES_SCHEMA


def test_a_split_that_no_document_falls_into_is_warned_of(tmp_path, caplog):
    config = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa"])
    now = datetime.datetime.now(datetime.timezone.utc)
    pairs = [
        ("How long is the kettle's warranty?", "Two years from purchase."),
        ("Which fee applies to a late return?", "A restocking fee of ten percent."),
        ("Who answers support e-mails on weekends?", "The on-call team in Lisbon."),
    ]
    rows = [{"chunk_id": f"d1-{n}", "doc_id": "d1", "question": question, "answer": answer, "status": "valid",
             "model": "m", "run_id": "r", "created_at": now} for n, (question, answer) in enumerate(pairs)]  # fmt: skip
    write_table(f"{tmp_path}/qa/_candidates/r.parquet", pa.Table.from_pylist(rows, QA_CANDIDATES_SCHEMA))

    with caplog.at_level("WARNING"):
        report = build_dataset(config, "r", set())

    empty = [split for split, count in report["pairs"].items() if count == 0]
    assert len(empty) == 2 and sum(report["pairs"].values()) == 3, "one document: one split holds every pair"
    assert f"no pairs in the {', '.join(empty)} split(s)" in caplog.text and "1 document(s) gave pairs" in caplog.text
    assert read_folder(f"{tmp_path}/qa/sft", ["messages"]).num_rows == 3

    caplog.clear()
    no_held_out = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa", "splits.validation=0",
                                             "splits.test=0"])  # fmt: skip
    with caplog.at_level("WARNING"):
        assert build_dataset(no_held_out, "r", set())["pairs"]["train"] == 3
    assert "no pairs" not in caplog.text, "a split asked to hold nothing is not warned of"


def test_pairs_of_a_document_its_file_no_longer_holds_leave_the_sets(tmp_path):
    from jobs.make_qa import plan_chunks

    now = datetime.datetime.now(datetime.timezone.utc)
    text = "Valve 3 is checked every week by the night shift of the plant. " * 4
    write_table(f"{tmp_path}/corpus/chunks/part-1.parquet", pa.table({
        "chunk_id": ["old-0", "new-0", "gone-0"], "doc_id": ["old", "new", "gone"], "text": [text] * 3,
        "token_count": [50] * 3}))  # fmt: skip
    ledger = [("manual.txt", "old", "ingested", 0), ("notes.txt", "gone", "ingested", 0),
              ("manual.txt", "new", "ingested", 1), ("notes.txt", None, "deleted", 1)]  # fmt: skip
    write_table(f"{tmp_path}/corpus/_files/r.parquet", pa.Table.from_pylist(
        [{"source": source, "bytes": 1, "modified": "", "doc_id": doc_id, "outcome": outcome, "run_id": f"r{run}",
          "created_at": now + datetime.timedelta(seconds=run)} for source, doc_id, outcome, run in ledger],
        FILES_SCHEMA))  # fmt: skip
    superseded = superseded_beside(f"{tmp_path}/corpus/chunks")
    assert superseded == {"old", "gone"}
    config = load_config(MakeQaConfig, [f"input={tmp_path}/corpus/chunks", f"output={tmp_path}/qa"])
    assert plan_chunks(config, set(), superseded)[1] == 1
    rows = [{"chunk_id": f"{doc_id}-0", "doc_id": doc_id, "question": f"What is checked in {doc_id}?",
             "answer": "Valve 3.", "status": "valid", "model": "m", "run_id": "r", "created_at": now}
            for doc_id in ("old", "new", "gone")]  # fmt: skip
    rows += [{"chunk_id": f"{doc_id}-1", "doc_id": doc_id, "question": "Why?", "answer": "Because.",
              "status": "dropped", "reason": "off_topic", "model": "m", "run_id": "r", "created_at": now}
             for doc_id in ("old", "new", "gone")]  # fmt: skip
    write_table(f"{tmp_path}/qa/_candidates/r.parquet", pa.Table.from_pylist(rows, QA_CANDIDATES_SCHEMA))
    report = build_dataset(config, "r", superseded)
    assert set(read_folder(f"{tmp_path}/qa/qa", ["doc_id"])["doc_id"].to_pylist()) == {"new"}
    assert report["dropped"] == {"near_duplicate": 0, "off_topic": 1}, "the current documents' drops only"


def test_a_test_split_of_one_document_is_warned_of_since_no_gain_on_it_can_be_promoted(tmp_path, caplog):
    from rayfleet.qa import split_of

    config = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa"])
    splits = {doc_id: split_of(doc_id, config.splits) for doc_id in (f"doc{n}" for n in range(200))}
    train = [doc_id for doc_id, split in splits.items() if split == "train"][:4]
    test = [doc_id for doc_id, split in splits.items() if split == "test"][:2]
    now = datetime.datetime.now(datetime.timezone.utc)

    def candidates(doc_ids: list[str], run_id: str) -> None:
        rows = [{"chunk_id": f"{doc_id}-0", "doc_id": doc_id, "question": f"What does section {doc_id} require?",
                 "answer": f"Section {doc_id} requires a signed form.", "status": "valid", "model": "m",
                 "run_id": run_id, "created_at": now} for doc_id in doc_ids]  # fmt: skip
        write_table(f"{tmp_path}/qa/_candidates/{run_id}.parquet", pa.Table.from_pylist(rows, QA_CANDIDATES_SCHEMA))

    candidates(train + test[:1], "r1")
    with caplog.at_level("WARNING"):
        assert build_dataset(config, "r1", set())["documents"]["test"] == 1
    assert "the test split holds one document's pairs" in caplog.text

    caplog.clear()
    candidates(test[1:], "r2")
    with caplog.at_level("WARNING"):
        assert build_dataset(config, "r2", set())["documents"]["test"] == 2
    assert "the test split holds one" not in caplog.text


def test_documents_whose_proposals_were_all_dropped_are_counted_and_named_by_their_files(tmp_path, caplog):
    config = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa"])
    write_table(f"{tmp_path}/chunks/part-1.parquet", pa.table({
        "chunk_id": ["a-0", "b-0", "c-0"], "doc_id": ["a", "b", "c"], "text": ["..."] * 3, "token_count": [30] * 3,
        "source": ["s3://docs/handbook.md", "s3://docs/products.csv", "s3://docs/old.md"]}))  # fmt: skip
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = [
        {"chunk_id": "a-0", "doc_id": "a", "question": "Who approves leave?", "answer": "The team lead approves it.",
         "status": "valid"},
        {"chunk_id": "b-0", "doc_id": "b", "question": None, "answer": None, "status": "dropped",
         "reason": "no_answer_sentence"},
        {"chunk_id": "c-0", "doc_id": "c", "question": "What is it?", "answer": "Old.", "status": "dropped",
         "reason": "off_topic"},
    ]  # fmt: skip
    candidates = [{**row, "model": "m", "run_id": "r", "created_at": now} for row in rows]
    write_table(f"{tmp_path}/qa/_candidates/r.parquet", pa.Table.from_pylist(candidates, QA_CANDIDATES_SCHEMA))

    with caplog.at_level("WARNING"):
        report = build_dataset(config, "r", {"c"})  # c: a version its file no longer holds
    assert report["documents_without_pairs"] == 1
    assert "1 document(s) gave no pair" in caplog.text and "s3://docs/products.csv" in caplog.text
    assert "dropped for (_candidates has each): {'no_answer_sentence': 1}" in caplog.text, "why, not a guess"
    assert "near_duplicate" not in caplog.text.split("dropped for")[-1], "only reasons that dropped some"
    assert "old.md" not in caplog.text and "off_topic" not in caplog.text
