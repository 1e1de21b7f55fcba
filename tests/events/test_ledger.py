"""The ledger's guarantees, on both implementations: SQLite, and DynamoDB (moto server).

One claim per object version, however many callers race for it; transitions only
from the expected state; open entries and recent history read back.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from events.ledger import CLAIMED, DEAD_LETTER, RETRY_WAIT, SUBMITTED, SUCCEEDED, DynamoLedger, LedgerEntry, SqliteLedger


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        return SqliteLedger(tmp_path / "ledger.sqlite")
    dynamo = DynamoLedger(request.getfixturevalue("moto_client")("dynamodb"), f"ledger-{uuid.uuid4().hex[:8]}")
    dynamo.create_table()
    return dynamo


def entry(key: str, updated_at: float = 1.0) -> LedgerEntry:
    return LedgerEntry(
        object_version=f"data/{key}@etag", bucket="data", key=key, version="etag", size=10, rule="r",
        entrypoint="python -m jobs.summarize input=s3://data/" + key, submission_id="sub-a1",
        owner="test", created_at=updated_at, updated_at=updated_at,
    )  # fmt: skip


def test_one_claim_per_object_version(ledger):
    assert ledger.claim(entry("a.parquet"))
    assert not ledger.claim(entry("a.parquet"))
    assert ledger.get("data/a.parquet@etag") == entry("a.parquet")
    assert ledger.get("data/missing@etag") is None


def test_racing_claims_have_one_winner(ledger):
    with ThreadPoolExecutor(max_workers=8) as pool:
        wins = list(pool.map(lambda _: ledger.claim(entry("raced.parquet")), range(16)))
    assert wins.count(True) == 1


def test_transitions_only_from_the_expected_state(ledger):
    ledger.claim(entry("a.parquet"))
    assert ledger.transition("data/a.parquet@etag", [CLAIMED], state=SUBMITTED, updated_at=2.0)
    assert not ledger.transition("data/a.parquet@etag", [CLAIMED], state=SUBMITTED), "already moved on"
    assert ledger.transition("data/a.parquet@etag", [SUBMITTED], state=RETRY_WAIT, next_attempt_at=9.5, last_error="job FAILED")
    assert ledger.transition("data/a.parquet@etag", [RETRY_WAIT], state=CLAIMED, attempt=2, submission_id="sub-a2")
    found = ledger.get("data/a.parquet@etag")
    assert (found.state, found.attempt, found.submission_id, found.next_attempt_at, found.last_error) == (
        CLAIMED, 2, "sub-a2", 9.5, "job FAILED",
    )  # fmt: skip
    assert not ledger.transition("data/missing@etag", [CLAIMED], state=SUBMITTED)


def test_open_entries_and_recent_history(ledger):
    for index, key in enumerate(["a", "b", "c", "d"]):
        ledger.claim(entry(key, updated_at=float(index)))
    ledger.transition("data/b@etag", [CLAIMED], state=SUCCEEDED, updated_at=10.0)
    ledger.transition("data/c@etag", [CLAIMED], state=DEAD_LETTER, updated_at=11.0, log_tail="Traceback ...\nboom")
    assert [found.key for found in ledger.open_entries()] == ["a", "d"]
    assert [found.key for found in ledger.recent(3)] == ["c", "b", "d"]
    assert ledger.get("data/c@etag").log_tail.endswith("boom")
