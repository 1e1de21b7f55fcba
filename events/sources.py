"""Where object events come from: an SQS queue of S3 notifications, or a bucket poller.

Both sources stand behind one :class:`EventSource` protocol: ``receive()`` returns
deliveries (a group of events and what to acknowledge), ``acknowledge()`` confirms one
once the dispatcher has recorded its events in the ledger. Delivery is at least once
on both; the ledger makes the dispatch exactly once.

- :class:`SqsSource` reads standard S3 event notifications of created and removed
  objects (AWS JSON, one or many ``Records`` per message, the ``s3:TestEvent`` sent
  when notifications are set up, and the same wrapped in an SNS envelope). A message
  that is not an S3 notification is left on the queue, so the queue's own redrive
  policy sets it aside.
- :class:`BucketPoller` lists a bucket prefix for S3-compatible stores that send no
  notifications (the local SeaweedFS): every object version it has not seen is an event
  (an upload of the same bytes again is a new version: its ``LastModified`` differs), and
  so is the deletion of an object it saw.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import unquote_plus

from events.rules import ObjectEvent

logger = logging.getLogger(__name__)


class NotAnS3Notification(ValueError):
    """An SQS message body that is not an S3 event notification."""


@dataclass
class Delivery:
    """Events that arrived together, and the handle that acknowledges them (None: nothing to do)."""

    events: list[ObjectEvent]
    receipt: str | None = None


class EventSource(Protocol):
    """A source of object events."""

    def receive(self) -> list[Delivery]:
        """The deliveries available now (may wait briefly, e.g. an SQS long poll)."""
        ...

    def acknowledge(self, delivery: Delivery) -> None:
        """Confirm a delivery whose events are recorded, so it is not delivered again."""
        ...


def parse_s3_notification(body: str) -> list[ObjectEvent]:
    """The object-created and object-removed events in one S3 notification message body.

    Accepts the S3 event JSON (``{"Records": [...]}``), S3's test event (no events) and
    either of those inside an SNS envelope (``{"Type": "Notification", "Message": ...}``).
    ``ObjectRemoved:*`` records give deletions (``removed``); other records (restores,
    replication) give no events.

    Raises:
        NotAnS3Notification: the body is not one of those.
    """
    try:
        message = json.loads(body)
    except json.JSONDecodeError as error:
        raise NotAnS3Notification(f"not JSON: {error}") from error
    if not isinstance(message, dict):
        raise NotAnS3Notification("not a JSON object")
    if message.get("Type") == "Notification" and isinstance(message.get("Message"), str):
        return parse_s3_notification(message["Message"])
    if message.get("Event") == "s3:TestEvent":
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise NotAnS3Notification("no Records list")
    if not all(isinstance(record, dict) for record in records):
        raise NotAnS3Notification("a record is not a JSON object")
    kinds = [str(record.get("eventName", "")) for record in records]
    return [
        _record_event(record, removed=kind.startswith("ObjectRemoved:"))
        for record, kind in zip(records, kinds)
        if kind.startswith(("ObjectCreated:", "ObjectRemoved:"))
    ]


def _record_event(record: dict, removed: bool) -> ObjectEvent:
    try:
        s3 = record["s3"]
        found = s3["object"]
        return ObjectEvent(
            bucket=s3["bucket"]["name"],
            key=unquote_plus(found["key"]),  # keys arrive URL-encoded, spaces as '+'
            size=int(found.get("size", 0)),
            etag=str(found.get("eTag", "")).strip('"'),
            # A bucket whose versioning is suspended gives every new upload the version "null": none,
            # so the ETag and the sequencer tell its uploads apart.
            version_id=found.get("versionId") if found.get("versionId") not in (None, "", "null") else None,
            uploaded=str(found.get("sequencer", "")),
            removed=removed,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise NotAnS3Notification(f"malformed S3 record: {error!r}") from error


@dataclass
class SqsSource:
    """S3 event notifications from an SQS queue (long polling)."""

    client: object  # a boto3 SQS client
    queue_url: str
    wait_time_s: int = 10
    max_messages: int = 10
    visibility_timeout_s: int = 120

    def receive(self) -> list[Delivery]:
        reply = self.client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=self.wait_time_s,
            VisibilityTimeout=self.visibility_timeout_s,
        )
        deliveries = []
        for message in reply.get("Messages", []):
            try:
                deliveries.append(Delivery(parse_s3_notification(message["Body"]), message["ReceiptHandle"]))
            except NotAnS3Notification as error:
                logger.warning(
                    "left SQS message %s on the queue for its redrive policy: %s", message.get("MessageId"), error
                )
        return deliveries

    def acknowledge(self, delivery: Delivery) -> None:
        if delivery.receipt is not None:
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=delivery.receipt)


@dataclass
class BucketPoller:
    """Every object version under ``s3://bucket/prefix`` not yet seen by this poller, one listing at a time,
    and the deletion of every object it saw that a listing no longer has (while it runs: an object deleted
    while no poller ran was never seen by the next one)."""

    client: object  # a boto3 S3 client
    bucket: str
    prefix: str = ""
    seen: dict[str, ObjectEvent] = field(default_factory=dict)  # key -> its version already reported

    def receive(self) -> list[Delivery]:
        events, listed = [], set()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for found in page.get("Contents", []):
                event = ObjectEvent(
                    self.bucket, found["Key"], int(found["Size"]), found["ETag"].strip('"'),
                    uploaded=found["LastModified"].isoformat(),
                )  # fmt: skip
                listed.add(event.key)
                if self.seen.get(event.key) != event:
                    events.append(event)
        events += [replace(last, size=0, removed=True) for key, last in self.seen.items() if key not in listed]
        return [Delivery(events)] if events else []

    def acknowledge(self, delivery: Delivery) -> None:
        # Remembered only once recorded: a crash before that lists the objects again.
        for event in delivery.events:
            if event.removed:
                self.seen.pop(event.key, None)
            else:
                self.seen[event.key] = event
