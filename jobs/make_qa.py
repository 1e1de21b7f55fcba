"""Q&A training set: chunks -> grounded question-answer pairs -> chat-format SFT splits.

Run it anywhere the same way::

    python -m jobs.make_qa input=s3://bucket/corpus/chunks output=s3://bucket/qa
    python -m jobs.make_qa input=.data/corpus/chunks output=.data/qa user_qa=my_pairs.jsonl
    ray job submit --working-dir . -- python -m jobs.make_qa config=jobs/configs/make_qa/smollm2_vllm.yaml \\
        input=... output=...

Each chunk (from ``jobs.ingest``) is sent to the LLM through the batch engine (Ray Data
actor pool, vLLM by default; the same path as ``jobs.summarize``). By default
(``strategy=answer_first``) sentences of the chunk are the answers and the model writes
a question for each; ``strategy=free`` asks for pairs as JSON, parsed leniently. Every
pair is validated (sizes, a real question, answer grounded in the chunk, question about
the chunk); each batch commits all proposals,
kept or dropped with the reason, to ``output/_candidates/`` (merged into larger files at the end of
the run), so a rerun only generates for chunks not yet done. Then, over all candidates (and the optional
user-written pairs, JSONL or Parquet, validated against the same schema):
near-duplicate questions are removed, documents are split train / validation / test
by a hash of ``doc_id`` (no document in two splits), and the job writes

- ``sft/{train,validation,test}.parquet``: ``messages`` (system, user, assistant) with
  ``chunk_id`` / ``doc_id`` (``schemas.SFT_SCHEMA``);
- ``qa/{train,validation,test}.parquet``: question, answer, chunk_id, doc_id for
  evaluation (``schemas.QA_SCHEMA``);
- ``errors/``: bad user rows and chunks the engine failed on;

and prints a report with how many pairs were dropped, by reason. A chunk whose prompt does not fit
the engine's ``max_model_len`` is recorded as dropped (``too_long``) on its own, so the rest of its
batch is generated; a chunk without a ``token_count`` is skipped like a too short one.
"""

from __future__ import annotations

import collections
import json
import logging
import time
import uuid
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rayfleet import storage
from rayfleet.assets import check_model, resolve_model
from rayfleet.config import BaseConfig, InputError, describe, run_job
from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.engines.thread_bound import ThreadBoundEngine
from rayfleet.ingestion import superseded_beside, table_of_ingest_output
from rayfleet.qa import (
    AnswerFirstPrompts,
    AnswerMatch,
    QaPrompts,
    QaValidation,
    SplitConfig,
    answer_sentences,
    check_pair,
    drop_near_duplicates,
    extract_pairs,
    question_from_output,
    read_user_qa,
    sft_messages,
    split_of,
)
from rayfleet.ray_setup import WorkerPoolConfig, cluster_pool_size, init_ray
from rayfleet.tables import (
    compact_output,
    error_row,
    new_run_id,
    output_file_bytes_field,
    read_column_values,
    read_folder,
    read_input_folder,
    read_schema,
    read_table,
    utc_now,
    write_errors,
    write_table,
)
from schemas import QA_CANDIDATES_SCHEMA, QA_SCHEMA, SFT_SCHEMA

logger = logging.getLogger("jobs.make_qa")

SPLITS = ("train", "validation", "test")
CHUNK_COLUMNS = ["chunk_id", "doc_id", "text", "token_count"]


class MakeQaConfig(BaseConfig):
    """Configuration of the Q&A generation job."""

    input: str = Field(..., description="Chunks Parquet folder/prefix written by jobs.ingest (local path or s3://).")
    output: str = Field(..., description="Folder/prefix for the SFT splits, the QA sets and the candidates.")
    user_qa: str | None = Field(None, description="Optional user-written Q&A: a JSONL or Parquet file or folder.")
    strategy: Literal["answer_first", "free"] = Field(
        "answer_first",
        description="answer_first: sentences of the chunk are the answers and the model writes a question for each "
        "(reliable with small models); free: the model proposes question-answer pairs as JSON "
        "(needs a stronger model).",
    )
    pairs_per_chunk: int = Field(3, ge=1, le=10, description="Pairs asked of the model for each chunk.")
    min_chunk_tokens: int = Field(
        24, ge=1, description="Chunks shorter than this are skipped (too little to ask about)."
    )
    batch_size: int = Field(
        32, ge=1, description="Chunks per engine batch (and per committed candidates file until merged)."
    )
    output_file_bytes: int = output_file_bytes_field("candidates and errors files")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine and model.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=256), description="Decoding.")
    prompts: QaPrompts = Field(default_factory=QaPrompts, description="Prompt templates of the free strategy.")
    answer_first: AnswerFirstPrompts = Field(
        default_factory=AnswerFirstPrompts,
        description="Prompts and answer-sentence sizes of the answer_first strategy.",
    )
    validation: QaValidation = Field(default_factory=QaValidation, description="What a kept pair must satisfy.")
    splits: SplitConfig = Field(default_factory=SplitConfig, description="Held-out shares of documents.")
    sft_system_prompt: str | None = Field(None, description="System message of every SFT example; none if null.")
    workers: WorkerPoolConfig = Field(default_factory=WorkerPoolConfig, description="Engine actor pool sizing.")
    ray_address: str | None = Field(None, description="Ray cluster address; default $RAY_ADDRESS or a local Ray.")
    follow_ingest_ledger: bool = Field(
        True,
        description="When the input is a jobs.ingest chunks table (its _files ledger beside it), use each file's "
        "current version only: pairs of a document its file no longer holds (changed or deleted since) are neither "
        "generated nor kept in the sets.",
    )

    def table(self, name: str) -> str:
        """URI of one output table or folder."""
        return storage.join(self.output, name)


class QaWorker:
    """Ray Data actor: holds one engine, proposes and validates pairs for batches of chunks."""

    def __init__(self, config: MakeQaConfig, run_id: str):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config, self.run_id = config, run_id
        started = time.monotonic()
        self.engine = ThreadBoundEngine(config.engine)
        self.answer_match = answer_match(config)
        logger.info("%s engine ready in %.1f s", self.engine.name, time.monotonic() - started)

    def __call__(self, batch: pa.Table) -> dict:
        """Generate for one batch and commit every proposal (kept or dropped) as one new file."""
        started = time.monotonic()
        chunks = batch.to_pylist()
        if not chunks:
            return batch_figures([], [], 0, started)
        requests = [request for chunk in chunks for request in self.requests(chunk)]
        too_long = self.too_long(requests)
        requests = [request for request in requests if request[0]["chunk_id"] not in too_long]
        try:
            generations = self.engine.generate([conversation for _, _, conversation in requests], self.config.sampling)
        except Exception as error:  # the batch's chunks go to the errors table; a rerun tries them again
            logger.exception("engine failed on a batch of %d chunks", len(chunks))
            write_errors(self.config.table("errors"), [
                error_row(chunk["chunk_id"], f"{type(error).__name__}: {error}", "generate", self.run_id,
                          doc_id=chunk["doc_id"])
                for chunk in chunks
            ])  # fmt: skip
            return batch_figures([], [], 0, started)
        rows = [
            row
            for (chunk, answer, _), generation in zip(requests, generations)
            for row in self.candidates(chunk, answer, generation.text)
        ]
        rows += [self.too_long_row(chunk, too_long[chunk["chunk_id"]])
                 for chunk in chunks if chunk["chunk_id"] in too_long]  # fmt: skip
        rows += [self.no_pair_row(chunk, "no sentence of a usable length to take as an answer", None)
                 for chunk in chunks if chunk["chunk_id"] not in too_long
                 and not any(request[0] is chunk for request in requests)]  # fmt: skip
        write_table(storage.join(self.config.table("_candidates"),
                                 f"part-{self.run_id}-{uuid.uuid4().hex[:12]}.parquet"),
                    pa.Table.from_pylist(rows, QA_CANDIDATES_SCHEMA))  # fmt: skip
        return batch_figures(chunks, rows, sum(generation.completion_tokens for generation in generations), started)

    def requests(self, chunk: dict) -> list[tuple[dict, str | None, list]]:
        """The engine calls for one chunk: ``(chunk, answer sentence or None, conversation)``."""
        if self.config.strategy == "free":
            return [(chunk, None, self.config.prompts.conversation(chunk["text"], self.config.pairs_per_chunk))]
        prompts = self.config.answer_first
        answers = answer_sentences(chunk["text"], self.config.pairs_per_chunk, prompts.min_answer_words,
                                   prompts.max_answer_words, skip_first=chunk["continues"])  # fmt: skip
        return [(chunk, answer, prompts.conversation(chunk["text"], answer)) for answer in answers]

    def too_long(self, requests: list[tuple[dict, str | None, list]]) -> dict[str, int]:
        """The chunks with a prompt the engine would refuse (``max_model_len`` or more tokens: vLLM then fails
        the whole batch), each with its longest prompt's length."""
        limit = self.config.engine.max_model_len
        longest: dict[str, int] = {}
        for chunk, _, conversation in requests:
            tokens = len(self.engine.prompt_token_ids(conversation))
            if tokens >= limit:
                longest[chunk["chunk_id"]] = max(tokens, longest.get(chunk["chunk_id"], 0))
        return longest

    def candidates(self, chunk: dict, answer: str | None, output: str) -> list[dict]:
        """One row per proposed pair, valid or dropped; one dropped row when the output held none."""
        if answer is not None:
            pairs = [(question_from_output(output), answer)]
        else:
            pairs = extract_pairs(output)[: self.config.pairs_per_chunk]
        if not pairs or not pairs[0][0]:
            return [self.no_pair_row(chunk, "no JSON question/answer objects and no Q:/A: lines in the output", output)]
        rows = []
        for question, pair_answer in pairs:
            verdict = check_pair(question, pair_answer, chunk["text"], self.config.validation)
            if verdict is None and self.answer_match is not None and answer is not None:  # answer_first's
                verdict = self.answer_match.verdict(question, pair_answer, chunk["text"])
            rows.append({**self.base_row(chunk), "question": question, "answer": pair_answer,
                         "status": "dropped" if verdict else "valid",
                         "reason": verdict and verdict.reason, "detail": verdict and verdict.detail})  # fmt: skip
        return rows

    def base_row(self, chunk: dict) -> dict:
        return {"chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"], "model": self.config.engine.model,
                "run_id": self.run_id, "created_at": utc_now(), "raw_output": None}  # fmt: skip

    def too_long_row(self, chunk: dict, prompt_tokens: int) -> dict:
        """The row that records a chunk whose prompt does not fit the engine's context."""
        detail = (
            f"the prompt is {prompt_tokens} tokens, not below engine.max_model_len {self.config.engine.max_model_len}:"
            " chunk smaller (ingest chunking.max_tokens) or raise it"
        )
        return {**self.base_row(chunk), "question": None, "answer": None, "status": "dropped", "reason": "too_long",
                "detail": detail}  # fmt: skip

    def no_pair_row(self, chunk: dict, detail: str, output: str | None) -> dict:
        """The row that records a chunk (or model output) that gave no pair at all."""
        return {**self.base_row(chunk), "question": None, "answer": None, "status": "dropped",
                "reason": "unparseable" if output is not None else "no_answer_sentence", "detail": detail,
                "raw_output": output}  # fmt: skip


def answer_match(config: MakeQaConfig) -> AnswerMatch | None:
    """The round-trip check of generated pairs (``validation.answer_match_model``), or None when it is off."""
    if not config.validation.answer_match_model:
        return None
    from rayfleet.retrieval import Embedder

    embedder = Embedder(config.validation.answer_match_model)
    return AnswerMatch(embedder.embed, config.answer_first.min_answer_words, config.validation.answer_match_margin)


def batch_figures(chunks: list[dict], rows: list[dict], completion_tokens: int, started: float) -> dict:
    """One batch's figures, for the driver's progress lines."""
    return {
        "chunks": [len(chunks)],
        "proposed": [sum(row["question"] is not None for row in rows)],
        "valid": [sum(row["status"] == "valid" for row in rows)],
        "completion_tokens": [completion_tokens],
        "seconds": [time.monotonic() - started],
    }


def read_chunks(batch: pa.Table, config: MakeQaConfig, done: set[str], superseded: set[str]) -> pa.Table:
    """Ray Data task: the chunks of one file that are long enough, not done yet and of a current document."""
    source = batch.column("source")[0].as_py()
    has_ordinal = "ordinal" in read_schema(source).names
    chunks = read_table(source, CHUNK_COLUMNS + ["ordinal"] * has_ordinal)
    keep = to_generate(chunks, config, done, superseded)
    # A chunk after its document's first may start mid-sentence (chunks overlap); without ordinals, assume so.
    ordinals = chunks["ordinal"] if has_ordinal else pa.array([1] * chunks.num_rows)
    chunks = chunks.append_column("continues", pc.greater(ordinals, 0))
    return chunks.filter(pa.array(keep, pa.bool_())).select(["chunk_id", "doc_id", "text", "continues"])


def to_generate(chunks: pa.Table, config: MakeQaConfig, done: set[str], superseded: set[str]) -> list[bool]:
    """Whether each chunk gets pairs this run: long enough, not done yet and of a current document."""
    usable = long_enough(chunks["token_count"], config.min_chunk_tokens)
    ids = zip(chunks["chunk_id"].to_pylist(), chunks["doc_id"].to_pylist(), usable)
    return [ok and chunk_id not in done and doc_id not in superseded for chunk_id, doc_id, ok in ids]


def long_enough(token_counts: pa.ChunkedArray, min_chunk_tokens: int) -> list[bool]:
    """Whether each chunk has at least ``min_chunk_tokens`` tokens; a chunk without a count (null) has not."""
    return pc.fill_null(pc.greater_equal(token_counts, min_chunk_tokens), False).to_pylist()


def plan_chunks(config: MakeQaConfig, done: set[str], superseded: set[str]) -> tuple[list[str], int, int, int]:
    """The chunk files to read (every Parquet naming :func:`storage.list_parquet_files` finds), then, of the
    chunks of current documents (not ``superseded``): how many to generate for, how many are skipped as too
    short (or without a ``token_count``), and how many are done already."""
    sources = storage.list_parquet_files(config.input)
    for source in sources:
        missing = [column for column in CHUNK_COLUMNS if column not in read_schema(source).names]
        if missing:
            raise InputError(f"{source} is not a chunks table (jobs.ingest output): it lacks {missing}")
    table = pa.concat_tables(
        [read_table(source, ["chunk_id", "doc_id", "token_count"]) for source in sources], promote_options="permissive"
    )
    table = table.filter(pa.array([doc_id not in superseded for doc_id in table["doc_id"].to_pylist()], pa.bool_()))
    too_short = long_enough(table["token_count"], config.min_chunk_tokens).count(False)
    already_done = sum(chunk_id in done for chunk_id in table["chunk_id"].to_pylist())
    return sources, sum(to_generate(table, config, done, superseded)), too_short, already_done


def generate_candidates(
    config: MakeQaConfig, sources: list[str], done: set[str], superseded: set[str], run_id: str, total: int
) -> None:
    """Run the Ray Data pipeline (read chunks -> generate, validate and commit, in an actor pool) with progress."""
    import ray

    workers, claim = cluster_pool_size(config.workers)
    logger.info("engine pool: %d worker(s), each claiming %s", workers, claim)
    batch_figures = (
        ray.data.from_items([{"source": source} for source in sources], override_num_blocks=len(sources))
        .map_batches(
            read_chunks,
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=0.25,
            fn_kwargs={"config": config, "done": done, "superseded": superseded},
        )
        # A file's chunks are one block: cut into batches, every engine of the pool gets work and each batch's
        # figures come back when it is done (a block is only handed on whole: a big file would report nothing
        # until its end, and Ray Data stops a run that reports nothing for 30 min).
        .repartition(target_num_rows_per_block=config.batch_size)
        .map_batches(
            QaWorker,
            batch_size=config.batch_size,
            batch_format="pyarrow",
            fn_constructor_kwargs={"config": config, "run_id": run_id},
            compute=ray.data.ActorPoolStrategy(size=workers),
            **claim,
        )
    )
    started, counts = time.monotonic(), collections.Counter()
    for figures in batch_figures.iter_rows():
        counts.update({name: int(figures[name]) for name in ("chunks", "proposed", "valid", "completion_tokens")})
        logger.info(
            "progress: %d/%d chunks, %d pairs proposed, %d valid, %.1f generated tokens/s",
            counts["chunks"], total, counts["proposed"], counts["valid"],
            counts["completion_tokens"] / (time.monotonic() - started),
        )  # fmt: skip


def build_dataset(config: MakeQaConfig, run_id: str, superseded: set[str]) -> dict:
    """Merge valid candidates (of current documents) and user pairs, drop near-duplicates, split by document,
    write SFT and QA sets."""
    columns = ["chunk_id", "doc_id", "question", "answer", "status", "reason"]
    candidates = [row for row in read_folder(config.table("_candidates"), columns).to_pylist()
                  if row["doc_id"] not in superseded]  # fmt: skip
    generated = [{**row, "origin": "generated"} for row in candidates if row["status"] == "valid"]
    user_pairs, user_errors = read_user_qa(config.user_qa, run_id) if config.user_qa else ([], [])
    write_errors(config.table("errors"), user_errors)
    # User pairs first: where a generated question repeats a user's, the user's wins.
    kept, duplicates = drop_near_duplicates([{**pair, "origin": "user"} for pair in user_pairs] + generated,
                                            config.validation.near_duplicate_similarity)  # fmt: skip
    by_split: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for pair in kept:
        by_split[split_of(pair["doc_id"], config.splits)].append(pair)
    for split, pairs in by_split.items():
        qa_rows = [{"question": p["question"], "answer": p["answer"], "chunk_id": p["chunk_id"], "doc_id": p["doc_id"],
                    "origin": p["origin"], "split": split} for p in pairs]  # fmt: skip
        sft_rows = [{"messages": sft_messages(p["question"], p["answer"], config.sft_system_prompt),
                     "chunk_id": p["chunk_id"], "doc_id": p["doc_id"], "origin": p["origin"]}
                    for p in pairs]  # fmt: skip
        write_table(storage.join(config.table("qa"), f"{split}.parquet"), pa.Table.from_pylist(qa_rows, QA_SCHEMA))
        write_table(storage.join(config.table("sft"), f"{split}.parquet"), pa.Table.from_pylist(sft_rows, SFT_SCHEMA))
    dropped = collections.Counter(row["reason"] for row in candidates if row["status"] == "dropped")
    dropped["near_duplicate"] = len(duplicates)
    shares = config.splits.model_dump()
    empty = [split for split, pairs in by_split.items() if not pairs and shares.get(split, 1) > 0]
    if kept and empty:
        documents = len({pair["doc_id"] for pair in kept})
        logger.warning("no pairs in the %s split(s): the split is by document (%s), and %d document(s) gave pairs; "
                       "more documents fill every split", ", ".join(empty), config.splits, documents)  # fmt: skip
    test_documents = len({pair["doc_id"] for pair in by_split["test"]})
    if test_documents == 1:
        logger.warning("the test split holds one document's pairs: jobs.evaluate's promotion gate refuses a gain "
                       "measured on one document (it cannot tell it from noise); a larger splits.test or more "
                       "documents put two or more there")  # fmt: skip
    without_pairs = sorted({row["doc_id"] for row in candidates} - {pair["doc_id"] for pair in kept})
    if without_pairs:
        names = document_names(config.input, without_pairs[:5])
        unpaired = set(without_pairs)
        reasons = collections.Counter(row["reason"] for row in candidates
                                      if row["doc_id"] in unpaired and row["status"] == "dropped")  # fmt: skip
        reasons["near_duplicate"] = sum(pair["doc_id"] in unpaired for pair in duplicates)
        reasons = +reasons  # the reasons that dropped some
        logger.warning("%d document(s) gave no pair: %s%s; what their chunks' candidates were dropped for "
                       "(_candidates has each): %s", len(without_pairs), ", ".join(names),
                       ", ..." if len(without_pairs) > len(names) else "",
                       dict(reasons.most_common()))  # fmt: skip
    return {
        "generated_valid": len(generated),
        "documents_without_pairs": len(without_pairs),
        "user_pairs": len(user_pairs),
        "user_rows_rejected": len(user_errors),
        "dropped": dict(sorted(dropped.items())),
        "pairs": {split: len(pairs) for split, pairs in by_split.items()},
        "documents": {split: len({pair["doc_id"] for pair in pairs}) for split, pairs in by_split.items()},
    }


def document_names(chunks_uri: str, doc_ids: list[str]) -> list[str]:
    """How a person knows these documents: their files (the chunks' ``source``), else their ids."""
    if not storage.exists(chunks_uri):
        return doc_ids
    wanted = set(doc_ids)
    rows = read_input_folder(chunks_uri, ["doc_id"], ["source"]).to_pylist()
    sources = {row["doc_id"]: row["source"] for row in rows if row["source"] and row["doc_id"] in wanted}
    return [sources.get(doc_id, doc_id) for doc_id in doc_ids]


def main(config: MakeQaConfig) -> dict:
    """Generate pairs for every chunk not yet done, then rebuild the SFT and QA sets from all of them.

    Returns:
        The run report (also logged and printed as one JSON line).
    """
    run_id = new_run_id()
    started = time.monotonic()
    logger.info("run %s with config:\n%s", run_id, describe(config))
    config = config.model_copy(update={"input": table_of_ingest_output(config.input, "chunks")})
    done = read_column_values(config.table("_candidates"), "chunk_id")
    superseded = superseded_beside(config.input) if config.follow_ingest_ledger else set()
    if superseded:
        logger.info("left out %d document version(s) their files no longer hold (changed or deleted since ingested)",
                    len(superseded))  # fmt: skip
    sources, todo, too_short, already_done = plan_chunks(config, done, superseded)
    storage.ensure_bucket(config.output)  # after the input is checked: a refused one leaves no output behind
    logger.info("%d chunks to generate for, %d already done, %d too short to use", todo, already_done, too_short)
    if todo:
        check_model(config.engine.model)
        if config.validation.answer_match_model:
            resolve_model(config.validation.answer_match_model)
        init_ray(config.ray_address)
        generate_candidates(config, sources, done, superseded, run_id, todo)
        compact_output(config.table("_candidates"), run_id, config.output_file_bytes)
    report = {
        "run_id": run_id,
        "chunks_generated": todo,
        "chunks_already_done": already_done,
        "chunks_too_short": too_short,
        "superseded_documents": len(superseded),
    }
    report |= build_dataset(config, run_id, superseded)
    compact_output(config.table("errors"), run_id, config.output_file_bytes)  # a file per failed batch
    report |= {"seconds": round(time.monotonic() - started, 1), "output": config.output}
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    run_job(__spec__, "MakeQaConfig")
