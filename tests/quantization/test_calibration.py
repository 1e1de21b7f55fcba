"""The calibration sample: deterministic, order-independent, hashed, read from real chunks in S3."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rayfleet import storage
from rayfleet.config import InputError
from rayfleet.quantization import calibration_sample, read_chunk_texts
from rayfleet.tables import write_table
from tests.conftest import chunk_rows


def test_same_chunks_and_seed_give_the_same_sample_and_hash_in_any_order():
    texts = [f"chunk number {index}" for index in range(50)]
    first = calibration_sample(texts, 10, seed=3, source="a")
    again = calibration_sample(list(reversed(texts)), 10, seed=3, source="a")
    assert first.texts == again.texts and first.sha256 == again.sha256
    other_seed = calibration_sample(texts, 10, seed=4, source="a")
    assert other_seed.sha256 != first.sha256
    assert len(set(first.texts)) == 10 and set(first.texts) <= set(texts)


def test_blank_and_repeated_texts_do_not_count_and_too_few_is_an_error():
    with pytest.raises(InputError, match="needs 3 non-empty chunk texts, few has 2"):
        calibration_sample(["a", "a", " ", "", "b"], 3, seed=0, source="few")


def test_sample_from_real_chunks_in_s3(s3_prefix):
    rows = chunk_rows(2)
    chunks_uri = storage.join(s3_prefix, "chunks")
    write_table(storage.join(chunks_uri, "part-0.parquet"), pa.Table.from_pylist(rows))
    texts = read_chunk_texts(chunks_uri)
    assert sorted(texts) == sorted(row["text"] for row in rows)
    sample = calibration_sample(texts, 8, seed=0, source=chunks_uri)
    assert sample.record() == {"source": chunks_uri, "sha256": sample.sha256, "samples": 8, "max_tokens": 512}
    assert len(sample.sha256) == 64
