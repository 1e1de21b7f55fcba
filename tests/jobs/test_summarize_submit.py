"""The real thing: `ray job submit` of the summarization job, vLLM + SmolLM2, S3 in and out.

Submitted through ``JobSubmissionClient`` (the API behind ``ray job submit``) with the
repository as the working dir, exactly as a data engineer submits it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.demo_documents import DemoDocumentsConfig, build_documents
from rayfleet import storage
from rayfleet.tables import read_folder, write_table

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_ray_job_submit_summarizes_real_papers_with_vllm(ray_cluster, s3_prefix):
    from ray.job_submission import JobStatus, JobSubmissionClient

    papers = build_documents(DemoDocumentsConfig(output="unused", count=3))
    # One long document (a whole paper) so the map-reduce path runs inside the job too.
    long_paper = build_documents(DemoDocumentsConfig(output="unused", count=1, split="val", content="full"))
    documents = pa.concat_tables([papers, long_paper]).select(["doc_id", "title", "text"])
    write_table(storage.join(s3_prefix, "docs", "papers.parquet"), documents)

    client = JobSubmissionClient(f"http://{ray_cluster.dashboard_url}")
    job_id = client.submit_job(
        entrypoint=f"python -m jobs.summarize input={s3_prefix}/docs output={s3_prefix}/summaries "
        "sampling.max_tokens=48",
        runtime_env={"working_dir": str(REPO)},
    )
    deadline = time.monotonic() + 900
    while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "job did not finish in 15 minutes"
        time.sleep(5)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-5000:]
    assert "progress:" in logs

    summaries = read_folder(f"{s3_prefix}/summaries", ["doc_id", "summary", "engine", "llm_calls", "reduce_levels"])
    rows = {row["doc_id"]: row for row in summaries.to_pylist()}
    assert sorted(rows) == sorted(documents["doc_id"].to_pylist())
    assert {row["engine"] for row in rows.values()} == {"vllm"}
    assert all(len(row["summary"].split()) >= 5 for row in rows.values())
    long_row = rows[long_paper["doc_id"][0].as_py()]
    assert long_row["llm_calls"] > 2 and long_row["reduce_levels"] >= 1
