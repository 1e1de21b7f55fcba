"""Print a few summaries next to their documents' titles, and the runs' throughput.

python -m jobs.show_summaries summaries=s3://rayfleet/demo/summaries documents=s3://rayfleet/demo/documents
"""

from __future__ import annotations

import textwrap

import pyarrow.compute as pc
from pydantic import Field

from rayfleet.config import BaseConfig, run_job
from rayfleet.tables import read_folder


class ShowSummariesConfig(BaseConfig):
    summaries: str = Field(..., description="Summaries folder written by jobs.summarize.")
    documents: str | None = Field(None, description="Documents folder, to show titles.")
    count: int = Field(3, ge=0, description="How many summaries to print.")


def main(config: ShowSummariesConfig) -> None:
    summaries = read_folder(config.summaries, ["doc_id", "summary", "completion_tokens", "run_id", "llm_calls"])
    titles = {}
    if config.documents:
        documents = read_folder(config.documents, ["doc_id", "title"])
        titles = dict(zip(documents["doc_id"].to_pylist(), documents["title"].to_pylist()))
    for row in summaries.slice(0, config.count).to_pylist():
        print(f"\n# {row['doc_id']}: {titles.get(row['doc_id'], '')}")
        print(textwrap.fill(row["summary"], width=100))
    print(
        f"\n{summaries.num_rows} summaries, {pc.sum(summaries['completion_tokens']).as_py()} generated tokens, "
        f"{pc.sum(summaries['llm_calls']).as_py()} LLM calls, {len(set(summaries['run_id'].to_pylist()))} run(s)"
    )


if __name__ == "__main__":
    run_job(__spec__, "ShowSummariesConfig")
