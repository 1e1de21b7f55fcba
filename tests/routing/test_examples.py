"""Labelled prompts: user files (Parquet, JSONL) and the default set."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from rayfleet.routing.examples import GENERAL_REQUESTS, default_examples, read_examples
from rayfleet.tables import write_table


def test_jsonl_and_parquet_read_the_same(tmp_path):
    rows = [{"text": "What is BLEU?", "label": "rag", "extra": 1}, {"text": "Hello!", "label": "smalltalk", "extra": 2}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    write_table(str(tmp_path / "a.parquet"), pa.Table.from_pylist(rows))
    assert (
        read_examples(str(tmp_path / "a.jsonl")).to_pylist() == read_examples(str(tmp_path / "a.parquet")).to_pylist()
    )
    assert read_examples(str(tmp_path / "a.jsonl")).column_names == ["text", "label"]


def test_bad_files_say_what_is_wrong(tmp_path):
    (tmp_path / "no_label.jsonl").write_text('{"text": "hi", "route": "base"}\n')
    with pytest.raises(ValueError, match="missing column 'label'"):
        read_examples(str(tmp_path / "no_label.jsonl"))
    (tmp_path / "a.csv").write_text("text,label\nhi,base\n")
    with pytest.raises(ValueError, match=".parquet or .jsonl"):
        read_examples(str(tmp_path / "a.csv"))


def test_default_set_has_the_three_paths_from_real_papers_and_the_seed_list():
    table = default_examples(per_label=40, seed=0)
    labels = table["label"].to_pylist()
    assert {label: labels.count(label) for label in set(labels)} == {"rag": 40, "finetuned": 40, "base": 40}
    texts = table["text"].to_pylist()
    assert len(set(texts)) == len(texts)
    assert all(text in GENERAL_REQUESTS for text, label in zip(texts, labels) if label == "base")
    assert default_examples(per_label=40, seed=0).equals(table)
