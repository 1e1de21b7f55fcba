"""The dispatch ledger: exactly one submission per object version.

Every object version (``bucket/key@version-id``, or ``bucket/key@ETag~upload`` in a bucket without
versioning) gets one entry, created by a
conditional *claim* before anything is submitted, then moved through its states by
compare-and-set transitions, so two dispatchers (or one restarted after a crash)
never act on the same entry twice::

    claimed ───────────▶ submitted ─────▶ succeeded
     ▲  ▲  │                 │
     │  │  └──▶ retry_wait ◀─┤  failed, timed out or submission refused, attempts left
     │  └─────────┘          │  (the next attempt)
     │                       ▼
     └───── requeue ──── dead_letter   no attempts left (from claimed too)

``claimed`` is also the queue: a claim waits there while ``max_running_jobs`` jobs run.
Every transition is conditioned on the state *and* on the entry's current submission id
(one per attempt), so a dispatcher acting on a stale copy of an entry (an attempt
another dispatcher has already moved past) changes nothing.

Two implementations of one :class:`Ledger` protocol: :class:`SqliteLedger` (default,
one dispatcher) and :class:`DynamoLedger` (a DynamoDB table with conditional writes,
for several dispatchers).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Protocol

from events.rules import REMOVED_MARK

CLAIMED, SUBMITTED, RETRY_WAIT, SUCCEEDED, DEAD_LETTER = (
    "claimed",
    "submitted",
    "retry_wait",
    "succeeded",
    "dead_letter",
)
OPEN_STATES = (CLAIMED, SUBMITTED, RETRY_WAIT)


@dataclass
class LedgerEntry:
    """One object version and the job it started."""

    object_version: str
    bucket: str
    key: str
    version: str
    size: int
    rule: str
    entrypoint: str
    state: str = CLAIMED
    attempt: int = 1
    submission_id: str = ""
    owner: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    next_attempt_at: float = 0.0
    last_error: str = ""
    log_tail: str = ""
    submitted_at: float = 0.0  # when the current attempt was submitted (its timeout counts from here)
    requeues: int = 0  # times the entry was requeued from the dead letter (part of the submission ids)

    @property
    def removal(self) -> bool:
        """Whether the entry is for the object's deletion (its object version says so)."""
        return self.object_version.startswith(f"{self.bucket}/{self.key}@{REMOVED_MARK}")


class Ledger(Protocol):
    """Conditional storage of ledger entries."""

    def claim(self, entry: LedgerEntry) -> bool:
        """Record ``entry`` if its object version has no entry yet; True if this call recorded it."""
        ...

    def transition(self, object_version: str, from_states: Iterable[str], expected_submission_id: str | None = None,
                   **changes) -> bool:  # fmt: skip
        """Apply ``changes`` if the entry is in one of ``from_states`` (and, when given, still at
        ``expected_submission_id``, i.e. the same attempt); True if applied."""
        ...

    def get(self, object_version: str) -> LedgerEntry | None:
        """The entry of one object version, or None."""
        ...

    def open_entries(self) -> list[LedgerEntry]:
        """Entries not yet finished (claimed, submitted or waiting for a retry), oldest first."""
        ...

    def in_state(self, state: str) -> list[LedgerEntry]:
        """Every entry in ``state``, oldest first."""
        ...

    def recent(self, limit: int) -> list[LedgerEntry]:
        """The ``limit`` most recently updated entries, newest first."""
        ...


COLUMNS = [entry_field.name for entry_field in fields(LedgerEntry)]


class SqliteLedger:
    """The ledger in one SQLite file (WAL mode; safe for one dispatcher and readers)."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS entries ("
            "object_version TEXT PRIMARY KEY, bucket TEXT, key TEXT, version TEXT, size INTEGER, rule TEXT, "
            "entrypoint TEXT, state TEXT, attempt INTEGER, submission_id TEXT, owner TEXT, created_at REAL, "
            "updated_at REAL, next_attempt_at REAL, last_error TEXT, log_tail TEXT, submitted_at REAL, "
            "requeues INTEGER)"
        )
        self._add_missing_columns()
        self._connection.execute("CREATE INDEX IF NOT EXISTS entries_state ON entries(state)")
        self._connection.execute("CREATE INDEX IF NOT EXISTS entries_updated ON entries(updated_at)")

    def _add_missing_columns(self) -> None:
        """Bring a ledger file written by an older version up to the current columns (with their defaults)."""
        present = {row["name"] for row in self._connection.execute("PRAGMA table_info(entries)")}
        for entry_field in fields(LedgerEntry):
            if entry_field.name not in present:
                column_type = {"int": "INTEGER", "float": "REAL"}.get(entry_field.type, "TEXT")
                self._connection.execute(
                    f"ALTER TABLE entries ADD COLUMN {entry_field.name} {column_type} DEFAULT {entry_field.default!r}"
                )

    def claim(self, entry: LedgerEntry) -> bool:
        placeholders = ", ".join("?" for _ in COLUMNS)
        values = [asdict(entry)[name] for name in COLUMNS]
        with self._lock:
            cursor = self._connection.execute(
                f"INSERT OR IGNORE INTO entries ({', '.join(COLUMNS)}) VALUES ({placeholders})", values
            )
        return cursor.rowcount == 1

    def transition(self, object_version: str, from_states: Iterable[str], expected_submission_id: str | None = None,
                   **changes) -> bool:  # fmt: skip
        states = list(from_states)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        condition = f"object_version = ? AND state IN ({', '.join('?' for _ in states)})"
        parameters = [*changes.values(), object_version, *states]
        if expected_submission_id is not None:
            condition += " AND submission_id = ?"
            parameters.append(expected_submission_id)
        with self._lock:
            cursor = self._connection.execute(f"UPDATE entries SET {assignments} WHERE {condition}", parameters)
        return cursor.rowcount == 1

    def get(self, object_version: str) -> LedgerEntry | None:
        rows = self._select("WHERE object_version = ?", [object_version])
        return rows[0] if rows else None

    def open_entries(self) -> list[LedgerEntry]:
        return self._select(
            f"WHERE state IN ({', '.join('?' for _ in OPEN_STATES)}) ORDER BY created_at", list(OPEN_STATES)
        )

    def in_state(self, state: str) -> list[LedgerEntry]:
        return self._select("WHERE state = ? ORDER BY created_at", [state])

    def recent(self, limit: int) -> list[LedgerEntry]:
        return self._select("ORDER BY updated_at DESC LIMIT ?", [limit])

    def _select(self, clause: str, parameters: list) -> list[LedgerEntry]:
        with self._lock:
            rows = self._connection.execute(f"SELECT * FROM entries {clause}", parameters).fetchall()
        return [LedgerEntry(**dict(row)) for row in rows]


class DynamoLedger:
    """The ledger in a DynamoDB table keyed by ``object_version``; every write is conditional.

    The claim is a put conditional on the key being absent and every transition an update
    conditional on the current state and submission id, so any number of dispatchers can
    share the table.
    """

    def __init__(self, client, table: str):
        self.client, self.table = client, table

    def create_table(self) -> None:
        """Create the table (on-demand billing) if it does not exist, and wait until it is active."""
        existing = self.client.list_tables().get("TableNames", [])
        if self.table not in existing:
            self.client.create_table(
                TableName=self.table,
                KeySchema=[{"AttributeName": "object_version", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "object_version", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        self.client.get_waiter("table_exists").wait(TableName=self.table)

    def claim(self, entry: LedgerEntry) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item={name: _to_attribute(value) for name, value in asdict(entry).items()},
                ConditionExpression="attribute_not_exists(object_version)",
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False

    def transition(self, object_version: str, from_states: Iterable[str], expected_submission_id: str | None = None,
                   **changes) -> bool:  # fmt: skip
        states = list(from_states)
        names = {f"#f{index}": name for index, name in enumerate(changes)}
        values = {f":v{index}": _to_attribute(value) for index, value in enumerate(changes.values())}
        values.update({f":s{index}": _to_attribute(state) for index, state in enumerate(states)})
        names["#state"] = "state"
        condition = f"#state IN ({', '.join(f':s{index}' for index in range(len(states)))})"
        if expected_submission_id is not None:
            names["#submission"] = "submission_id"
            values[":expected_submission"] = _to_attribute(expected_submission_id)
            condition += " AND #submission = :expected_submission"
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"object_version": {"S": object_version}},
                UpdateExpression="SET " + ", ".join(f"#f{index} = :v{index}" for index in range(len(changes))),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False

    def get(self, object_version: str) -> LedgerEntry | None:
        item = self.client.get_item(
            TableName=self.table, Key={"object_version": {"S": object_version}}, ConsistentRead=True
        )
        return _from_item(item["Item"]) if "Item" in item else None

    def open_entries(self) -> list[LedgerEntry]:
        entries = [entry for entry in self._scan() if entry.state in OPEN_STATES]
        return sorted(entries, key=lambda entry: entry.created_at)

    def in_state(self, state: str) -> list[LedgerEntry]:
        return sorted((entry for entry in self._scan() if entry.state == state), key=lambda entry: entry.created_at)

    def recent(self, limit: int) -> list[LedgerEntry]:
        return sorted(self._scan(), key=lambda entry: entry.updated_at, reverse=True)[:limit]

    def _scan(self) -> list[LedgerEntry]:
        # A scan is fine at dispatch volumes (one item per landed file); a state index would serve more.
        pages = self.client.get_paginator("scan").paginate(TableName=self.table, ConsistentRead=True)
        return [_from_item(item) for page in pages for item in page.get("Items", [])]


def _to_attribute(value) -> dict:
    if isinstance(value, (int, float)):
        return {"N": repr(value)}
    return {"S": str(value)}


def _from_item(item: dict) -> LedgerEntry:
    values = {}
    for entry_field in fields(LedgerEntry):
        attribute = item.get(entry_field.name)
        if attribute is None:  # written by an older version: the field's default
            continue
        if "N" in attribute:
            number = Decimal(attribute["N"])
            values[entry_field.name] = int(number) if entry_field.type == "int" else float(number)
        else:
            values[entry_field.name] = attribute["S"]
    return LedgerEntry(**values)
