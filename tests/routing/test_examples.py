"""Labelled prompts: user files (Parquet, JSONL) and the default set."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from rayfleet.config import InputError
from rayfleet.routing.examples import GENERAL_REQUESTS, clean_examples, default_examples, read_examples
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
    (tmp_path / "a.txt").write_text("hi\tbase\n")
    with pytest.raises(ValueError, match="must be Parquet"):
        read_examples(str(tmp_path / "a.txt"))
    (tmp_path / "broken.jsonl").write_text('{"text": "hi", "label": "base"}\n{"text": "oops"\n')
    with pytest.raises(ValueError, match="broken.jsonl line 2 is not JSON"):
        read_examples(str(tmp_path / "broken.jsonl"))


def test_misnamed_columns_are_named_alike_in_every_format(tmp_path):
    rows = [{"prompt": "What is BLEU?", "route": "rag"}, {"prompt": "Hello!", "route": "base"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text("prompt,route\nWhat is BLEU?,rag\nHello!,base\n")
    write_table(str(tmp_path / "a.parquet"), pa.Table.from_pylist(rows))
    missing = r"missing column 'text' \(the request's prompt\); found \['prompt', 'route'\]"
    for name in ("a.jsonl", "a.json", "a.csv", "a.parquet"):
        with pytest.raises(InputError, match=missing):
            read_examples(str(tmp_path / name))


def test_the_shapes_labelled_data_comes_in_read_the_same(tmp_path):
    rows = [{"text": "What is BLEU?", "label": "1"}, {"text": "Hello!", "label": "2"}]
    expected = [{"text": "What is BLEU?", "label": "1"}, {"text": "Hello!", "label": "2"}]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(row) for row in rows).encode())
    (tmp_path / "array.JSON").write_text(json.dumps([{**row, "meta": {"nested": True}} for row in rows]))
    (tmp_path / "a.csv").write_text('text,label\n"What is BLEU?",1\nHello!,2\n')
    (tmp_path / "folder").mkdir()
    write_table(
        str(tmp_path / "folder" / "part-0.parquet"), pa.Table.from_pylist([{"text": "What is BLEU?", "label": 1}])
    )
    write_table(
        str(tmp_path / "folder" / "part-1.parquet"),
        pa.table({"text": ["Hello!"], "label": pa.array(["2"]).dictionary_encode()}),
    )  # fmt: skip  (a pandas category)
    for name in ("bom.jsonl", "array.JSON", "a.csv", "folder"):
        assert read_examples(str(tmp_path / name)).to_pylist() == expected, name


def test_json_labels_of_mixed_types_read_as_text(tmp_path):
    rows = [{"text": "one?", "label": 1}, {"text": "two?", "label": "1"}, {"text": "three?", "label": 2.0},
            {"text": "four?", "label": True}, {"text": 5, "label": "n"},
            {"text": {"nested": 1}, "label": "x"}]  # fmt: skip
    (tmp_path / "mixed.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    read = read_examples(str(tmp_path / "mixed.jsonl")).to_pylist()
    assert [row["label"] for row in read] == ["1", "1", "2.0", "true", "n", "x"]
    assert [row["text"] for row in read] == ["one?", "two?", "three?", "four?", "5", None]


def test_cleaning_keeps_one_row_per_text_and_settles_conflicts_by_majority():
    texts = ["a?", "a?", "b?", " b? ", "b?", "c?", "c?", "", "d?"]
    labels = ["rag", "rag", "rag", "base", "base", "rag", "base", "rag", " base "]
    kept_texts, kept_labels, dropped = clean_examples(texts, labels)
    assert dict(zip(kept_texts, kept_labels)) == {"a?": "rag", "b?": "base", "d?": "base"}
    assert dropped == {"conflicting_tie": 1, "empty": 1, "relabelled_by_majority": 1, "repeated": 4}


def test_labels_that_differ_only_in_case_or_spacing_are_refused():
    with pytest.raises(ValueError, match=r"differ only in case or spacing.*\['Approach', 'approach'\]"):
        clean_examples(["x", "y", "z"], ["approach", "Approach", "outcome"])


def test_default_set_has_the_three_paths_from_real_papers_and_the_seed_list():
    table = default_examples(per_label=40, seed=0)
    labels = table["label"].to_pylist()
    assert {label: labels.count(label) for label in set(labels)} == {"rag": 40, "finetuned": 40, "base": 40}
    texts = table["text"].to_pylist()
    assert len(set(texts)) == len(texts)
    assert all(text in GENERAL_REQUESTS for text, label in zip(texts, labels) if label == "base")
    assert default_examples(per_label=40, seed=0).equals(table)


def test_texts_without_a_letter_or_digit_are_dropped_as_serving_never_classifies_them():
    kept_texts, _, dropped = clean_examples(["🚀🔥", "?!...", "What is 🚀?", "٣"], ["a", "b", "a", "b"])
    assert kept_texts == ["What is 🚀?", "٣"] and dropped == {"no_words": 2}
