"""The transformers-free tokenizer gives the same ids and offsets as transformers' fast tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rayfleet.text.parsing import parse_file
from rayfleet.text.tokenizer import FastTokenizer
from tests.text.samples import PDFS


def test_same_ids_and_offsets_as_transformers(smollm2_path):
    reference, fast = AutoTokenizer.from_pretrained(smollm2_path), FastTokenizer(smollm2_path)
    refcard = parse_file("refcard-a4.pdf", (PDFS / "refcard-a4.pdf").read_bytes()).text
    for text in (refcard, "Le café était fermé.\n\n  x  ", "", "a turn ends with <|im_end|>"):
        expected = reference(text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
        found = fast(text, add_special_tokens=False, return_offsets_mapping=True)
        assert found["input_ids"] == expected["input_ids"]
        assert [tuple(span) for span in found["offset_mapping"]] == [tuple(span) for span in expected["offset_mapping"]]
    texts = ["one text", "and another"]
    assert fast(texts, add_special_tokens=False)["input_ids"] == reference(texts, add_special_tokens=False)["input_ids"]


def test_a_special_tokens_spelling_is_measured_as_the_text_it_stays_in_a_message(smollm2_path):
    reference, fast = AutoTokenizer.from_pretrained(smollm2_path), FastTokenizer(smollm2_path)
    text = "The chat format ends a turn with <|im_end|> and opens one with <|im_start|>."
    as_text = reference(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert fast(text, add_special_tokens=False)["input_ids"] == as_text
    assert reference.convert_tokens_to_ids("<|im_end|>") not in as_text
    parsed = reference(text, add_special_tokens=False)["input_ids"]
    assert fast(text, add_special_tokens=False, split_special_tokens=False)["input_ids"] == parsed != as_text


def test_a_folder_without_tokenizer_json_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        FastTokenizer(tmp_path)
