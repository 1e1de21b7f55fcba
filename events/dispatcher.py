"""The dispatcher: object events in, exactly one Ray job per object version out.

One cycle (:meth:`Dispatcher.run_cycle`) does, in order:

1. **Open entries first.** A claim older than ``stale_claim_s`` with no recorded
   submission (its dispatcher died between claim and submit, or between submit and
   record) is submitted again under the same deterministic submission id, which Ray
   refuses to run twice. Submitted jobs are followed to their end: success is recorded;
   a failure waits ``backoff`` and is retried as a new attempt, until ``max_attempts``,
   then the entry becomes a dead letter with the job's last log lines.
2. **New events.** Each event is matched to a rule, *claimed* in the ledger (a
   conditional write: a second delivery of the same object version claims nothing),
   submitted, recorded as submitted, and only then acknowledged to its source.

Run it with ``python -m events run`` (``make dispatch``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import boto3

from events.config import DispatchConfig
from events.ledger import CLAIMED, DEAD_LETTER, RETRY_WAIT, SUBMITTED, SUCCEEDED, DynamoLedger, Ledger, LedgerEntry, SqliteLedger
from events.ray_jobs import FINISHED_FAILED, FINISHED_OK, RayJobs, runtime_environment, submission_id
from events.rules import ObjectEvent, entrypoint, first_match
from events.sources import BucketPoller, EventSource, SqsSource
from rayfleet import storage

logger = logging.getLogger("events.dispatcher")

FAULT_INJECTION_EXIT_CODE = 17


@dataclass
class CycleReport:
    """What one cycle did."""

    received: int = 0
    claimed: int = 0
    duplicates: int = 0
    unmatched: int = 0
    open: int = 0


def backoff_s(attempt: int, config: DispatchConfig) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    retry = config.retry
    return min(retry.backoff_s * retry.backoff_factor ** (attempt - 1), retry.max_backoff_s)


class Dispatcher:
    """Turns events from ``source`` into jobs on ``jobs``, recording every step in ``ledger``."""

    def __init__(self, config: DispatchConfig, source: EventSource, ledger: Ledger, jobs: RayJobs, clock=time.time):
        self.config, self.source, self.ledger, self.jobs, self.clock = config, source, ledger, jobs, clock

    def run(self) -> None:
        """Run cycles until stopped (or, with ``exit_when_idle``, until there is nothing to do)."""
        logger.info("dispatcher %s running with %d rule(s)", self.config.dispatcher_id, len(self.config.rules))
        while True:
            try:
                report = self.run_cycle()
            except Exception:
                logger.exception("cycle failed; retrying after %.0f s", self.config.cycle_interval_s)
                report = CycleReport(open=1)
            if self.config.exit_when_idle and report.received == 0 and report.open == 0:
                return
            if report.received == 0:
                time.sleep(self.config.cycle_interval_s)

    def run_cycle(self) -> CycleReport:
        """One pass over the open entries, then over the events the source has now."""
        report = CycleReport()
        for entry in self.ledger.open_entries():
            self.advance(entry)
        for delivery in self.source.receive():
            for event in delivery.events:
                outcome = self.handle(event)
                report.received += 1
                setattr(report, outcome, getattr(report, outcome) + 1)
            self.source.acknowledge(delivery)
        report.open = len(self.ledger.open_entries())
        return report

    def handle(self, event: ObjectEvent) -> str:
        """Claim and submit one event; returns ``claimed``, ``duplicates`` or ``unmatched``."""
        rule = first_match(self.config.rules, event)
        if rule is None:
            logger.info("no rule for %s (%d bytes): skipped", event.uri, event.size)
            return "unmatched"
        now = self.clock()
        entry = LedgerEntry(
            object_version=event.object_version, bucket=event.bucket, key=event.key, version=event.version,
            size=event.size, rule=rule.name, entrypoint=entrypoint(rule, event),
            submission_id=submission_id(event.object_version, 1), owner=self.config.dispatcher_id,
            created_at=now, updated_at=now,
        )  # fmt: skip
        if not self.ledger.claim(entry):
            logger.info("%s already in the ledger: not submitted again", event.object_version)
            return "duplicates"
        logger.info("claimed %s for rule %s", event.object_version, rule.name)
        if self.config.fault_injection.crash_after_claim:
            logger.error("fault injection: exiting between claim and submit")
            os._exit(FAULT_INJECTION_EXIT_CODE)
        self.submit(entry)
        return "claimed"

    def advance(self, entry: LedgerEntry) -> None:
        """Move one open entry on: reconcile a stale claim, follow a job, or start a due retry."""
        now = self.clock()
        if entry.state == CLAIMED and now - entry.updated_at >= self.config.stale_claim_s:
            logger.info("reconciling claim of %s (attempt %d)", entry.object_version, entry.attempt)
            self.submit(entry)
        elif entry.state == SUBMITTED:
            self.follow(entry)
        elif entry.state == RETRY_WAIT and now >= entry.next_attempt_at:
            self.retry(entry)

    def submit(self, entry: LedgerEntry) -> None:
        """Submit a claimed entry's job and record it; a failure to submit leaves the claim for reconciling."""
        metadata = {"rayfleet_object": f"s3://{entry.bucket}/{entry.key}", "rayfleet_version": entry.version,
                    "rayfleet_rule": entry.rule, "rayfleet_attempt": str(entry.attempt)}  # fmt: skip
        rule = next((rule for rule in self.config.rules if rule.name == entry.rule), None)
        resources = {"num_cpus": rule.entrypoint_num_cpus, "num_gpus": rule.entrypoint_num_gpus} if rule else {}
        try:
            self.jobs.submit(entry.submission_id, entry.entrypoint, metadata, **resources)
        except Exception as error:
            logger.exception("could not submit %s; the claim stays and is reconciled later", entry.submission_id)
            self.ledger.transition(entry.object_version, [CLAIMED], last_error=f"submit failed: {error}")
            return
        self.ledger.transition(entry.object_version, [CLAIMED], state=SUBMITTED, updated_at=self.clock())
        logger.info("submitted %s: %s", entry.submission_id, entry.entrypoint)

    def follow(self, entry: LedgerEntry) -> None:
        """Record a submitted job's end, if it has ended."""
        status = self.jobs.status(entry.submission_id)
        if status in FINISHED_OK:
            self.ledger.transition(entry.object_version, [SUBMITTED], state=SUCCEEDED, updated_at=self.clock())
            logger.info("job %s succeeded for %s", entry.submission_id, entry.object_version)
        elif status is None:
            self.fail(entry, "the cluster has no such job (was it restarted?)", "")
        elif status in FINISHED_FAILED:
            self.fail(entry, f"job {status.value}", self.jobs.log_tail(entry.submission_id, self.config.retry.log_lines))

    def fail(self, entry: LedgerEntry, error: str, log_tail: str) -> None:
        """Schedule a retry of a failed attempt, or dead-letter the entry when no attempt is left."""
        now = self.clock()
        if entry.attempt < self.config.retry.max_attempts:
            wait = backoff_s(entry.attempt, self.config)
            changed = self.ledger.transition(
                entry.object_version, [SUBMITTED], state=RETRY_WAIT, next_attempt_at=now + wait, updated_at=now,
                last_error=error, log_tail=log_tail,
            )  # fmt: skip
            if changed:
                logger.warning("attempt %d of %s failed (%s); retry in %.0f s", entry.attempt, entry.object_version, error, wait)
            return
        if self.ledger.transition(
            entry.object_version, [SUBMITTED], state=DEAD_LETTER, updated_at=now, last_error=error, log_tail=log_tail
        ):
            logger.error("%s is a dead letter after %d attempt(s): %s", entry.object_version, entry.attempt, error)
            self.write_dead_letter(self.ledger.get(entry.object_version))

    def retry(self, entry: LedgerEntry) -> None:
        """Start the next attempt of an entry whose backoff has passed."""
        attempt = entry.attempt + 1
        next_id = submission_id(entry.object_version, attempt)
        if self.ledger.transition(
            entry.object_version, [RETRY_WAIT], state=CLAIMED, attempt=attempt, submission_id=next_id,
            owner=self.config.dispatcher_id, updated_at=self.clock(),
        ):  # fmt: skip
            self.submit(self.ledger.get(entry.object_version))

    def write_dead_letter(self, entry: LedgerEntry) -> None:
        """Write the dead letter's JSON record under ``dead_letter_output``, when configured."""
        if self.config.dead_letter_output is None:
            return
        name = entry.submission_id.rsplit("-a", 1)[0] + ".json"
        storage.write_bytes(storage.join(self.config.dead_letter_output, name), json.dumps(asdict(entry), indent=2).encode())


def aws_client(service: str, endpoint_url: str | None):
    """A boto3 client; None leaves the endpoint to the standard AWS environment variables.

    The region comes from ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default ``us-east-1``), as
    in :mod:`rayfleet.storage`; boto3 alone reads only the second.
    """
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options = {"endpoint_url": endpoint_url} if endpoint_url else {}
    return boto3.client(service, region_name=region, **options)


def build_source(config: DispatchConfig) -> EventSource:
    """The configured event source."""
    if config.source == "sqs":
        if not config.sqs.queue_url:
            raise ValueError("source=sqs needs sqs.queue_url")
        sqs = config.sqs
        return SqsSource(aws_client("sqs", sqs.endpoint_url), sqs.queue_url, sqs.wait_time_s, sqs.max_messages,
                         sqs.visibility_timeout_s)  # fmt: skip
    return BucketPoller(aws_client("s3", config.poller.endpoint_url), config.poller.bucket, config.poller.prefix)


def build_ledger(config: DispatchConfig) -> Ledger:
    """The configured ledger."""
    if config.ledger.kind == "dynamodb":
        ledger = DynamoLedger(aws_client("dynamodb", config.ledger.endpoint_url), config.ledger.dynamodb_table)
        if config.ledger.create_table:
            ledger.create_table()
        return ledger
    return SqliteLedger(config.ledger.sqlite_path)


def build_dispatcher(config: DispatchConfig) -> Dispatcher:
    """A dispatcher wired to the configured source, ledger and Ray cluster."""
    ray = config.ray
    jobs = RayJobs(ray.address, runtime_environment(ray.working_dir, ray.excludes, ray.env_vars))
    return Dispatcher(config, build_source(config), build_ledger(config), jobs)
