"""Batch summarization of a documents dataset with Ray Data and the vLLM engine.

Run it anywhere the same way::

    python -m jobs.summarize input=s3://bucket/documents output=s3://bucket/summaries
    ray job submit --working-dir . -- python -m jobs.summarize input=... output=...
    python -m jobs.summarize config=jobs/configs/summarize/smollm2_vllm.yaml input=... output=...

Input: Parquet files (a file or a folder/prefix) with at least ``doc_id`` and ``text``
(see ``schemas/``). Output: one summary row per ``doc_id`` in Parquet files under
``output``; inputs that could not be summarized go to ``output/_errors/`` with the
reason. The job is resumable: a rerun skips every ``doc_id`` already in ``output``,
so killing it part-way and running it again finishes the rest, with nothing doubled. At the
end the run's files (one per batch) are merged into files of up to ``output_file_bytes`` (64 MiB).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from dataclasses import asdict
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from rayfleet import storage
from rayfleet.assets import check_model, folder_fingerprint, resolve_model
from rayfleet.config import BaseConfig, describe, run_job
from rayfleet.documents import InputPlan, WorkItem, plan_input, read_work_item
from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.engines.thread_bound import ThreadBoundEngine
from rayfleet.ingestion import superseded_beside, table_of_ingest_output
from rayfleet.ray_setup import WorkerPoolConfig, cluster_pool_size, init_ray
from rayfleet.summarization import Summarizer, SummaryPrompts, SummaryResult
from rayfleet.tables import (
    compact_output,
    drop_duplicate_ids,
    error_row,
    new_run_id,
    output_file_bytes_field,
    read_column_values,
    read_folder,
    utc_now,
    write_errors,
    write_table,
)
from schemas import SUMMARIES_SCHEMA

logger = logging.getLogger("jobs.summarize")
# The columns that tell this job's summaries from anyone else's Parquet file in the output folder.
SUMMARY_SIGNATURE = ("summary", "run_id")
# A plan of at most this many rows is read on the driver first: when no row has a text to summarize
# (a rerun whose only rows left are ones set aside before), no engine is started for nothing.
PRECHECK_ROWS = 256


class SummarizeConfig(BaseConfig):
    """Configuration of the summarization job."""

    input: str = Field(..., description="Parquet file or folder/prefix of documents (local path or s3://).")
    output: str = Field(..., description="Folder/prefix for the summaries Parquet (local path or s3://).")
    errors_output: str | None = Field(None, description="Errors table folder; default <output>/_errors.")
    id_column: str = Field("doc_id", description="Column holding each document's unique id.")
    text_column: str = Field("text", description="Column holding each document's text.")
    batch_size: int = Field(32, ge=1, description="Documents per engine batch (and per output file until merged).")
    output_file_bytes: int = output_file_bytes_field()
    rows_per_read_task: int = Field(
        256,
        ge=1,
        description="Rows a read task decodes at a time (it streams its row group in slices of this size); "
        "consecutive smaller row groups of a file are read by one task up to this many rows.",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="Engine and model.")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=160))
    prompts: SummaryPrompts = Field(default_factory=SummaryPrompts, description="Prompt templates.")
    end_at_sentence: bool = Field(
        True,
        description="A summary sampling.max_tokens cut off mid-sentence ends at its last complete sentence "
        "(finish_reason stays length); false keeps the text as cut.",
    )
    workers: WorkerPoolConfig = Field(default_factory=WorkerPoolConfig, description="Engine actor pool sizing.")
    ray_address: str | None = Field(None, description="Ray cluster address; default $RAY_ADDRESS or a local Ray.")
    missing_ok: bool = Field(
        False,
        description="An input that does not exist is nothing to do (nothing written, exit status 0), not an "
        "error: the dispatcher's rules set it, as a file may be deleted before its job runs.",
    )
    follow_ingest_ledger: bool = Field(
        True,
        description="When the input is a jobs.ingest documents table (its _files ledger beside it), summarize each "
        "file's current version only: a document its file no longer holds (changed or deleted since) is left out.",
    )

    @property
    def errors_uri(self) -> str:
        return self.errors_output or storage.join(self.output, "_errors")

    @model_validator(mode="after")
    def _folders_apart(self) -> "SummarizeConfig":
        """Every Parquet file listed under ``output`` is read as a summary, and every one under ``input``
        as documents (folders named ``_...`` are not listed): nothing else may live there."""
        if storage.contains(self.output, self.input) or storage.listed_under(self.input, self.output):
            raise ValueError(
                f"input ({self.input}) and output ({self.output}) overlap; the job would read its own summaries "
                "as documents or the documents as summaries: give them separate folders"
            )
        if self.errors_output and storage.listed_under(self.output, self.errors_output):
            raise ValueError(
                f"errors_output ({self.errors_output}) lies under output, where its rows would read as summaries: "
                "put it elsewhere or in a folder whose name starts with '_' (the default is <output>/_errors)"
            )
        if storage.listed_under(self.input, self.errors_uri):
            raise ValueError(
                f"errors_output ({self.errors_uri}) lies under input, where the next run would read its rows as "
                "documents: put it elsewhere or in a folder whose name starts with '_'"
            )
        return self

    @model_validator(mode="after")
    def _room_to_summarize(self) -> "SummarizeConfig":
        """Found here, not after Ray and the engine have started (the summarizer checks the exact budget)."""
        needed = Summarizer.least_context(self.sampling.max_tokens)
        if self.engine.max_model_len < needed:
            raise ValueError(
                f"engine.max_model_len={self.engine.max_model_len} cannot hold a call with sampling.max_tokens="
                f"{self.sampling.max_tokens}: it needs at least {needed} tokens besides the prompt (text twice the "
                "summary's length, the summary, a margin); raise engine.max_model_len or lower sampling.max_tokens"
            )
        return self


class SummarizeWorker:
    """Ray Data actor: holds one engine and summarizes batches of documents."""

    def __init__(self, config: SummarizeConfig, run_id: str):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config, self.run_id = config, run_id
        started = time.monotonic()
        self.engine = ThreadBoundEngine(config.engine)
        self.summarizer = Summarizer(
            self.engine, config.sampling, config.prompts, config.engine.max_model_len, config.end_at_sentence
        )
        self.fingerprint = folder_fingerprint(resolve_model(config.engine.model))
        logger.info("%s engine ready in %.1f s", self.engine.name, time.monotonic() - started)

    def __call__(self, batch: dict) -> dict:
        """Summarize one batch and commit its summaries as new output files.

        Committing here, batch by batch (not in a final Ray Data write, which buffers),
        is what makes a killed run resumable: every finished batch is already in
        ``output`` as a complete file. A batch holding a long document commits the others as
        soon as they are done, not after its map-reduce. Returns the batch's figures for progress.
        """
        started = time.monotonic()
        readable = [not aside for aside in batch["set_aside"]]
        documents = [(doc_id, text) for doc_id, text, ok in zip(batch["doc_id"], batch["text"], readable) if ok]
        # The summary's source: the document's own (its file, in jobs.ingest's documents), else the Parquet file.
        sources = {doc_id: document_source or source for doc_id, source, document_source
                   in zip(batch["doc_id"], batch["source"], batch["document_source"])}  # fmt: skip
        committed: dict[str, SummaryResult] = {}

        def commit(results: list[SummaryResult]) -> None:
            """Commit the summaries not committed yet as one new file (an empty one is an error row, later)."""
            fresh = [result for result in results if result.summary.strip() and result.doc_id not in committed]
            if fresh:
                rows = [self._row(result, sources[result.doc_id]) for result in fresh]
                name = f"part-{self.run_id}-{uuid.uuid4().hex[:12]}.parquet"
                write_table(storage.join(self.config.output, name), pa.Table.from_pylist(rows, SUMMARIES_SCHEMA))
                committed.update((result.doc_id, result) for result in fresh)

        results, errors = self._summarize_isolating_failures(documents, batch, commit, committed)
        commit(results)
        write_errors(self.config.errors_uri, errors)
        return {
            "summaries": [len(results)],
            "errors": [len(errors) + readable.count(False)],  # rows the read tasks set aside count as done
            "completion_tokens": [sum(result.completion_tokens for result in results)],
            "seconds": [time.monotonic() - started],
        }

    def _summarize_isolating_failures(
        self, documents, batch, on_finished, committed: dict[str, SummaryResult]
    ) -> tuple[list[SummaryResult], list[dict]]:
        """Summarize the batch; if the engine fails on it, retry one at a time the documents not committed."""
        try:
            summaries = self.summarizer.summarize(documents, on_finished)
            outcomes = [(doc_id, result) for (doc_id, _), result in zip(documents, summaries)]
        except Exception:
            left = [document for document in documents if document[0] not in committed]
            logger.exception(
                "batch of %d failed; retrying its %d unfinished documents one at a time", len(documents), len(left)
            )
            outcomes = list(committed.items())
            for document in left:
                try:
                    outcomes.append((document[0], self.summarizer.summarize([document])[0]))
                except Exception as error:
                    outcomes.append((document[0], error))
        rows = dict(zip(batch["doc_id"], zip(batch["source"], batch["row"])))
        results, errors = [], []
        for doc_id, outcome in outcomes:
            source, row = rows[doc_id]
            if isinstance(outcome, Exception):
                errors.append(
                    error_row(
                        source, f"{type(outcome).__name__}: {outcome}", "summarize", self.run_id, int(row), doc_id
                    )
                )
            elif not outcome.summary.strip():
                errors.append(
                    error_row(source, "the model returned an empty summary", "summarize", self.run_id, int(row), doc_id)
                )
            else:
                results.append(outcome)
        return results, errors

    def _row(self, result: SummaryResult, source: str) -> dict:
        return {
            **asdict(result),
            "model": self.config.engine.model,
            "model_fingerprint": self.fingerprint,
            "adapter": self.config.engine.adapter,
            "engine": self.engine.name,
            "source": source,
            "run_id": self.run_id,
            "created_at": utc_now(),
        }


# What read tasks hand the engine pool: each planned row once, those set aside marked (their
# error rows are already written) so that progress counts them as done.
ROWS_SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.large_string()), ("source", pa.string()),
                         ("row", pa.int64()), ("document_source", pa.string()), ("set_aside", pa.bool_())])  # fmt: skip


def read_rows(batch: pa.Table, config: SummarizeConfig, run_id: str) -> Iterator[pa.Table]:
    """Ray Data task: stream the rows of ``batch``'s work items, a slice at a time; set aside invalid rows."""
    for item in batch.column("item").to_pylist():
        work = WorkItem(**{**item, "row_groups": tuple(item["row_groups"]), "rows": tuple(item["rows"])})
        for rows, errors in read_work_item(
            work, config.id_column, config.text_column, run_id, config.rows_per_read_task
        ):
            write_errors(config.errors_uri, errors)
            aside = [{"doc_id": e["doc_id"], "text": "", "source": e["source"], "row": e["row"], "set_aside": True}
                     for e in errors]  # fmt: skip
            if rows or aside:
                yield pa.Table.from_pylist([{**row, "set_aside": False} for row in rows] + aside, schema=ROWS_SCHEMA)


def summarize_dataset(config: SummarizeConfig, items: list[WorkItem], run_id: str, total: int) -> None:
    """Run the Ray Data pipeline (read -> summarize and commit, in an actor pool) with progress lines."""
    import ray

    workers, claim = cluster_pool_size(config.workers)
    logger.info("engine pool: %d worker(s), each claiming %s", workers, claim)
    work = [{"item": asdict(item)} for item in items]
    batch_figures = (
        ray.data.from_items(work, override_num_blocks=len(work))
        .map_batches(
            read_rows,
            batch_size=1,
            batch_format="pyarrow",
            num_cpus=0.25,
            fn_kwargs={"config": config, "run_id": run_id},
        )
        .map_batches(
            SummarizeWorker,
            batch_size=config.batch_size,
            batch_format="numpy",
            fn_constructor_kwargs={"config": config, "run_id": run_id},
            compute=ray.data.ActorPoolStrategy(size=workers),
            **claim,
        )
    )
    progress = Progress(total)
    for figures in batch_figures.iter_rows():
        progress.add(figures)


class Progress:
    """Driver-side progress lines: documents done of total, errors, throughput and ETA."""

    def __init__(self, total: int):
        self.total, self.started = total, time.monotonic()
        self.summaries = self.errors = self.tokens = 0

    def add(self, figures: dict) -> None:
        self.summaries += int(figures["summaries"])
        self.errors += int(figures["errors"])
        self.tokens += int(figures["completion_tokens"])
        elapsed = time.monotonic() - self.started
        done = self.summaries + self.errors
        remaining = elapsed / done * (self.total - done) if done else float("nan")
        logger.info(
            "progress: %d/%d documents (%.0f%%), %d errors, %.1f generated tokens/s, ~%.0f s left",
            done, self.total, 100 * done / max(self.total, 1), self.errors, self.tokens / elapsed, remaining,
        )  # fmt: skip


def main(config: SummarizeConfig) -> dict:
    """Summarize every document of ``config.input`` not yet in ``config.output``.

    Returns:
        The run report (also logged and printed as one JSON line).
    """
    run_id = new_run_id()
    started = time.monotonic()
    logger.info("run %s with config:\n%s", run_id, describe(config))
    if config.missing_ok and not storage.exists(config.input):
        logger.warning("no file or folder at %s: nothing to do (missing_ok)", config.input)
        report = {**run_figures(config, run_id, 0, 0, 0, 0, time.monotonic() - started), "input_missing": True}
        print(json.dumps(report), flush=True)
        return report
    config = config.model_copy(update={"input": table_of_ingest_output(config.input, "documents")})
    # Listed before the output is made: a mistyped input, or a folder without Parquet, leaves nothing behind.
    sources = storage.list_parquet_files(config.input)
    storage.ensure_bucket(config.output)
    done_ids = read_column_values(config.output, "doc_id", SUMMARY_SIGNATURE)
    superseded = superseded_beside(config.input) if config.follow_ingest_ledger else set()
    if stale := done_ids & superseded:
        logger.warning("%d summaries in %s are of document versions their files no longer hold (changed or deleted "
                       "since): they stay beside the current versions' summaries; a reader keeps the doc_ids the "
                       "ingest ledger holds (rayfleet.ingestion.current_files)", len(stale), config.output)  # fmt: skip
    plan = plan_input(sources, config.id_column, config.text_column, done_ids, run_id, config.rows_per_read_task,
                      left_out=superseded)  # fmt: skip
    write_errors(config.errors_uri, plan.errors)
    logger.info(
        "%d files, %d rows: %d to summarize, %d already done, %d set aside%s",
        plan.files, plan.total_rows, plan.todo_rows, plan.already_done, len(plan.errors),
        f", {plan.left_out} left out (versions their files no longer hold: changed or deleted since ingested)"
        if plan.left_out else "",
    )  # fmt: skip
    if not plan.total_rows and not plan.errors:
        logger.warning("the input's %d Parquet file(s) hold no rows: nothing to summarize", plan.files)
    set_aside = unsummarizable(config, plan, run_id) if plan.items else None
    if set_aside is not None:
        write_errors(config.errors_uri, set_aside)
        logger.info("none of the %d rows to do has a text to summarize: no engine started", plan.todo_rows)
    elif plan.items:
        check_model(config.engine.model)
        init_ray(config.ray_address)
        summarize_dataset(config, plan.items, run_id, plan.todo_rows)
    drop_duplicate_ids(config.output, "doc_id", SUMMARY_SIGNATURE)
    compact_output(config.output, run_id, config.output_file_bytes)
    compact_output(config.errors_uri, run_id, config.output_file_bytes)  # a file per batch with bad rows
    report = run_report(config, run_id, plan.already_done, time.monotonic() - started)
    report["superseded_documents"] = plan.left_out
    report["superseded_summaries"] = len(stale)
    print(json.dumps(report), flush=True)
    return report


def unsummarizable(config: SummarizeConfig, plan: InputPlan, run_id: str) -> list[dict] | None:
    """The error rows of a small plan (``PRECHECK_ROWS``) none of whose rows has a text to summarize,
    read here on the driver; None when some row has one, or the plan is too large to read twice."""
    if plan.todo_rows > PRECHECK_ROWS:
        return None
    errors = []
    for item in plan.items:
        for rows, invalid in read_work_item(
            item, config.id_column, config.text_column, run_id, config.rows_per_read_task
        ):
            if rows:
                return None
            errors += invalid
    return errors


def run_report(config: SummarizeConfig, run_id: str, already_done: int, seconds: float) -> dict:
    """Figures of this run, read back from what it wrote."""
    summaries = read_folder(config.output, ["run_id", "completion_tokens"])
    mine = summaries.filter(pc.equal(summaries["run_id"], run_id)) if summaries.num_rows else summaries
    errors = read_folder(config.errors_uri, ["run_id"])
    generated = int(pc.sum(mine["completion_tokens"]).as_py() or 0) if mine.num_rows else 0
    error_count = int(pc.sum(pc.equal(errors["run_id"], run_id)).as_py() or 0) if errors.num_rows else 0
    return run_figures(config, run_id, mine.num_rows, already_done, error_count, generated, seconds)


def run_figures(config: SummarizeConfig, run_id: str, summarized: int, already_done: int, errors: int, generated: int,
                seconds: float) -> dict:  # fmt: skip
    """The run report's figures."""
    return {
        "run_id": run_id,
        "summarized": summarized,
        "already_done": already_done,
        "errors": errors,
        "generated_tokens": generated,
        "seconds": round(seconds, 1),
        "generated_tokens_per_s": round(generated / seconds, 2) if seconds else 0.0,
        "output": config.output,
        "errors_output": config.errors_uri,
    }


def exit_status(report: dict) -> int:
    """The command's exit status: 1 when every row it read was set aside (nothing summarized, now or
    before), so a scheduler sees the run failed; else 0 (bad rows beside good ones are reported, not fatal)."""
    if report["errors"] and not report["summarized"] and not report["already_done"]:
        logger.error("no document was summarized: every one of the %d rows read failed (see %s)",
                     report["errors"], report["errors_output"])  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(run_job(__spec__, "SummarizeConfig")))
