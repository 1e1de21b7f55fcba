"""`ray job submit` of jobs.build_index and jobs.train_router, S3 in and out, as a data
engineer submits them (``JobSubmissionClient``, the repository as the working dir)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pytest

from rayfleet import storage
from rayfleet.retrieval import Retriever
from rayfleet.tables import write_table
from tests.routing.conftest import aspect_examples

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def submit_and_wait(client, entrypoint: str) -> str:
    from ray.job_submission import JobStatus

    job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(REPO)})
    deadline = time.monotonic() + 600
    while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "job did not finish in 10 minutes"
        time.sleep(3)
    logs = client.get_job_logs(job_id)
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-5000:]
    return logs


def test_ray_job_submit_builds_an_index_and_trains_a_router(ray_cluster, s3_prefix, acl_chunks):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(f"http://{ray_cluster.dashboard_url}")
    write_table(storage.join(s3_prefix, "chunks", "part-1.parquet"), pa.Table.from_pylist(acl_chunks[:40]))
    logs = submit_and_wait(
        client,
        "python -m jobs.build_index config=jobs/configs/build_index/minilm_hnsw.yaml "
        f"input={s3_prefix}/chunks output={s3_prefix}/index",
    )
    assert "progress: 40/40 chunks embedded" in logs
    assert (
        Retriever.load(f"{s3_prefix}/index").search(acl_chunks[5]["text"], k=1)[0].chunk_id == acl_chunks[5]["chunk_id"]
    )

    labelled = "\n".join(json.dumps(row) for row in aspect_examples(50))
    storage.write_bytes(storage.join(s3_prefix, "labelled.jsonl"), labelled.encode())
    logs = submit_and_wait(
        client, f"python -m jobs.train_router input={s3_prefix}/labelled.jsonl output={s3_prefix}/router"
    )
    report = json.loads(storage.read_bytes(f"{s3_prefix}/router/report.json"))
    assert report["accuracy"] > report["majority_baseline_accuracy"] and '"macro_f1"' in logs
