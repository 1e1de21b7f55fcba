"""Event sources: AWS S3 notification JSON, SQS (moto server) and the bucket poller (SeaweedFS)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from events.rules import ObjectEvent
from events.sources import BucketPoller, NotAnS3Notification, SqsSource, parse_s3_notification


def s3_record(key: str, event_name: str = "ObjectCreated:Put", version_id: str | None = None) -> dict:
    """One record as AWS sends it (keys URL-encoded, ETag without quotes)."""
    found = {"key": key, "size": 1024, "eTag": "0123456789abcdef0123456789abcdef", "sequencer": "0A1B2C3D4E5F678901"}
    if version_id:
        found["versionId"] = version_id
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-28T20:00:00.000Z", "eventName": event_name,
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "incoming",
               "bucket": {"name": "data", "arn": "arn:aws:s3:::data"}, "object": found},
    }  # fmt: skip


def test_batched_records_with_encoded_keys_and_versions():
    body = json.dumps(
        {"Records": [s3_record("incoming/q3+report%282%29.parquet"), s3_record("incoming/b.parquet", version_id="v7")]}
    )
    etag, sequencer = "0123456789abcdef0123456789abcdef", "0A1B2C3D4E5F678901"
    assert parse_s3_notification(body) == [
        ObjectEvent("data", "incoming/q3 report(2).parquet", 1024, etag, uploaded=sequencer),
        ObjectEvent("data", "incoming/b.parquet", 1024, etag, "v7", uploaded=sequencer),
    ]


def test_test_event_and_restores_give_no_events_and_removals_give_deletions():
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-28T20:00:00.000Z", "Bucket": "data"}
    assert parse_s3_notification(json.dumps(test_event)) == []
    assert parse_s3_notification(json.dumps({"Records": [s3_record("a.parquet", "ObjectRestore:Completed")]})) == []
    (deleted,) = parse_s3_notification(json.dumps({"Records": [s3_record("a.parquet", "ObjectRemoved:Delete")]}))
    assert deleted.removed and deleted.key == "a.parquet" and deleted.uploaded == "0A1B2C3D4E5F678901"


def test_sns_envelope_is_unwrapped():
    envelope = {
        "Type": "Notification",
        "TopicArn": "arn:aws:sns:us-east-1:1:t",
        "Message": json.dumps({"Records": [s3_record("a.parquet")]}),
    }
    assert [event.key for event in parse_s3_notification(json.dumps(envelope))] == ["a.parquet"]


def test_a_suspended_versioning_buckets_null_version_is_no_version():
    """S3 gives every upload to a bucket whose versioning is suspended the version "null": read as a
    version, a changed file would be one object version for ever, and its new contents never processed."""
    first, second = (json.dumps({"Records": [s3_record("a.parquet", version_id="null")]})
                     .replace("0A1B2C3D4E5F678901", mark)
                     for mark in ("0A1B2C3D4E5F678901", "0A1B2C3D4E5F6789FF"))  # fmt: skip
    (event,), (later,) = parse_s3_notification(first), parse_s3_notification(second)
    assert event.version_id is None and event.object_version != later.object_version


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"hello": "world"}',
                                  '{"Records": [{"eventName": "ObjectCreated:Put"}]}',
                                  '{"Records": [null]}', '{"Records": ["ObjectCreated:Put"]}'])  # fmt: skip
def test_other_messages_are_rejected(body):
    with pytest.raises(NotAnS3Notification):
        parse_s3_notification(body)


def test_sqs_source_reads_s3_notifications_and_deletes_only_what_it_acknowledges(notifying_bucket):
    s3, sqs, name, queue_url = notifying_bucket  # S3 sent a test event to the queue
    etag = s3.put_object(Bucket=name, Key="incoming/q3 report.parquet", Body=b"PAR1 data")["ETag"].strip('"')
    sqs.send_message(QueueUrl=queue_url, MessageBody="not an S3 notification")

    source = SqsSource(sqs, queue_url, wait_time_s=1, visibility_timeout_s=60)
    deliveries = []
    for _ in range(3):
        deliveries += source.receive()
        if len(deliveries) >= 2:
            break
    events = [event for delivery in deliveries for event in delivery.events]
    assert events == [ObjectEvent(name, "incoming/q3 report.parquet", 9, etag)]
    assert len(deliveries) == 2, "the test event and the object event; the foreign message is not a delivery"
    for delivery in deliveries:
        source.acknowledge(delivery)
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    left = sum(int(value) for value in attributes["Attributes"].values())
    assert left == 1, "only the foreign message stays on the queue, for its redrive policy"


def test_bucket_poller_reports_each_object_version_once(local_s3):
    bucket = f"poll-{uuid.uuid4().hex[:8]}"
    local_s3.create_bucket(bucket)
    s3 = local_s3.client()
    s3.put_object(Bucket=bucket, Key="incoming/a.parquet", Body=b"one")
    s3.put_object(Bucket=bucket, Key="elsewhere/b.parquet", Body=b"two")
    poller = BucketPoller(s3, bucket, "incoming/")

    first = poller.receive()
    assert [(event.key, event.size) for event in first[0].events] == [("incoming/a.parquet", 3)]
    assert poller.receive()[0].events == first[0].events, "not acknowledged yet: reported again"
    poller.acknowledge(first[0])
    assert poller.receive() == []

    s3.put_object(Bucket=bucket, Key="incoming/a.parquet", Body=b"one, rewritten")
    s3.put_object(Bucket=bucket, Key="incoming/c.parquet", Body=b"three")
    changed = poller.receive()[0].events
    assert sorted(event.key for event in changed) == ["incoming/a.parquet", "incoming/c.parquet"]
    assert {event.etag for event in changed}.isdisjoint({first[0].events[0].etag}), "a rewrite is a new version"


def test_bucket_poller_tells_the_same_bytes_uploaded_again_from_their_first_upload(local_s3):
    bucket = f"poll-{uuid.uuid4().hex[:8]}"
    local_s3.create_bucket(bucket)
    s3 = local_s3.client()
    poller = BucketPoller(s3, bucket)
    reported = []
    for body in (b"contents A", b"contents B", b"contents A"):  # B replaced by A again: A is current
        s3.put_object(Bucket=bucket, Key="handbook.pdf", Body=body)
        (delivery,) = poller.receive()
        poller.acknowledge(delivery)
        reported += delivery.events
        time.sleep(1.1)  # S3 keeps LastModified to the second

    assert [event.etag for event in reported][0] == reported[2].etag != reported[1].etag
    assert len({event.object_version for event in reported}) == 3, "each upload is its own object version"
    assert BucketPoller(s3, bucket).receive()[0].events == reported[2:], "a new poller lists the current upload"


def test_bucket_poller_reports_the_deletion_of_an_object_it_saw_once(local_s3):
    bucket = f"poll-{uuid.uuid4().hex[:8]}"
    local_s3.create_bucket(bucket)
    s3 = local_s3.client()
    for key in ("incoming/a.pdf", "incoming/b.pdf"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"contents")
    poller = BucketPoller(s3, bucket, "incoming/")
    (listed,) = poller.receive()
    poller.acknowledge(listed)

    s3.delete_object(Bucket=bucket, Key="incoming/a.pdf")
    (delivery,) = poller.receive()
    (deleted,) = delivery.events
    created = next(event for event in listed.events if event.key == "incoming/a.pdf")
    assert (deleted.key, deleted.removed) == (created.key, True)
    assert (deleted.etag, deleted.uploaded) == (created.etag, created.uploaded), "the version deleted"
    assert poller.receive()[0].events == [deleted], "not acknowledged yet: reported again"
    poller.acknowledge(delivery)
    assert poller.receive() == [], "reported once"
