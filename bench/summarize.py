"""Benchmark: naive transformers loop vs the bare vLLM engine vs the full summarization job.

    python -m bench.summarize [documents=16] [max_tokens=160] [content=sections] [repeats=1] [enforce_eager=true]

All three run on the same real documents (ACL papers from ``aclsum``), model
(SmolLM2-135M-Instruct, fp32), prompts and token budget, each from a cold process,
timed to the last summary:

- ``naive``: what a user writes first — a loop that calls ``transformers`` ``generate``
  once per document (batch size 1), through the same map-reduce summarizer; a new
  Python process, timed from its launch.
- ``engine``: the bare vLLM engine given the whole batch (:class:`rayfleet.summarization.Summarizer`);
  a new Python process, timed from its launch.
- ``pipeline``: ``jobs.summarize.main`` — Ray Data read, vLLM actor pool, per-batch
  commits to Parquet — on a local Ray started before the clock (a standing cluster),
  whose engine actor is a new worker process that imports torch and vLLM like the others.

Prints one JSON line with tokens/s for each and the ratios. Throughput counts
generated (completion) tokens; prompt tokens are reported too, since prefill dominates
summarization and bounds what batching can win on a CPU.

On a shared VM the same run's speed drifts by 10-20 % within minutes, which moves a
single engine-to-pipeline ratio more than anything the pipeline does. ``repeats=N``
runs the engine and the pipeline N times each, back to back and in alternating order,
and reports medians: ``pipeline_vs_engine`` is then the median of the N ratios of
adjacent runs. The naive loop (minutes long) runs once.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from jobs.demo_documents import DemoDocumentsConfig, build_documents
from rayfleet.config import BaseConfig, config_or_exit
from rayfleet.engines import EngineConfig, SamplingConfig, create_engine
from rayfleet.summarization import Summarizer, SummaryPrompts
from rayfleet.tables import write_table


class SummarizeBenchConfig(BaseConfig):
    documents: int = Field(16, ge=1, le=250, description="Number of ACL papers.")
    content: Literal["abstract", "sections", "full"] = Field("sections", description="Paper text to summarize.")
    max_tokens: int = Field(160, ge=1, description="Summary token budget.")
    max_model_len: int = Field(2048, description="Context length for every engine.")
    batch_size: int = Field(32, ge=1, description="Documents per engine batch in the pipeline.")
    repeats: int = Field(1, ge=1, description="Engine and pipeline runs each, alternating; figures are medians.")
    enforce_eager: bool = Field(
        True, description="vLLM (engine and pipeline): eager mode; false compiles the model (a ~50 s longer start)."
    )


def figures(completion_tokens: int, prompt_tokens: int, seconds: float) -> dict:
    """One run's token counts, time and generated tokens/s, rounded for the JSON line."""
    return {
        "seconds": round(seconds, 2),
        "completion_tokens": completion_tokens,
        "prompt_tokens": prompt_tokens,
        "tokens_per_s": round(completion_tokens / seconds, 2),
    }


def run_naive(documents, config: SummarizeBenchConfig, sampling: SamplingConfig) -> dict:
    """A ``transformers`` ``generate`` call per document, in a fresh process."""
    return run_in_fresh_process("naive", documents, config, sampling)


def run_engine(documents, config: SummarizeBenchConfig, sampling: SamplingConfig) -> dict:
    """The bare vLLM engine on the whole batch, in a fresh process."""
    return run_in_fresh_process("engine", documents, config, sampling)


def run_in_fresh_process(path: str, documents, config: SummarizeBenchConfig, sampling: SamplingConfig) -> dict:
    """Run ``path`` in a new Python process, timed from its launch to its last summary.

    A new process imports torch, transformers and vLLM, as the pipeline's engine actor
    does; in this one they stay imported after the first run and later runs skip that.
    """
    with tempfile.TemporaryDirectory() as folder:
        request, reply = Path(folder) / "request.json", Path(folder) / "reply.json"
        asked = {"path": path, "documents": documents, "config": config.model_dump(), "sampling": sampling.model_dump()}
        request.write_text(json.dumps(asked))
        launched = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(request), str(reply)], check=True)
        counts = json.loads(reply.read_text())
    return figures(counts["completion_tokens"], counts["prompt_tokens"], counts["finished_at"] - launched)


FRESH_PROCESS = (
    "import sys; from bench.summarize import summarize_in_this_process; summarize_in_this_process(*sys.argv[1:])"
)


def summarize_in_this_process(request: str, reply: str) -> None:
    """:func:`run_in_fresh_process`'s child: summarize the request's documents, write the token counts."""
    asked = json.loads(Path(request).read_text())
    config, sampling = SummarizeBenchConfig(**asked["config"]), SamplingConfig(**asked["sampling"])
    documents = [tuple(document) for document in asked["documents"]]
    naive = asked["path"] == "naive"
    if naive:
        engine = create_engine(
            EngineConfig(kind="transformers", max_model_len=config.max_model_len, transformers_batch_size=1)
        )
    else:
        engine = create_engine(
            EngineConfig(kind="vllm", max_model_len=config.max_model_len, enforce_eager=config.enforce_eager)
        )
    summarizer = Summarizer(engine, sampling, SummaryPrompts(), config.max_model_len)
    results = (
        [summarizer.summarize([document])[0] for document in documents] if naive else summarizer.summarize(documents)
    )
    finished_at = time.monotonic()
    engine.close()
    counts = {
        "completion_tokens": sum(result.completion_tokens for result in results),
        "prompt_tokens": sum(result.prompt_tokens for result in results),
        "finished_at": finished_at,
    }
    Path(reply).write_text(json.dumps(counts))


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
            engine=EngineConfig(kind="vllm", max_model_len=config.max_model_len, enforce_eager=config.enforce_eager),
            sampling=sampling,
        )
        started = time.monotonic()
        main(job)
        seconds = time.monotonic() - started
        written = read_folder(job.output, ["completion_tokens", "prompt_tokens"])
    completion, prompt = (int(pc.sum(written[column]).as_py()) for column in ("completion_tokens", "prompt_tokens"))
    return {**figures(completion, prompt, seconds), "summaries": written.num_rows}


def engine_and_pipeline_runs(
    table, documents, config: SummarizeBenchConfig, sampling: SamplingConfig
) -> list[tuple[dict, dict]]:
    """``config.repeats`` adjacent (engine, pipeline) runs; odd repeats run the pipeline first."""
    pairs = []
    for repeat in range(config.repeats):
        if repeat % 2:
            pipeline = run_pipeline(table, config, sampling)
            engine = run_engine(documents, config, sampling)
        else:
            engine = run_engine(documents, config, sampling)
            pipeline = run_pipeline(table, config, sampling)
        print(
            f"bench.summarize repeat {repeat + 1}: engine {json.dumps(engine)} pipeline {json.dumps(pipeline)}",
            file=sys.stderr,
            flush=True,
        )
        pairs.append((engine, pipeline))
    return pairs


def median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda run: run["tokens_per_s"])[(len(runs) - 1) // 2]


def main(config: SummarizeBenchConfig) -> dict:
    table = build_documents(DemoDocumentsConfig(output="unused", count=config.documents, content=config.content))
    table = table.select(["doc_id", "text"])
    documents = list(zip(table["doc_id"].to_pylist(), table["text"].to_pylist()))
    sampling = SamplingConfig(max_tokens=config.max_tokens)
    naive = run_naive(documents, config, sampling)
    pairs = engine_and_pipeline_runs(table, documents, config, sampling)
    engine, pipeline = median_run([pair[0] for pair in pairs]), median_run([pair[1] for pair in pairs])
    paired_ratios = [pipeline_run["tokens_per_s"] / engine_run["tokens_per_s"] for engine_run, pipeline_run in pairs]
    result = {
        "bench": "summarize",
        "documents": config.documents,
        "content": config.content,
        "model": "smollm2-135m-instruct (fp32)",
        "max_tokens": config.max_tokens,
        "enforce_eager": config.enforce_eager,
        "naive_tokens_per_s": naive["tokens_per_s"],
        "engine_tokens_per_s": engine["tokens_per_s"],
        "pipeline_tokens_per_s": pipeline["tokens_per_s"],
        "speedup_vs_naive": round(engine["tokens_per_s"] / naive["tokens_per_s"], 2),
        "pipeline_speedup_vs_naive": round(pipeline["tokens_per_s"] / naive["tokens_per_s"], 2),
        "pipeline_vs_engine": round(statistics.median(paired_ratios), 3),
        "repeats": config.repeats,
        "engine_runs_tokens_per_s": [pair[0]["tokens_per_s"] for pair in pairs],
        "pipeline_runs_tokens_per_s": [pair[1]["tokens_per_s"] for pair in pairs],
        "pipeline_vs_engine_runs": [round(ratio, 3) for ratio in paired_ratios],
        "naive": naive,
        "engine": engine,
        "pipeline": pipeline,
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(config_or_exit(SummarizeBenchConfig, sys.argv[1:]))
