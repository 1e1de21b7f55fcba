"""The dispatcher end to end: real local Ray head, real S3 (SeaweedFS), SQS and DynamoDB on moto.

- poller path: a Parquet file lands -> the summarization job runs -> its output appears;
  the same object seen again (a restarted poller lists it anew) -> still one job;
- a dispatcher killed between claim and submit, restarted -> exactly one job;
  one killed between submit and record -> the running job is adopted, not doubled;
- a job that always fails -> a dead letter with its last log lines after the configured tries;
- notification path: S3 -> SQS notification (delivered three times) -> one job, DynamoDB ledger.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from events.__main__ import main as events_main
from events.config import DispatchConfig
from events.dispatcher import Dispatcher, backoff_s, build_dispatcher
from events.ledger import CLAIMED, DEAD_LETTER, SUCCEEDED, LedgerEntry, SqliteLedger
from events.ray_jobs import submission_id
from events.rules import Rule, entrypoint
from rayfleet.tables import read_folder, write_table

REPO = Path(__file__).resolve().parents[2]


def fault_injection_rule(exit_code: int) -> dict:
    return {"name": f"exit-{exit_code}", "suffix": ".parquet", "job": "jobs.fault_injection",
            "overrides": ["input={uri}", f"exit_code={exit_code}"]}  # fmt: skip


def poller_config(ray_cluster, tmp_path, bucket: str, rules: list[dict], **changes) -> DispatchConfig:
    values = {
        "source": "poller", "poller": {"bucket": bucket, "prefix": "incoming/"},
        "ledger": {"kind": "sqlite", "sqlite_path": str(tmp_path / "ledger.sqlite")},
        "ray": {"address": f"http://{ray_cluster.dashboard_url}", "working_dir": str(REPO)},
        "rules": rules, "cycle_interval_s": 1,
    }  # fmt: skip
    return DispatchConfig.model_validate({**values, **changes})


def run_until(dispatcher: Dispatcher, object_version: str, states: set[str], timeout_s: float = 300) -> LedgerEntry:
    """Run cycles until the object's entry reaches one of ``states``."""
    deadline = time.monotonic() + timeout_s
    while True:
        dispatcher.run_cycle()
        entry = dispatcher.ledger.get(object_version)
        if entry is not None and entry.state in states:
            return entry
        assert time.monotonic() < deadline, f"{object_version} did not reach {states}: {entry}"
        time.sleep(1)


def ray_jobs_of(ray_cluster, object_version: str) -> list:
    """Every Ray job the dispatcher submitted for one object version (all attempts)."""
    from ray.job_submission import JobSubmissionClient

    prefix = submission_id(object_version, 1).rsplit("-a", 1)[0]
    jobs = JobSubmissionClient(f"http://{ray_cluster.dashboard_url}").list_jobs()
    return sorted((job for job in jobs if (job.submission_id or "").startswith(prefix)), key=lambda job: job.submission_id)


def new_bucket(local_s3) -> str:
    bucket = f"dispatch-{uuid.uuid4().hex[:8]}"
    local_s3.create_bucket(bucket)
    return bucket


def test_backoff_grows_and_is_capped():
    config = DispatchConfig.model_validate({"retry": {"backoff_s": 10, "backoff_factor": 3, "max_backoff_s": 60}})
    assert [backoff_s(attempt, config) for attempt in (1, 2, 3)] == [10, 30, 60]


@pytest.mark.slow
def test_uploaded_parquet_is_summarized_once(ray_cluster, local_s3, tiny_llama_path, tmp_path, capsys):
    bucket = new_bucket(local_s3)
    ids = ["doc-1", "doc-2", "doc-3"]
    texts = [f"Minutes {i}. The board met and approved budget line {i} for the new library." for i in range(3)]
    write_table(f"s3://{bucket}/incoming/minutes.parquet", pa.table({"doc_id": ids, "text": texts}))
    rule = {
        "name": "summarize-incoming-parquet", "prefix": "incoming/", "suffix": ".parquet", "job": "jobs.summarize",
        "overrides": ["input={uri}", "output=s3://{bucket}/summaries/{stem}", "engine.kind=transformers",
                      f"engine.model={tiny_llama_path}", "engine.max_model_len=512", "sampling.max_tokens=8"],
    }  # fmt: skip
    config = poller_config(ray_cluster, tmp_path, bucket, [rule])
    dispatcher = build_dispatcher(config)
    event = dispatcher.source.receive()[0].events[0]

    entry = run_until(dispatcher, event.object_version, {SUCCEEDED, DEAD_LETTER}, timeout_s=600)

    assert entry.state == SUCCEEDED, entry.log_tail or entry.last_error
    summaries = read_folder(f"s3://{bucket}/summaries/minutes", ["doc_id", "summary"])
    assert sorted(summaries["doc_id"].to_pylist()) == ids
    restarted = build_dispatcher(config)  # a new poller lists the same object again
    report = restarted.run_cycle()
    assert (report.received, report.duplicates, report.claimed) == (1, 1, 0)
    assert len(ray_jobs_of(ray_cluster, event.object_version)) == 1

    capsys.readouterr()
    events_main(["status", f"ledger.sqlite_path={config.ledger.sqlite_path}"])
    listing = capsys.readouterr().out
    assert "succeeded" in listing and f"s3://{bucket}/incoming/minutes.parquet" in listing
    assert entry.submission_id in listing


@pytest.mark.slow
def test_killed_between_claim_and_submit_gives_exactly_one_job_after_restart(ray_cluster, local_s3, tmp_path):
    bucket = new_bucket(local_s3)
    local_s3.client().put_object(Bucket=bucket, Key="incoming/a.parquet", Body=b"contents do not matter here")
    config = poller_config(ray_cluster, tmp_path, bucket, [fault_injection_rule(0)])
    config_file = tmp_path / "dispatch.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"dispatcher_id"})))
    command = [sys.executable, "-m", "events", "run", f"config={config_file}"]

    crashed = subprocess.run(command + ["fault_injection.crash_after_claim=true"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 17, crashed.stderr[-3000:]
    ledger = SqliteLedger(config.ledger.sqlite_path)
    (claimed,) = ledger.open_entries()
    assert claimed.state == CLAIMED and not ray_jobs_of(ray_cluster, claimed.object_version)

    restarted = subprocess.run(command + ["exit_when_idle=true", "stale_claim_s=0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert ledger.get(claimed.object_version).state == SUCCEEDED
    assert [job.submission_id for job in ray_jobs_of(ray_cluster, claimed.object_version)] == [claimed.submission_id]


@pytest.mark.slow
def test_killed_between_submit_and_record_adopts_the_job(ray_cluster, local_s3, tmp_path):
    bucket = new_bucket(local_s3)
    local_s3.client().put_object(Bucket=bucket, Key="incoming/b.parquet", Body=b"x")
    dispatcher = build_dispatcher(poller_config(ray_cluster, tmp_path, bucket, [fault_injection_rule(0)], stale_claim_s=0))
    (delivery,) = dispatcher.source.receive()
    event = delivery.events[0]
    rule = Rule.model_validate(fault_injection_rule(0))

    # What a dispatcher that died right after submitting leaves: a claim, and the job running in Ray.
    first_id = submission_id(event.object_version, 1)
    dispatcher.ledger.claim(LedgerEntry(event.object_version, bucket, event.key, event.version, event.size, rule.name,
                                        entrypoint(rule, event), submission_id=first_id))  # fmt: skip
    assert dispatcher.jobs.submit(first_id, entrypoint(rule, event), {}) is True
    assert dispatcher.jobs.submit(first_id, entrypoint(rule, event), {}) is False, "Ray refuses a second job with the id"

    entry = run_until(dispatcher, event.object_version, {SUCCEEDED, DEAD_LETTER}, timeout_s=180)
    assert entry.state == SUCCEEDED
    assert [job.submission_id for job in ray_jobs_of(ray_cluster, event.object_version)] == [first_id]


@pytest.mark.slow
def test_always_failing_job_is_dead_lettered_after_the_configured_tries(ray_cluster, local_s3, tmp_path):
    bucket = new_bucket(local_s3)
    local_s3.client().put_object(Bucket=bucket, Key="incoming/bad.parquet", Body=b"x")
    dead_letters = tmp_path / "dead_letter"
    config = poller_config(ray_cluster, tmp_path, bucket, [fault_injection_rule(3)],
                           retry={"max_attempts": 2, "backoff_s": 0.5, "log_lines": 5},
                           dead_letter_output=str(dead_letters))  # fmt: skip
    dispatcher = build_dispatcher(config)
    object_version = dispatcher.source.receive()[0].events[0].object_version

    entry = run_until(dispatcher, object_version, {SUCCEEDED, DEAD_LETTER}, timeout_s=240)

    assert entry.state == DEAD_LETTER and entry.attempt == 2
    assert f"fault injection job for s3://{bucket}/incoming/bad.parquet: exiting with 3" in entry.log_tail
    assert [job.status.value for job in ray_jobs_of(ray_cluster, object_version)] == ["FAILED", "FAILED"]
    (record_file,) = dead_letters.iterdir()
    record = json.loads(record_file.read_text())
    assert record["state"] == DEAD_LETTER and "exiting with 3" in record["log_tail"] and record["attempt"] == 2


@pytest.mark.slow
def test_sqs_notifications_start_one_job_per_object_version(ray_cluster, notifying_bucket, moto_url, tmp_path):
    s3, sqs, name, queue_url = notifying_bucket
    etag = s3.put_object(Bucket=name, Key="incoming/q3 report.parquet", Body=b"PAR1 data")["ETag"].strip('"')
    duplicate = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": name},
                 "object": {"key": "incoming/q3+report.parquet", "size": 9, "eTag": etag}}}]}  # fmt: skip
    for _ in range(2):  # at-least-once delivery: the same event twice more
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(duplicate))
    config = DispatchConfig.model_validate({
        "source": "sqs", "sqs": {"queue_url": queue_url, "endpoint_url": moto_url, "wait_time_s": 1},
        "ledger": {"kind": "dynamodb", "dynamodb_table": name, "create_table": True, "endpoint_url": moto_url},
        "ray": {"address": f"http://{ray_cluster.dashboard_url}", "working_dir": str(REPO)},
        "rules": [fault_injection_rule(0)], "cycle_interval_s": 1,
    })  # fmt: skip
    dispatcher = build_dispatcher(config)
    object_version = f"{name}/incoming/q3 report.parquet@{etag}"

    entry = run_until(dispatcher, object_version, {SUCCEEDED, DEAD_LETTER}, timeout_s=180)
    dispatcher.run_cycle()  # drain whatever is still on the queue

    assert entry.state == SUCCEEDED
    (job,) = ray_jobs_of(ray_cluster, object_version)
    from ray.job_submission import JobSubmissionClient

    logs = JobSubmissionClient(f"http://{ray_cluster.dashboard_url}").get_job_logs(job.submission_id)
    assert f"fault injection job for s3://{name}/incoming/q3 report.parquet" in logs
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0", "every delivery was acknowledged"
