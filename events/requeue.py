"""Reprocess dead letters: ``python -m events requeue`` (``make dispatch-requeue``).

::

    python -m events requeue [config=FILE] s3://bucket/key ...            # that object's dead-lettered versions
    python -m events requeue [config=FILE] s3://bucket/key@version ...    # that version (id or ETag)
    python -m events requeue [config=FILE] s3://bucket/key@ETag~upload    # one entry, as requeue reports name it
    python -m events requeue [config=FILE] --state dead_letter             # every dead letter

A requeued entry goes back to ``claimed`` for a fresh round of ``retry.max_attempts``
attempts, with its rule and entrypoint rebuilt from the *current* rules (fix the rule or
the job, then requeue), and with no owner, so the next cycle of any running dispatcher
submits it. Its attempts get new Ray submission ids (Ray keeps the old, failed jobs under
theirs); its dead-letter record stays where it was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from events.config import DispatchConfig
from events.ledger import CLAIMED, DEAD_LETTER, Ledger, LedgerEntry
from events.ray_jobs import submission_id
from events.rules import ObjectEvent, entrypoint, first_match


@dataclass
class RequeueReport:
    """What a requeue did: object versions requeued, left alone (no rule matches them now) and targets unmatched."""

    requeued: list[str] = field(default_factory=list)
    without_rule: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)


def is_target(entry: LedgerEntry, target: str) -> bool:
    """True when ``target`` names the entry's object (``s3://bucket/key``), its version (``...@version``: the
    version id or ETag, which the same bytes uploaded again, and their deletion, share) or its exact object
    version (``s3://`` and the ledger's key, as requeue reports print it)."""
    uri = f"s3://{entry.bucket}/{entry.key}"
    return target in (uri, f"{uri}@{entry.version}", f"s3://{entry.object_version}")


def requeue_entry(ledger: Ledger, config: DispatchConfig, entry: LedgerEntry, now: float) -> bool | None:
    """Reset one dead letter for its next attempt; None if no rule matches it now, False if it moved meanwhile."""
    event = ObjectEvent(entry.bucket, entry.key, entry.size, etag=entry.version, removed=entry.removal)
    rule = first_match(config.rules, event)
    if rule is None:
        return None
    requeues = entry.requeues + 1
    return ledger.transition(
        entry.object_version, [DEAD_LETTER], entry.submission_id, state=CLAIMED, attempt=1, requeues=requeues,
        submission_id=submission_id(entry.object_version, 1, requeues), rule=rule.name,
        entrypoint=entrypoint(rule, event), owner="", updated_at=now, next_attempt_at=0.0,
        last_error=f"requeued; before: {entry.last_error}"[:1000], log_tail="",
    )  # fmt: skip


def requeue_dead_letters(ledger: Ledger, config: DispatchConfig, targets: list[str], now: float) -> RequeueReport:
    """Requeue the dead letters named by ``targets`` (every dead letter when ``targets`` is empty)."""
    report = RequeueReport()
    dead_letters = ledger.in_state(DEAD_LETTER)
    chosen = [entry for entry in dead_letters if not targets or any(is_target(entry, target) for target in targets)]
    report.not_found = [target for target in targets if not any(is_target(entry, target) for entry in dead_letters)]
    for entry in chosen:
        outcome = requeue_entry(ledger, config, entry, now)
        if outcome is None:
            report.without_rule.append(entry.object_version)
        elif outcome:
            report.requeued.append(entry.object_version)
    return report
