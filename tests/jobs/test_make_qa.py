"""The Q&A job end to end on a real local Ray and S3 API.

With the tiny random model every output is junk (asked for JSON pairs, the free strategy),
so the test checks the accounting:
every chunk is answered for, every proposal is dropped with a reason, user-written
pairs still make the splits, and a rerun generates nothing. The SmolLM2 + vLLM test
checks the real path (answer-first, the default): pairs grounded in the real reference card, no document in two splits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from transformers import AutoTokenizer

from jobs.make_qa import MakeQaConfig, main
from rayfleet import storage
from rayfleet.config import load_config
from rayfleet.qa import AnswerMatch, QaValidation, check_pair
from rayfleet.tables import read_folder, write_table
from rayfleet.text.chunking import chunk_document
from rayfleet.text.parsing import parse_file
from tests.text.samples import PDFS

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "make_qa" / "smollm2_vllm.yaml"


def write_chunks(uri: str, tokenizer, documents: dict[str, str], max_tokens: int) -> list[dict]:
    rows = []
    for doc_id, text in documents.items():
        for chunk in chunk_document(tokenizer, text, max_tokens):
            rows.append({"chunk_id": f"{doc_id}-{chunk.ordinal:05d}", "doc_id": doc_id, "ordinal": chunk.ordinal,
                         "text": chunk.text, "token_count": chunk.token_count})  # fmt: skip
    write_table(uri, pa.Table.from_pylist(rows))
    return rows


def test_junk_outputs_are_all_dropped_and_accounted_for(ray_cluster, s3_prefix, tiny_llama_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    documents = {f"doc{i}": f"Valve {i} is checked every {i + 2} weeks by the night shift. " * 6 for i in range(4)}
    documents["tiny"] = "Too short."
    chunks = write_chunks(f"{s3_prefix}/chunks/part.parquet", tokenizer, documents, 64)
    user_lines = [
        {
            "question": "How often is valve 1 checked?",
            "answer": "every 3 weeks",
            "doc_id": "doc1",
            "chunk_id": "doc1-00000",
        },
        {"question": "Who checks the valves?", "answer": "the night shift", "doc_id": "doc2"},
        {"question": "Missing its answer?", "doc_id": "doc3"},
    ]
    storage.write_bytes(f"{s3_prefix}/user/pairs.jsonl", "\n".join(map(json.dumps, user_lines)).encode())
    overrides = [
        f"input={s3_prefix}/chunks", f"output={s3_prefix}/qa", f"user_qa={s3_prefix}/user", "engine.kind=transformers",
        f"engine.model={tiny_llama_path}", "engine.max_model_len=512", "sampling.max_tokens=24", "batch_size=4",
        "min_chunk_tokens=8", "splits.validation=0.0", "splits.test=0.0", "strategy=free",
    ]  # fmt: skip

    report = main(load_config(MakeQaConfig, overrides))

    usable = [chunk for chunk in chunks if chunk["token_count"] >= 8]
    assert report["chunks_generated"] == len(usable) and report["chunks_too_short"] == len(chunks) - len(usable)
    candidates = read_folder(f"{s3_prefix}/qa/_candidates", ["chunk_id", "status", "reason"]).to_pylist()
    assert {row["chunk_id"] for row in candidates} == {chunk["chunk_id"] for chunk in usable}, (
        "every chunk answered for"
    )
    assert all(row["status"] == "dropped" and row["reason"] for row in candidates), "junk is never kept"
    assert len(usable) > 4 and len(storage.list_files(f"{s3_prefix}/qa/_candidates", (".parquet",))) == 1, (
        "the run's batch files are merged"
    )
    assert sum(report["dropped"].values()) == len(candidates) and report["generated_valid"] == 0
    assert (report["user_pairs"], report["user_rows_rejected"]) == (2, 1)
    assert report["pairs"] == {"train": 2, "validation": 0, "test": 0}

    sft = read_folder(f"{s3_prefix}/qa/sft", ["messages", "doc_id", "origin"]).to_pylist()
    assert sorted(row["doc_id"] for row in sft) == ["doc1", "doc2"]
    assert [message["role"] for message in sft[0]["messages"]] == ["user", "assistant"]
    errors = read_folder(f"{s3_prefix}/qa/errors", ["source", "error"]).to_pylist()
    assert [row["error"] for row in errors] == ["line 3: missing 'answer'"]

    rerun = main(load_config(MakeQaConfig, overrides))
    assert rerun["chunks_generated"] == 0 and rerun["chunks_already_done"] == len(usable)
    assert read_folder(f"{s3_prefix}/qa/_candidates", ["chunk_id"]).num_rows == len(candidates)


def test_smollm2_on_vllm_runs_the_real_path_and_keeps_only_grounded_pairs(
    ray_cluster, s3_prefix, smollm2_path, embedder
):
    """Answer-first with SmolLM2-135M: sentences of the chunks are answers, and most get a kept question."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    refcard = parse_file("refcard-a4.pdf", (PDFS / "refcard-a4.pdf").read_bytes()).text
    manual = parse_file("gnuplot.pdf", (PDFS / "gnuplot.pdf").read_bytes())
    load_pages = manual.text[manual.page_offsets[100] : manual.page_offsets[102]]
    chunks = write_chunks(
        f"{s3_prefix}/chunks/part.parquet", tokenizer, {"refcard": refcard, "manual": load_pages}, 200
    )
    overrides = [f"input={s3_prefix}/chunks", f"output={s3_prefix}/qa", f"config={CONFIG}"]

    report = main(load_config(MakeQaConfig, overrides))

    candidates = read_folder(f"{s3_prefix}/qa/_candidates", ["chunk_id", "question", "status", "reason"]).to_pylist()
    assert {row["chunk_id"] for row in candidates} == {chunk["chunk_id"] for chunk in chunks}, (
        "every chunk answered for"
    )
    parsed = [row for row in candidates if row["question"] is not None]
    assert len(parsed) >= len(chunks) // 2, f"most chunks get questions: {report['dropped']}"
    asked = [row for row in candidates if row["reason"] != "no_answer_sentence"]
    # The free JSON strategy kept about 1 in 45 here; answer-first about 1 in 3, and 1 in 6 once the round trip
    # drops the questions another sentence answers better (each of the 5 here was such a question).
    assert report["generated_valid"] >= len(asked) // 8, f"a usable share is kept: {report['dropped']}"
    assert report["dropped"]["answer_mismatch"] > 0
    not_dedup = sum(count for reason, count in report["dropped"].items() if reason != "near_duplicate")
    assert report["generated_valid"] + not_dedup == len(candidates)

    qa = read_folder(f"{s3_prefix}/qa/qa", ["question", "answer", "chunk_id", "doc_id", "split"]).to_pylist()
    assert len(qa) == report["generated_valid"] - report["dropped"]["near_duplicate"]
    texts = {chunk["chunk_id"]: chunk["text"] for chunk in chunks}
    round_trip = AnswerMatch(embedder.embed, min_words=8, margin=QaValidation().answer_match_margin)
    for pair in qa:
        assert check_pair(pair["question"], pair["answer"], texts[pair["chunk_id"]], QaValidation()) is None
        assert round_trip.verdict(pair["question"], pair["answer"], texts[pair["chunk_id"]]) is None
        assert pair["chunk_id"].startswith(pair["doc_id"])
    assert len({(pair["doc_id"], pair["split"]) for pair in qa}) == len({pair["doc_id"] for pair in qa}), (
        "one split per document"
    )


def test_a_table_that_is_not_chunks_is_refused_with_its_name_and_missing_columns(tmp_path):
    from jobs.make_qa import plan_chunks

    write_table(str(tmp_path / "chunks" / "good.parquet"), pa.table({
        "chunk_id": ["d-0"], "doc_id": ["d"], "text": ["Valve 3 is checked weekly."], "token_count": [6]}))  # fmt: skip
    write_table(str(tmp_path / "chunks" / "documents.parquet"), pa.table({"doc_id": ["d"], "text": ["..."]}))
    config = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa"])
    with pytest.raises(ValueError, match=r"documents.parquet is not a chunks table .*\['chunk_id', 'token_count'\]"):
        plan_chunks(config, set(), set())
    with pytest.raises(ValueError, match=r"documents.parquet is not a chunks table"):
        main(config)
    assert not (tmp_path / "qa").exists(), "a refused run leaves no output folder behind"


def test_a_chunk_without_a_token_count_is_skipped_like_a_short_one_and_other_parquet_names_are_read(tmp_path):
    from jobs.make_qa import plan_chunks, read_chunks

    text = "Valve 3 is checked every week by the night shift of the plant. " * 4
    write_table(str(tmp_path / "chunks" / "part-1.parquet"), pa.table({
        "chunk_id": ["a-0", "a-1"], "doc_id": ["a", "a"], "text": [text, text],
        "token_count": pa.array([50, None], pa.int64())}))  # fmt: skip
    write_table(str(tmp_path / "chunks" / "part-2.pq"), pa.table({
        "chunk_id": ["b-0"], "doc_id": ["b"], "text": [text], "token_count": [50]}))  # fmt: skip
    write_table(str(tmp_path / "chunks" / "000000_0"), pa.table({
        "chunk_id": ["c-0"], "doc_id": ["c"], "text": [text],
        "token_count": pa.array([None], pa.int64())}))  # fmt: skip
    config = load_config(MakeQaConfig, [f"input={tmp_path}/chunks", f"output={tmp_path}/qa"])

    sources, todo, too_short, already_done = plan_chunks(config, set(), set())
    assert len(sources) == 3 and (todo, too_short, already_done) == (2, 2, 0)
    # Counted over current documents only: b's version was superseded, a-0 done by an earlier run.
    assert plan_chunks(config, {"a-0", "b-0"}, {"b"})[1:] == (0, 2, 1)
    read = [
        read_chunks(pa.table({"source": [source]}), config, set(), set())["chunk_id"].to_pylist() for source in sources
    ]
    assert sorted(chunk_id for chunk_ids in read for chunk_id in chunk_ids) == ["a-0", "b-0"]


def test_a_chunk_too_long_for_the_engine_is_dropped_alone_and_the_batch_is_generated(tmp_path, tiny_llama_path):
    from jobs.make_qa import QaWorker

    sentence = "Valve {n} is checked every {n} weeks by the night shift of the north plant."
    short = " ".join(sentence.format(n=n) for n in range(2))
    long = " ".join(sentence.format(n=n) for n in range(40))
    overrides = [
        f"input={tmp_path}/chunks", f"output={tmp_path}/qa", "engine.kind=transformers",
        f"engine.model={tiny_llama_path}", "engine.max_model_len=400", "sampling.max_tokens=4",
    ]  # fmt: skip
    worker = QaWorker(load_config(MakeQaConfig, overrides), "run-1")
    batch = pa.table({"chunk_id": ["s-0", "l-0", "s-1"], "doc_id": ["s", "l", "s"], "text": [short, long, short],
                      "continues": [False, False, False]})  # fmt: skip

    figures = worker(batch)

    rows = read_folder(f"{tmp_path}/qa/_candidates", ["chunk_id", "status", "reason", "detail"]).to_pylist()
    too_long = [row for row in rows if row["reason"] == "too_long"]
    assert [row["chunk_id"] for row in too_long] == ["l-0"] and "max_model_len 400" in too_long[0]["detail"]
    generated = {row["chunk_id"] for row in rows if row["reason"] != "too_long"}
    assert generated == {"s-0", "s-1"}, "the others are generated"
    assert figures["chunks"] == [3] and figures["proposed"][0] >= 2
    assert not storage.exists(f"{tmp_path}/qa/errors")
