"""Fixtures for the dispatcher: moto in server mode, the local stand-in for SQS and DynamoDB.

SQS and DynamoDB have no local equivalent we can run, so their API is served by moto's
HTTP server (real boto3 clients, real wire protocol); S3 is the real local SeaweedFS.
"""

from __future__ import annotations

import os
import uuid

import boto3
import pytest

from tests.conftest import free_port


@pytest.fixture(scope="session")
def moto_url() -> str:
    """The endpoint of a moto server (SQS, DynamoDB and S3 with notifications) for the session."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def moto_client(moto_url):
    """``moto_client("sqs")``: a boto3 client of the moto server."""

    def make(service: str):
        return boto3.client(
            service, endpoint_url=moto_url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    return make


@pytest.fixture
def notifying_bucket(moto_client):
    """A moto S3 bucket that sends its ObjectCreated notifications to an SQS queue of the same name.

    Returns ``(s3, sqs, name, queue_url)``. S3 puts a test event on the queue when the
    notification is configured.
    """
    s3, sqs = moto_client("s3"), moto_client("sqs")
    name = f"incoming-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=name)
    s3.put_bucket_notification_configuration(
        Bucket=name,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    return s3, sqs, name, queue_url
