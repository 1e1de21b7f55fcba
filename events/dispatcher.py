"""The dispatcher: object events in, exactly one Ray job per object version out.

One cycle (:meth:`Dispatcher.run_cycle`) does, in order:

1. **Open entries.** Submitted jobs are followed to their end: success is recorded; a
   failure, or a job still unfinished ``timeout_s`` after its submission (stopped with
   ``ray job stop``), waits ``backoff`` and is retried as a new attempt, until
   ``max_attempts``, then the entry becomes a dead letter with the job's last log lines
   (its JSON record is written first, so it is never lost).
2. **New events.** Each event is matched to a rule and *claimed* in the ledger (a
   conditional write: a second delivery of the same object version claims nothing); a
   delivery is acknowledged to its source once all its events are recorded.
3. **The queue.** Claims are submitted oldest first while fewer than ``max_running_jobs``
   jobs (overall, and per rule) are submitted and unfinished; the rest wait for running
   jobs to end. A dispatcher submits its own claims, released ones (requeued dead
   letters) and claims older than ``stale_claim_s`` (their dispatcher died between claim
   and submit, or between submit and record), under the deterministic submission id that
   Ray refuses to run twice. A submission the cluster refuses counts as a failed attempt.

Every entry and every event is handled on its own: one that fails (a status call
answered 500, a ledger write refused) is logged and tried again next cycle, and the
others, and the new events, go on.

Run it with ``python -m events run`` (``make dispatch``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace

import boto3

from events.config import DispatchConfig
from events.ledger import (
    CLAIMED, DEAD_LETTER, RETRY_WAIT, SUBMITTED, SUCCEEDED, DynamoLedger, Ledger, LedgerEntry, SqliteLedger,
)  # fmt: skip
from events.ray_jobs import FINISHED_FAILED, FINISHED_OK, RayJobs, runtime_environment, submission_id
from events.rules import ObjectEvent, Rule, entrypoint, first_match, sized_out
from events.sources import BucketPoller, EventSource, SqsSource
from rayfleet import storage

logger = logging.getLogger("events.dispatcher")

FAULT_INJECTION_EXIT_CODE = 17
TEXT_LIMIT_BYTES = 16 * 1024  # of last_error and log_tail each: a DynamoDB item holds 400 KB in all
SUBMIT_FAILED = "submit failed: "


@dataclass
class CycleReport:
    """What one cycle did."""

    received: int = 0
    claimed: int = 0
    duplicates: int = 0
    unmatched: int = 0
    errors: int = 0
    submitted: int = 0
    open: int = 0


def backoff_s(attempt: int, config: DispatchConfig) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    retry = config.retry
    return min(retry.backoff_s * retry.backoff_factor ** (attempt - 1), retry.max_backoff_s)


def text_tail(text: str, limit_bytes: int = TEXT_LIMIT_BYTES) -> str:
    """The end of ``text`` in at most ``limit_bytes`` UTF-8 bytes, marked ``[...]`` where it was cut."""
    encoded = text.encode()
    if len(encoded) <= limit_bytes:
        return text
    marker = "[...]"
    return marker + encoded[len(encoded) - limit_bytes + len(marker) :].decode(errors="ignore")


def may_submit(entry: LedgerEntry, config: DispatchConfig, now: float) -> bool:
    """Whether this dispatcher may submit a claim: its own, a released one (requeued), or a stale one."""
    return entry.owner in (config.dispatcher_id, "") or now - entry.updated_at >= config.stale_claim_s


def claims_to_submit(entries: list[LedgerEntry], config: DispatchConfig, now: float) -> list[LedgerEntry]:
    """The claims among the open ``entries`` to submit now: oldest first, within the running-job limits.

    Submitted entries count as running (in the shared ledger, so across dispatchers); the
    overall ``max_running_jobs`` stops the queue, a rule's own limit only skips that rule.
    """
    rule_limits = {rule.name: rule.max_running_jobs for rule in config.rules}
    running = Counter(entry.rule for entry in entries if entry.state == SUBMITTED)
    total_running = sum(running.values())
    chosen = []
    for entry in sorted(entries, key=lambda entry: entry.created_at):
        if entry.state != CLAIMED or not may_submit(entry, config, now):
            continue
        if config.max_running_jobs is not None and total_running >= config.max_running_jobs:
            break
        rule_limit = rule_limits.get(entry.rule)
        if rule_limit is not None and running[entry.rule] >= rule_limit:
            continue
        chosen.append(entry)
        running[entry.rule] += 1
        total_running += 1
    return chosen


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
                report = CycleReport(errors=1)
            if self.config.exit_when_idle and report.received == report.open == report.errors == 0:
                logger.info("nothing received and no job open: exiting (exit_when_idle)")
                return
            if report.claimed + report.duplicates + report.unmatched == 0:  # nothing received, or none recorded
                time.sleep(self.config.cycle_interval_s)

    def run_cycle(self) -> CycleReport:
        """One pass over the open entries, then over the events the source has now, then over the queue."""
        report = CycleReport()
        self.advance_open_entries(report)
        self.receive_events(report)
        self.submit_queued(report)
        return report

    def advance_open_entries(self, report: CycleReport) -> None:
        """Follow submitted jobs and start due retries, each entry on its own."""
        entries = self.read_open_entries(report, "receiving new events all the same")
        for entry in entries or []:
            try:
                self.advance(entry)
            except Exception as error:
                logger.warning("could not advance %s (%s); tried again next cycle", entry.object_version, error)
                report.errors += 1

    def read_open_entries(self, report: CycleReport, meanwhile: str) -> list[LedgerEntry] | None:
        """The ledger's open entries, read afresh; None (logged and counted) when the ledger cannot be read."""
        try:
            return self.ledger.open_entries()
        except Exception as error:
            logger.error("could not read the open entries (%s); %s", error, meanwhile)
            report.errors += 1
            return None

    def receive_events(self, report: CycleReport) -> None:
        """Claim every event received; acknowledge a delivery once all its events are recorded."""
        try:
            deliveries = self.source.receive()
        except Exception as error:
            logger.error("could not receive events (%s); tried again next cycle", error)
            report.errors += 1
            return
        for delivery in deliveries:
            recorded = True
            for event in delivery.events:
                report.received += 1
                try:
                    outcome = self.handle(event)
                except Exception as error:
                    logger.warning("could not record %s (%s); its delivery comes again", event.object_version, error)
                    outcome, recorded = "errors", False
                setattr(report, outcome, getattr(report, outcome) + 1)
            if recorded:
                self.acknowledge(delivery, report)

    def acknowledge(self, delivery, report: CycleReport) -> None:
        """Acknowledge one delivery; a failure only means it comes again (its events are duplicates then)."""
        try:
            self.source.acknowledge(delivery)
        except Exception as error:
            logger.warning("could not acknowledge a delivery (%s); it comes again", error)
            report.errors += 1

    def submit_queued(self, report: CycleReport) -> None:
        """Submit the claims that fit under the running-job limits, oldest first."""
        entries = self.read_open_entries(report, "the queue waits for the next cycle")
        if entries is None:
            return
        for entry in claims_to_submit(entries, self.config, self.clock()):
            try:
                report.submitted += self.submit(entry)
            except Exception as error:
                logger.warning("could not submit %s (%s); tried again next cycle", entry.object_version, error)
                report.errors += 1
        report.open = len(entries)

    def handle(self, event: ObjectEvent) -> str:
        """Claim one event (it is submitted from the queue); returns ``claimed``, ``duplicates`` or ``unmatched``."""
        rule = first_match(self.config.rules, event)
        if rule is None:
            sized = sized_out(self.config.rules, event)
            if sized is None:
                logger.info("no rule for %s (%d bytes): skipped", event.uri, event.size)
            else:
                logger.warning("%s is %d bytes, outside rule %s's sizes (min_size %d, max_size %s): no job runs; what "
                               "was made of an earlier version of it stays", event.uri, event.size, sized.name,
                               sized.min_size, sized.max_size)  # fmt: skip
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
        return "claimed"

    def advance(self, entry: LedgerEntry) -> None:
        """Move one open entry on: follow its job, or start its next attempt once the backoff has passed."""
        if entry.state == SUBMITTED:
            self.follow(entry)
        elif entry.state == RETRY_WAIT and self.clock() >= entry.next_attempt_at:
            self.retry(entry)

    def rule_named(self, name: str) -> Rule | None:
        """The configured rule of that name (None once a rule is renamed or removed)."""
        return next((rule for rule in self.config.rules if rule.name == name), None)

    def submit(self, entry: LedgerEntry) -> bool:
        """Submit a claimed entry's job and record it; True if recorded as submitted.

        A submission the cluster refuses (HTTP 400, an unreadable working dir...) is a failed
        attempt: retried after the backoff, a dead letter once no attempt is left.
        """
        if entry.owner not in (self.config.dispatcher_id, ""):
            logger.info("reconciling the stale claim of %s (attempt %d) by %s", entry.object_version, entry.attempt,
                        entry.owner)  # fmt: skip
        metadata = {"rayfleet_object": f"s3://{entry.bucket}/{entry.key}", "rayfleet_version": entry.version,
                    "rayfleet_rule": entry.rule, "rayfleet_attempt": str(entry.attempt)}  # fmt: skip
        rule = self.rule_named(entry.rule)
        resources = {"num_cpus": rule.entrypoint_num_cpus, "num_gpus": rule.entrypoint_num_gpus} if rule else {}
        try:
            self.jobs.submit(entry.submission_id, entry.entrypoint, metadata, **resources)
        except Exception as error:
            logger.warning("could not submit %s: %s", entry.submission_id, error)
            self.fail(entry, f"{SUBMIT_FAILED}{error}", "")
            return False
        now = self.clock()
        recorded = self.ledger.transition(
            entry.object_version, [CLAIMED], entry.submission_id, state=SUBMITTED, updated_at=now, submitted_at=now
        )
        logger.info("submitted %s: %s", entry.submission_id, entry.entrypoint)
        return recorded

    def follow(self, entry: LedgerEntry) -> None:
        """Record a submitted job's end, if it has ended; stop it if it has run past its rule's timeout."""
        status = self.jobs.status(entry.submission_id)
        if status in FINISHED_OK:
            self.ledger.transition(
                entry.object_version, [SUBMITTED], entry.submission_id, state=SUCCEEDED, updated_at=self.clock()
            )
            logger.info("job %s succeeded for %s", entry.submission_id, entry.object_version)
        elif status is None:
            self.fail(entry, "the cluster has no such job (was it restarted?)", "")
        elif status in FINISHED_FAILED:
            log_tail = self.jobs.log_tail(entry.submission_id, self.config.retry.log_lines)
            self.fail(entry, f"job {status.value}", log_tail)
        elif self.timed_out(entry):
            timeout_s = self.rule_named(entry.rule).timeout_s
            self.jobs.stop(entry.submission_id)
            logger.warning("job %s ran past its timeout of %.0f s: stopped", entry.submission_id, timeout_s)
            log_tail = self.jobs.log_tail(entry.submission_id, self.config.retry.log_lines)
            self.fail(entry, f"timed out after {timeout_s:.0f} s (rule {entry.rule}): stopped", log_tail)

    def timed_out(self, entry: LedgerEntry) -> bool:
        """True when a submitted entry's job has been unfinished for longer than its rule's ``timeout_s``."""
        rule = self.rule_named(entry.rule)
        if rule is None or rule.timeout_s is None:
            return False
        submitted_at = entry.submitted_at or entry.updated_at  # entries submitted before submitted_at was recorded
        return self.clock() - submitted_at >= rule.timeout_s

    def fail(self, entry: LedgerEntry, error: str, log_tail: str) -> None:
        """Schedule a retry of a failed attempt, or dead-letter the entry when no attempt is left.

        Conditioned on the entry's state and attempt (its submission id): a stale copy changes nothing.
        The dead letter's record is written before the state changes; if it cannot be, the entry
        stays as it was and the next cycle tries again.
        """
        now = self.clock()
        error, log_tail = text_tail(error), text_tail(log_tail)
        if entry.attempt < self.config.retry.max_attempts:
            wait = backoff_s(entry.attempt, self.config)
            changed = self.ledger.transition(
                entry.object_version, [entry.state], entry.submission_id, state=RETRY_WAIT, next_attempt_at=now + wait,
                updated_at=now, last_error=error, log_tail=log_tail,
            )  # fmt: skip
            if changed:
                logger.warning("attempt %d of %s failed (%s); retry in %.0f s", entry.attempt, entry.object_version,
                               error, wait)  # fmt: skip
            return
        dead_letter = replace(entry, state=DEAD_LETTER, updated_at=now, last_error=error, log_tail=log_tail)
        self.write_dead_letter(dead_letter)
        if self.ledger.transition(
            entry.object_version, [entry.state], entry.submission_id, state=DEAD_LETTER, updated_at=now,
            last_error=error, log_tail=log_tail,
        ):  # fmt: skip
            logger.error("%s is a dead letter after %d attempt(s): %s", entry.object_version, entry.attempt, error)

    def retry(self, entry: LedgerEntry) -> None:
        """Queue the next attempt of an entry whose backoff has passed."""
        now = self.clock()
        if entry.last_error.startswith(SUBMIT_FAILED) and self.jobs.status(entry.submission_id) is not None:
            # The submission that failed reached the cluster after all: follow that job, start no second one.
            adopted = self.ledger.transition(
                entry.object_version, [RETRY_WAIT], entry.submission_id, state=SUBMITTED, updated_at=now,
                submitted_at=now,
            )  # fmt: skip
            if adopted:
                logger.info("adopted job %s, whose submission had seemed to fail", entry.submission_id)
            return
        attempt = entry.attempt + 1
        self.ledger.transition(
            entry.object_version, [RETRY_WAIT], entry.submission_id, state=CLAIMED, attempt=attempt,
            submission_id=submission_id(entry.object_version, attempt, entry.requeues),
            owner=self.config.dispatcher_id, updated_at=now,
        )  # fmt: skip

    def write_dead_letter(self, entry: LedgerEntry) -> None:
        """Write the dead letter's JSON record under ``dead_letter_output``, when configured."""
        if self.config.dead_letter_output is None:
            return
        name = entry.submission_id.rsplit("-a", 1)[0] + ".json"
        storage.write_bytes(
            storage.join(self.config.dead_letter_output, name), json.dumps(asdict(entry), indent=2).encode()
        )


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
