"""make_qa's split by document, without Ray or a model: a split left empty is said, not left to be found later."""

from __future__ import annotations

import datetime

import pyarrow as pa

from jobs.make_qa import MakeQaConfig, build_dataset
from rayfleet.config import load_config
from rayfleet.tables import read_folder, write_table
from schemas import QA_CANDIDATES_SCHEMA


def test_a_split_that_no_document_falls_into_is_warned_of(tmp_path, caplog):
    config = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa"])
    now = datetime.datetime.now(datetime.timezone.utc)
    pairs = [("How long is the kettle's warranty?", "Two years from purchase."),
             ("Which fee applies to a late return?", "A restocking fee of ten percent."),
             ("Who answers support e-mails on weekends?", "The on-call team in Lisbon.")]
    rows = [{"chunk_id": f"d1-{n}", "doc_id": "d1", "question": question, "answer": answer, "status": "valid",
             "model": "m", "run_id": "r", "created_at": now} for n, (question, answer) in enumerate(pairs)]  # fmt: skip
    write_table(f"{tmp_path}/qa/_candidates/r.parquet", pa.Table.from_pylist(rows, QA_CANDIDATES_SCHEMA))

    with caplog.at_level("WARNING"):
        report = build_dataset(config, "r")

    empty = [split for split, count in report["pairs"].items() if count == 0]
    assert len(empty) == 2 and sum(report["pairs"].values()) == 3, "one document: one split holds every pair"
    assert f"no pairs in the {', '.join(empty)} split(s)" in caplog.text and "1 document(s) gave pairs" in caplog.text
    assert read_folder(f"{tmp_path}/qa/sft", ["messages"]).num_rows == 3

    caplog.clear()
    no_held_out = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa", "splits.validation=0",
                                             "splits.test=0"])  # fmt: skip
    with caplog.at_level("WARNING"):
        assert build_dataset(no_held_out, "r")["pairs"]["train"] == 3
    assert "no pairs" not in caplog.text, "a split asked to hold nothing is not warned of"
