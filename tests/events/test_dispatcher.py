"""The dispatcher: its queue and failure handling, and end to end on a real local Ray head.

Fast tests drive it over the real local S3 (SeaweedFS) and SQLite/DynamoDB (moto) ledgers
with clusters that only inject faults (``FaultInjection*``: every submission refused, or
nothing reachable); they cover a refused submission as a failed attempt, one failing entry
or event not stopping the rest, logs cut to fit DynamoDB, stale copies of an entry, and
the dead-letter record written before the state changes. Slow tests, real Ray:

- the running-job limit: three uploads, one job at a time, oldest first;
- a job past its rule's timeout is stopped (``ray job stop``) and fails;
- a submission whose reply was lost is adopted, not doubled;
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

from events.__main__ import display_width, main as events_main, status_table
from events.config import DispatchConfig
from events.dispatcher import (
    TEXT_LIMIT_BYTES, Dispatcher, backoff_s, build_dispatcher, claims_to_submit, text_tail,
)  # fmt: skip
from events.ledger import (
    CLAIMED,
    DEAD_LETTER,
    RETRY_WAIT,
    SUBMITTED,
    SUCCEEDED,
    DynamoLedger,
    LedgerEntry,
    SqliteLedger,
)
from events.ray_jobs import RayJobs, submission_id
from events.rules import Rule, entrypoint
from events.sources import BucketPoller
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
    return sorted(
        (job for job in jobs if (job.submission_id or "").startswith(prefix)), key=lambda job: job.submission_id
    )


def new_bucket(local_s3) -> str:
    bucket = f"dispatch-{uuid.uuid4().hex[:8]}"
    local_s3.create_bucket(bucket)
    return bucket


def test_backoff_grows_and_is_capped():
    config = DispatchConfig.model_validate({"retry": {"backoff_s": 10, "backoff_factor": 3, "max_backoff_s": 60}})
    assert [backoff_s(attempt, config) for attempt in (1, 2, 3)] == [10, 30, 60]


class FaultInjectionRejectingCluster:
    """A cluster that refuses every submission (HTTP 400), so it never holds a job."""

    def __init__(self):
        self.submissions: list[str] = []

    def submit(self, submission: str, entrypoint: str, metadata: dict, num_cpus: float = 0, num_gpus: float = 0):
        self.submissions.append(submission)
        raise RuntimeError("Request failed with status code 400: runtime_env working_dir is not a directory")

    def status(self, submission: str):
        return None  # it never accepted a job

    def log_tail(self, submission: str, lines: int) -> str:
        return ""

    def stop(self, submission: str) -> None:
        raise RuntimeError(f"fault injection: no job {submission}")


class FaultInjectionUnreachableCluster:
    """A cluster whose jobs API answers nothing: every call fails."""

    def __getattr__(self, name: str):
        def unreachable(*args, **kwargs):
            raise ConnectionError("fault injection: Request failed with status code 500: Internal Server Error")

        return unreachable


class FaultInjectionRefusingLedger(SqliteLedger):
    """A SQLite ledger that refuses to claim any key containing ``poison`` (and, with ``stop_after``, ends the
    dispatcher's run at that refusal, as a stop signal would)."""

    def __init__(self, path, stop_after: int | None = None):
        super().__init__(path)
        self.refusals, self.stop_after = 0, stop_after

    def claim(self, entry: LedgerEntry) -> bool:
        if "poison" in entry.key:
            self.refusals += 1
            if self.refusals == self.stop_after:
                raise SystemExit("fault injection: stopped")
            raise RuntimeError("fault injection: the ledger refused the write")
        return super().claim(entry)


class SettableClock:
    """The dispatcher's clock, moved on by the test."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def dispatcher_on_bucket(local_s3, tmp_path, jobs, ledger=None, **changes) -> Dispatcher:
    """A dispatcher polling ``incoming/`` of a new bucket on the local S3, with a fault-injection rule."""
    bucket = new_bucket(local_s3)
    config = DispatchConfig.model_validate({
        "poller": {"bucket": bucket, "prefix": "incoming/"}, "ledger": {"sqlite_path": str(tmp_path / "ledger.sqlite")},
        "rules": [fault_injection_rule(0)], "dispatcher_id": "test-dispatcher", **changes,
    })  # fmt: skip
    return Dispatcher(config, BucketPoller(local_s3.client(), bucket, "incoming/"),
                      ledger or SqliteLedger(config.ledger.sqlite_path), jobs, SettableClock())  # fmt: skip


def ledger_entry(key: str, state: str = CLAIMED, attempt: int = 1, created_at: float = 1.0, rule: str = "exit-0",
                 owner: str = "test-dispatcher") -> LedgerEntry:  # fmt: skip
    object_version = f"data/{key}@etag"
    return LedgerEntry(object_version, "data", key, "etag", 10, rule, "python -m jobs.fault_injection", state=state,
                       attempt=attempt, submission_id=submission_id(object_version, attempt), owner=owner,
                       created_at=created_at, updated_at=created_at)  # fmt: skip


def test_queued_claims_go_out_oldest_first_within_the_overall_and_rule_limits():
    config = DispatchConfig.model_validate({
        "dispatcher_id": "me", "stale_claim_s": 30, "max_running_jobs": 3,
        "rules": [{"name": "heavy", "job": "jobs.summarize", "max_running_jobs": 1},
                  {"name": "light", "job": "jobs.ingest"}],
    })  # fmt: skip
    entries = [
        ledger_entry("running", SUBMITTED, rule="light", created_at=0.0),
        ledger_entry("heavy-1", rule="heavy", created_at=1.0, owner="me"),
        ledger_entry("heavy-2", rule="heavy", created_at=2.0, owner="me"),
        ledger_entry("light-fresh-of-another", rule="light", created_at=99.0, owner="other"),
        ledger_entry("light-3", rule="light", created_at=3.0, owner="me"),
        ledger_entry("light-4", rule="light", created_at=4.0, owner="me"),
    ]
    assert [entry.key for entry in claims_to_submit(entries, config, now=100.0)] == ["heavy-1", "light-3"]
    one_at_a_time = config.model_copy(update={"max_running_jobs": 1})
    assert claims_to_submit(entries, one_at_a_time, now=100.0) == [], "the running job fills the only place"
    stale_and_released = [ledger_entry("stale", created_at=5.0, owner="dead"), ledger_entry("requeued", owner="")]
    assert [entry.key for entry in claims_to_submit(stale_and_released, config, now=100.0)] == ["requeued", "stale"]


def test_the_local_config_runs_one_job_at_a_time_and_times_jobs_out():
    from rayfleet.config import load_config

    config = load_config(DispatchConfig, [f"config={REPO / 'jobs/configs/dispatch/local.yaml'}"])
    assert config.max_running_jobs == 1
    assert all(rule.timeout_s for rule in config.rules)


def test_a_refused_submission_is_a_failed_attempt_and_ends_as_a_dead_letter(local_s3, tmp_path):
    cluster = FaultInjectionRejectingCluster()
    dispatcher = dispatcher_on_bucket(local_s3, tmp_path, cluster, dead_letter_output=str(tmp_path / "dead_letter"),
                                      retry={"max_attempts": 3, "backoff_s": 10, "backoff_factor": 2})  # fmt: skip
    local_s3.client().put_object(Bucket=dispatcher.config.poller.bucket, Key="incoming/a.parquet", Body=b"x")

    dispatcher.run_cycle()
    (entry,) = dispatcher.ledger.recent(5)
    assert (entry.state, entry.attempt, entry.next_attempt_at) == (RETRY_WAIT, 1, 1010.0)
    assert "status code 400" in entry.last_error
    for _ in range(200):  # 1000 s of 5 s cycles
        dispatcher.clock.now += 5
        dispatcher.run_cycle()

    entry = dispatcher.ledger.get(entry.object_version)
    assert (entry.state, entry.attempt) == (DEAD_LETTER, 3)
    assert cluster.submissions == [submission_id(entry.object_version, attempt) for attempt in (1, 2, 3)]
    (record,) = (tmp_path / "dead_letter").iterdir()
    assert "status code 400" in json.loads(record.read_text())["last_error"]


def test_a_failing_open_entry_does_not_stop_new_events(local_s3, tmp_path):
    dispatcher = dispatcher_on_bucket(local_s3, tmp_path, FaultInjectionUnreachableCluster())
    dispatcher.ledger.claim(ledger_entry("first.parquet", SUBMITTED))
    s3 = local_s3.client()
    for index in range(3):
        s3.put_object(Bucket=dispatcher.config.poller.bucket, Key=f"incoming/new-{index}.parquet", Body=b"x")

    report = dispatcher.run_cycle()

    assert report.errors == 1 and report.claimed == 3
    states = sorted((entry.key, entry.state) for entry in dispatcher.ledger.recent(10))
    assert states == [("first.parquet", SUBMITTED)] + [(f"incoming/new-{index}.parquet", CLAIMED) for index in range(3)]
    assert dispatcher.source.receive() == [], "the delivery was acknowledged"


def test_a_file_put_back_to_earlier_contents_is_claimed_again_and_a_restart_claims_nothing(local_s3, tmp_path):
    dispatcher = dispatcher_on_bucket(local_s3, tmp_path, FaultInjectionRejectingCluster())
    s3 = local_s3.client()
    claimed = []
    for body in (b"handbook v1", b"handbook v2", b"handbook v1"):  # v2 withdrawn: v1 is current again
        s3.put_object(Bucket=dispatcher.config.poller.bucket, Key="incoming/handbook.parquet", Body=body)
        claimed.append(dispatcher.run_cycle().claimed)
        time.sleep(1.1)  # S3 keeps LastModified to the second

    assert claimed == [1, 1, 1], "v1's second upload is new work, not a duplicate of its first"
    config = dispatcher.config
    restarted = Dispatcher(
        config,
        BucketPoller(local_s3.client(), config.poller.bucket, "incoming/"),
        SqliteLedger(config.ledger.sqlite_path),
        FaultInjectionRejectingCluster(),
        SettableClock(),
    )
    report = restarted.run_cycle()
    assert (report.received, report.duplicates, report.claimed) == (1, 1, 0)


def test_a_deleted_file_is_claimed_once_for_a_rule_that_follows_deletions(local_s3, tmp_path):
    follows = {**fault_injection_rule(0), "name": "follows-deletions", "on_removed": True}
    dispatcher = dispatcher_on_bucket(local_s3, tmp_path, FaultInjectionRejectingCluster(), rules=[follows])
    s3 = local_s3.client()
    s3.put_object(Bucket=dispatcher.config.poller.bucket, Key="incoming/handbook.parquet", Body=b"handbook")
    assert dispatcher.run_cycle().claimed == 1
    s3.delete_object(Bucket=dispatcher.config.poller.bucket, Key="incoming/handbook.parquet")

    assert dispatcher.run_cycle().claimed == 1
    assert dispatcher.run_cycle().claimed == 0, "once"
    (deletion,) = [entry for entry in dispatcher.ledger.recent(10) if entry.removal]
    assert "@removed~" in deletion.object_version and deletion.rule == "follows-deletions"
    rows = status_table(dispatcher.ledger.recent(10)).splitlines()[1:]
    assert sorted(" deleted " in row for row in rows) == [False, True], "the status tells the deletion apart"


def test_an_event_the_ledger_refuses_is_received_again_and_the_others_are_claimed(local_s3, tmp_path):
    ledger = FaultInjectionRefusingLedger(tmp_path / "ledger.sqlite")
    dispatcher = dispatcher_on_bucket(local_s3, tmp_path, FaultInjectionRejectingCluster(), ledger=ledger)
    s3 = local_s3.client()
    for key in ("incoming/a.parquet", "incoming/poison.parquet", "incoming/z.parquet"):
        s3.put_object(Bucket=dispatcher.config.poller.bucket, Key=key, Body=b"x")

    report = dispatcher.run_cycle()

    assert (report.received, report.claimed, report.errors) == (3, 2, 1)
    assert sorted(entry.key for entry in ledger.recent(10)) == ["incoming/a.parquet", "incoming/z.parquet"]
    assert len(dispatcher.source.receive()[0].events) == 3, "not acknowledged: the refused event comes again"


def test_a_cycle_that_records_none_of_its_events_waits_before_the_next(local_s3, tmp_path):
    """An event that cannot be recorded comes again each cycle: the dispatcher waits cycle_interval_s between
    them, as when nothing arrives, rather than listing the bucket and asking the ledger without pause."""
    ledger = FaultInjectionRefusingLedger(tmp_path / "ledger.sqlite", stop_after=3)
    dispatcher = dispatcher_on_bucket(local_s3, tmp_path, FaultInjectionRejectingCluster(), ledger=ledger,
                                      cycle_interval_s=1)  # fmt: skip
    local_s3.client().put_object(Bucket=dispatcher.config.poller.bucket, Key="incoming/poison.parquet", Body=b"x")
    started = time.monotonic()
    with pytest.raises(SystemExit):
        dispatcher.run()
    assert time.monotonic() - started >= 1.8, "two waits of 1 s between the three cycles"


def test_log_tails_are_cut_to_fit_a_dynamodb_item(moto_client, tmp_path):
    ledger = DynamoLedger(moto_client("dynamodb"), f"ledger-{uuid.uuid4().hex[:8]}")
    ledger.create_table()
    ledger.claim(ledger_entry("bad.parquet", SUBMITTED))
    config = DispatchConfig.model_validate({"rules": [fault_injection_rule(1)]})
    dispatcher = Dispatcher(config, None, ledger, FaultInjectionUnreachableCluster(), SettableClock())
    huge_log = "\n".join(["ValueError: bad batch " + "x" * 20000] * 39 + ["Traceback end"])  # ~780 KB

    dispatcher.fail(ledger.get("data/bad.parquet@etag"), "job FAILED " + "é" * 50_000, huge_log)

    entry = ledger.get("data/bad.parquet@etag")
    assert entry.state == RETRY_WAIT and entry.log_tail.endswith("Traceback end")
    assert len(entry.log_tail.encode()) <= TEXT_LIMIT_BYTES and len(entry.last_error.encode()) <= TEXT_LIMIT_BYTES


def test_text_tail_keeps_the_end_whole_characters_and_a_mark():
    assert text_tail("short", 100) == "short"
    cut = text_tail("ab" + "é" * 100, 21)
    assert cut.startswith("[...]") and cut.endswith("é") and len(cut.encode()) <= 21


def test_a_stale_copy_of_an_entry_does_not_fail_a_newer_attempt(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first, second = (
        Dispatcher(DispatchConfig.model_validate({"dispatcher_id": name, "rules": [fault_injection_rule(1)]}), None,
                   SqliteLedger(path), FaultInjectionUnreachableCluster(), SettableClock())
        for name in ("first", "second")
    )  # fmt: skip
    first.ledger.claim(ledger_entry("a.parquet", SUBMITTED))
    stale_copy = first.ledger.get("data/a.parquet@etag")  # the first dispatcher's cycle starts from this
    second.fail(stale_copy, "job FAILED", "")  # meanwhile the second records the failure of attempt 1 ...
    second.retry(second.ledger.get("data/a.parquet@etag"))  # ... and starts attempt 2
    second.ledger.transition("data/a.parquet@etag", [CLAIMED], state=SUBMITTED)

    first.fail(stale_copy, "job FAILED", "")  # the first acts on its stale copy of attempt 1

    entry = first.ledger.get("data/a.parquet@etag")
    assert (entry.state, entry.attempt) == (SUBMITTED, 2)


def test_the_dead_letter_record_is_written_before_the_state_changes(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the dead-letter folder should be")
    config = DispatchConfig.model_validate({"retry": {"max_attempts": 1}, "dead_letter_output": str(blocker / "dead")})
    dispatcher = Dispatcher(config, None, SqliteLedger(tmp_path / "ledger.sqlite"), FaultInjectionUnreachableCluster(),
                            SettableClock())  # fmt: skip
    dispatcher.ledger.claim(ledger_entry("bad.parquet", SUBMITTED))
    entry = dispatcher.ledger.get("data/bad.parquet@etag")

    with pytest.raises(OSError):
        dispatcher.fail(entry, "job FAILED", "Traceback ...")
    assert dispatcher.ledger.get(entry.object_version).state == SUBMITTED, "no record yet: tried again next cycle"

    blocker.unlink()
    dispatcher.fail(entry, "job FAILED", "Traceback ...")
    assert dispatcher.ledger.get(entry.object_version).state == DEAD_LETTER
    (record,) = (blocker / "dead").iterdir()
    assert json.loads(record.read_text())["state"] == DEAD_LETTER


class FaultInjectionLostSubmitReply:
    """Real Ray jobs, except that the first submission's reply is lost after the cluster took the job."""

    def __init__(self, jobs):
        self.jobs, self.replies_lost = jobs, 0

    def submit(self, *arguments, **options) -> bool:
        accepted = self.jobs.submit(*arguments, **options)
        if self.replies_lost == 0:
            self.replies_lost += 1
            raise ConnectionError("fault injection: the reply to the submission was lost")
        return accepted

    def __getattr__(self, name: str):
        return getattr(self.jobs, name)


def unfinished_ray_jobs(ray_cluster, object_versions: list[str]) -> list:
    return [job for object_version in object_versions for job in ray_jobs_of(ray_cluster, object_version)
            if not job.status.is_terminal()]  # fmt: skip


@pytest.mark.slow
def test_running_jobs_are_limited_and_queued_claims_go_out_oldest_first(ray_cluster, local_s3, tmp_path):
    bucket = new_bucket(local_s3)
    rule = {**fault_injection_rule(0), "overrides": ["input={uri}", "exit_code=0", "sleep_s=2"]}
    dispatcher = build_dispatcher(poller_config(ray_cluster, tmp_path, bucket, [rule], max_running_jobs=1))
    for index in range(3):
        local_s3.client().put_object(Bucket=bucket, Key=f"incoming/{index}.parquet", Body=b"x")
    object_versions = [event.object_version for event in dispatcher.source.receive()[0].events]

    deadline = time.monotonic() + 300
    while any(getattr(dispatcher.ledger.get(version), "state", None) != SUCCEEDED for version in object_versions):
        dispatcher.run_cycle()
        assert len(dispatcher.ledger.in_state(SUBMITTED)) <= 1
        assert len(unfinished_ray_jobs(ray_cluster, object_versions)) <= 1
        assert time.monotonic() < deadline, dispatcher.ledger.recent(5)
        time.sleep(0.5)

    entries = [dispatcher.ledger.get(version) for version in object_versions]
    by_claim = sorted(entries, key=lambda entry: entry.created_at)
    assert by_claim == sorted(entries, key=lambda entry: entry.submitted_at), "submitted in the order claimed"


@pytest.mark.slow
def test_a_job_past_its_timeout_is_stopped_and_fails(ray_cluster, local_s3, tmp_path):
    bucket = new_bucket(local_s3)
    local_s3.client().put_object(Bucket=bucket, Key="incoming/slow.parquet", Body=b"x")
    rule = {**fault_injection_rule(0), "overrides": ["input={uri}", "exit_code=0", "sleep_s=600"], "timeout_s": 5}
    dispatcher = build_dispatcher(poller_config(ray_cluster, tmp_path, bucket, [rule], retry={"max_attempts": 1}))
    object_version = dispatcher.source.receive()[0].events[0].object_version

    entry = run_until(dispatcher, object_version, {SUCCEEDED, DEAD_LETTER}, timeout_s=180)

    assert entry.state == DEAD_LETTER and "timed out after 5 s" in entry.last_error
    deadline = time.monotonic() + 60
    while (job := ray_jobs_of(ray_cluster, object_version)[0]).status.value != "STOPPED":
        assert time.monotonic() < deadline, job.status
        time.sleep(1)


@pytest.mark.slow
def test_a_submission_whose_reply_was_lost_is_adopted_not_doubled(ray_cluster, local_s3, tmp_path):
    bucket = new_bucket(local_s3)
    local_s3.client().put_object(Bucket=bucket, Key="incoming/lost.parquet", Body=b"x")
    dispatcher = build_dispatcher(poller_config(ray_cluster, tmp_path, bucket, [fault_injection_rule(0)],
                                                retry={"backoff_s": 0.5}))  # fmt: skip
    dispatcher.jobs = FaultInjectionLostSubmitReply(dispatcher.jobs)
    object_version = dispatcher.source.receive()[0].events[0].object_version

    entry = run_until(dispatcher, object_version, {SUCCEEDED, DEAD_LETTER}, timeout_s=180)

    assert entry.state == SUCCEEDED and entry.attempt == 1
    assert [job.submission_id for job in ray_jobs_of(ray_cluster, object_version)] == [submission_id(object_version, 1)]


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

    crashed = subprocess.run(
        command + ["fault_injection.crash_after_claim=true"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert crashed.returncode == 17, crashed.stderr[-3000:]
    ledger = SqliteLedger(config.ledger.sqlite_path)
    (claimed,) = ledger.open_entries()
    assert claimed.state == CLAIMED and not ray_jobs_of(ray_cluster, claimed.object_version)

    restarted = subprocess.run(
        command + ["exit_when_idle=true", "stale_claim_s=0"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert ledger.get(claimed.object_version).state == SUCCEEDED
    assert [job.submission_id for job in ray_jobs_of(ray_cluster, claimed.object_version)] == [claimed.submission_id]


@pytest.mark.slow
def test_killed_between_submit_and_record_adopts_the_job(ray_cluster, local_s3, tmp_path):
    bucket = new_bucket(local_s3)
    local_s3.client().put_object(Bucket=bucket, Key="incoming/b.parquet", Body=b"x")
    dispatcher = build_dispatcher(
        poller_config(ray_cluster, tmp_path, bucket, [fault_injection_rule(0)], stale_claim_s=0)
    )
    (delivery,) = dispatcher.source.receive()
    event = delivery.events[0]
    rule = Rule.model_validate(fault_injection_rule(0))

    # What a dispatcher that died right after submitting leaves: a claim, and the job running in Ray.
    first_id = submission_id(event.object_version, 1)
    dispatcher.ledger.claim(LedgerEntry(event.object_version, bucket, event.key, event.version, event.size, rule.name,
                                        entrypoint(rule, event), submission_id=first_id))  # fmt: skip
    assert dispatcher.jobs.submit(first_id, entrypoint(rule, event), {}) is True
    assert dispatcher.jobs.submit(first_id, entrypoint(rule, event), {}) is False, (
        "Ray refuses a second job with the id"
    )

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


def test_a_dispatcher_starts_before_its_cluster_and_counts_the_refused_connection_as_a_failed_submission():
    jobs = RayJobs("http://127.0.0.1:9", {})  # nothing listens there
    with pytest.raises(ConnectionError, match="Failed to connect to Ray"):
        jobs.submit("rayfleet-x-a1", "python -m jobs.fault_injection", {})


def test_the_status_table_keeps_its_columns_under_wide_characters():
    rows = status_table(
        [ledger_entry("incoming/報告書 2026.parquet"), ledger_entry("incoming/a.parquet")]
    ).splitlines()[1:]
    starts = [display_width(row[: row.index(" etag")]) for row in rows]
    assert starts[0] == starts[1], rows
