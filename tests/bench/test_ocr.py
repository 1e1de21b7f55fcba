"""bench.ocr: the word F1 it reports, and one real scanned page read through the production path."""

from __future__ import annotations

import json

from bench.ocr import OcrBenchConfig, main, word_f1, word_order_similarity


def test_word_f1_counts_words_as_a_bag_in_lower_case():
    assert word_f1("The pump, the valve.", "the valve THE pump") == 1.0
    assert word_f1("close valve seven", "close valve") == 0.8
    assert word_f1("close valve", "") == 0.0


def test_word_order_similarity_counts_order_where_f1_does_not():
    assert word_order_similarity("close the valve then open the pump", "close the valve then open the pump") == 1.0
    assert word_order_similarity("close the valve then open the pump", "open the pump then close the valve") < 0.75


def test_a_scanned_manual_page_reads_close_to_its_text_layer(capsys):
    line = main(OcrBenchConfig(pages=[200], refcard_pages=[]))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == line
    [page] = line["per_page"]
    assert page["words"] > 200 and page["f1"] == line["mean_word_f1"] == line["worst_word_f1"]
    assert page["f1"] > 0.85, "OCR of a clean 300-dpi scan should recover most words"
    assert page["order"] > 0.8, "and read them in the page's order"
