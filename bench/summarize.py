"""Benchmark: naive transformers loop vs the bare vLLM engine vs the full summarization job.

    python -m bench.summarize [documents=16] [max_tokens=160] [content=sections]

All three run in this one process, on the same real documents (ACL papers from
``aclsum``), model (SmolLM2-135M-Instruct, fp32), prompts and token budget, each
timed from a cold engine to the last summary:

- ``naive``: what a user writes first — a loop that calls ``transformers`` ``generate``
  once per document (batch size 1), through the same map-reduce summarizer.
- ``engine``: the bare vLLM engine given the whole batch (:class:`rayfleet.summarization.Summarizer`).
- ``pipeline``: ``jobs.summarize.main`` — Ray Data read, vLLM actor pool, per-batch
  commits to Parquet — on a local Ray started before the clock (a standing cluster).

Prints one JSON line with tokens/s for each and the ratios. Throughput counts
generated (completion) tokens; prompt tokens are reported too, since prefill dominates
summarization and bounds what batching can win on a CPU.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from typing import Literal

from pydantic import Field

from jobs.demo_documents import DemoDocumentsConfig, build_documents
from rayfleet.config import BaseConfig, load_config
from rayfleet.engines import EngineConfig, SamplingConfig, create_engine
from rayfleet.summarization import Summarizer, SummaryPrompts, SummaryResult
from rayfleet.tables import write_table


class SummarizeBenchConfig(BaseConfig):
    documents: int = Field(16, ge=1, le=250, description="Number of ACL papers.")
    content: Literal["abstract", "sections", "full"] = Field("sections", description="Paper text to summarize.")
    max_tokens: int = Field(160, ge=1, description="Summary token budget.")
    max_model_len: int = Field(2048, description="Context length for every engine.")
    batch_size: int = Field(32, ge=1, description="Documents per engine batch in the pipeline.")


def figures(results: list[SummaryResult], seconds: float) -> dict:
    completion = sum(result.completion_tokens for result in results)
    return {
        "seconds": round(seconds, 2),
        "completion_tokens": completion,
        "prompt_tokens": sum(result.prompt_tokens for result in results),
        "tokens_per_s": round(completion / seconds, 2),
    }


def run_naive(documents, config: SummarizeBenchConfig, sampling: SamplingConfig) -> dict:
    started = time.monotonic()
    engine = create_engine(EngineConfig(kind="transformers", max_model_len=config.max_model_len, transformers_batch_size=1))
    summarizer = Summarizer(engine, sampling, SummaryPrompts(), config.max_model_len)
    results = [summarizer.summarize([document])[0] for document in documents]
    engine.close()
    return figures(results, time.monotonic() - started)


def run_engine(documents, config: SummarizeBenchConfig, sampling: SamplingConfig) -> dict:
    started = time.monotonic()
    engine = create_engine(EngineConfig(kind="vllm", max_model_len=config.max_model_len))
    results = Summarizer(engine, sampling, SummaryPrompts(), config.max_model_len).summarize(documents)
    engine.close()
    return figures(results, time.monotonic() - started)


def run_pipeline(table, config: SummarizeBenchConfig, sampling: SamplingConfig) -> dict:
    import pyarrow.compute as pc

    from jobs.summarize import SummarizeConfig, main
    from rayfleet.ray_setup import init_ray
    from rayfleet.tables import read_folder

    init_ray()
    with tempfile.TemporaryDirectory() as folder:
        write_table(f"{folder}/docs/docs.parquet", table)
        job = SummarizeConfig(
            input=f"{folder}/docs",
            output=f"{folder}/summaries",
            batch_size=config.batch_size,
            engine=EngineConfig(kind="vllm", max_model_len=config.max_model_len),
            sampling=sampling,
        )
        started = time.monotonic()
        main(job)
        seconds = time.monotonic() - started
        written = read_folder(job.output, ["completion_tokens", "prompt_tokens"])
    completion = int(pc.sum(written["completion_tokens"]).as_py())
    return {
        "seconds": round(seconds, 2),
        "completion_tokens": completion,
        "prompt_tokens": int(pc.sum(written["prompt_tokens"]).as_py()),
        "tokens_per_s": round(completion / seconds, 2),
        "summaries": written.num_rows,
    }


def main(config: SummarizeBenchConfig) -> dict:
    table = build_documents(DemoDocumentsConfig(output="unused", count=config.documents, content=config.content))
    table = table.select(["doc_id", "text"])
    documents = list(zip(table["doc_id"].to_pylist(), table["text"].to_pylist()))
    sampling = SamplingConfig(max_tokens=config.max_tokens)
    naive = run_naive(documents, config, sampling)
    engine = run_engine(documents, config, sampling)
    pipeline = run_pipeline(table, config, sampling)
    result = {
        "bench": "summarize",
        "documents": config.documents,
        "content": config.content,
        "model": "smollm2-135m-instruct (fp32)",
        "max_tokens": config.max_tokens,
        "naive_tokens_per_s": naive["tokens_per_s"],
        "engine_tokens_per_s": engine["tokens_per_s"],
        "pipeline_tokens_per_s": pipeline["tokens_per_s"],
        "speedup_vs_naive": round(engine["tokens_per_s"] / naive["tokens_per_s"], 2),
        "pipeline_speedup_vs_naive": round(pipeline["tokens_per_s"] / naive["tokens_per_s"], 2),
        "pipeline_vs_engine": round(pipeline["tokens_per_s"] / engine["tokens_per_s"], 3),
        "naive": naive,
        "engine": engine,
        "pipeline": pipeline,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(load_config(SummarizeBenchConfig, sys.argv[1:]))
