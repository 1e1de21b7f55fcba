"""Fixtures for the dispatcher: moto in server mode, the local stand-in for SQS and DynamoDB.

SQS and DynamoDB have no local equivalent we can run, so their API is served by moto's
HTTP server (real boto3 clients, real wire protocol); S3 is the real local SeaweedFS.
"""

from __future__ import annotations

import os
import socket

import boto3
import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url() -> str:
    """The endpoint of a moto server (SQS, DynamoDB and S3 with notifications) for the session."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    port = _free_port()
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
