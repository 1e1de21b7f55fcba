"""The ledger's guarantees, on both implementations: SQLite, and DynamoDB (moto server).

One claim per object version, however many callers race for it; transitions only
from the expected state and attempt; open entries, entries by state and recent history
read back; a ledger written before a field existed still reads.
"""

from __future__ import annotations

import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

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
    assert ledger.transition(
        "data/a.parquet@etag", [SUBMITTED], state=RETRY_WAIT, next_attempt_at=9.5, last_error="job FAILED"
    )
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


def test_a_transition_from_a_stale_attempt_changes_nothing(ledger):
    ledger.claim(entry("a.parquet"))
    ledger.transition("data/a.parquet@etag", [CLAIMED], "sub-a1", state=SUBMITTED)
    ledger.transition("data/a.parquet@etag", [SUBMITTED], "sub-a1", state=RETRY_WAIT)
    ledger.transition("data/a.parquet@etag", [RETRY_WAIT], "sub-a1", state=CLAIMED, attempt=2, submission_id="sub-a2")
    ledger.transition("data/a.parquet@etag", [CLAIMED], "sub-a2", state=SUBMITTED)
    assert not ledger.transition("data/a.parquet@etag", [SUBMITTED], "sub-a1", state=DEAD_LETTER), "attempt 1 is over"
    assert ledger.transition("data/a.parquet@etag", [SUBMITTED], "sub-a2", state=SUCCEEDED)
    assert ledger.get("data/a.parquet@etag").state == SUCCEEDED


def test_entries_in_one_state_oldest_first(ledger):
    for index, key in enumerate(["a", "b", "c"]):
        ledger.claim(entry(key, updated_at=float(10 - index)))
    ledger.transition("data/b@etag", [CLAIMED], state=DEAD_LETTER)
    assert [found.key for found in ledger.in_state(CLAIMED)] == ["c", "a"]
    assert [found.key for found in ledger.in_state(DEAD_LETTER)] == ["b"]


def test_a_sqlite_ledger_from_before_the_new_fields_still_reads(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE entries (object_version TEXT PRIMARY KEY, bucket TEXT, key TEXT, version TEXT, size INTEGER, "
            "rule TEXT, entrypoint TEXT, state TEXT, attempt INTEGER, submission_id TEXT, owner TEXT, created_at REAL, "
            "updated_at REAL, next_attempt_at REAL, last_error TEXT, log_tail TEXT)"
        )
        old.execute("INSERT INTO entries VALUES ('data/a@etag', 'data', 'a', 'etag', 1, 'r', 'python -m x', "
                    "'submitted', 1, 'sub-a1', 'o', 1.0, 2.0, 0.0, '', '')")  # fmt: skip
    ledger = SqliteLedger(path)
    found = ledger.get("data/a@etag")
    assert (found.state, found.submitted_at, found.requeues) == (SUBMITTED, 0.0, 0)
    assert ledger.claim(entry("b")) and ledger.get("data/b@etag") == entry("b")


def test_a_dynamodb_item_from_before_the_new_fields_still_reads(moto_client):
    dynamo = DynamoLedger(moto_client("dynamodb"), f"ledger-{uuid.uuid4().hex[:8]}")
    dynamo.create_table()
    dynamo.claim(entry("a"))
    dynamo.client.update_item(TableName=dynamo.table, Key={"object_version": {"S": "data/a@etag"}},
                              UpdateExpression="REMOVE submitted_at, requeues")  # fmt: skip
    assert dynamo.get("data/a@etag") == entry("a")
