"""The local S3 (SeaweedFS) helper: which server a checkout started, and stopping only its own."""

from __future__ import annotations

from cluster.local_s3 import LocalS3


def test_a_server_answering_on_the_port_but_started_elsewhere_is_told_apart_and_left_running(local_s3, tmp_path):
    elsewhere = LocalS3(tmp_path / "s3", s3_port=local_s3.s3_port)  # another checkout's view of the same port
    assert local_s3.started_here() and elsewhere.is_up() and not elsewhere.started_here()
    elsewhere.stop()
    assert local_s3.is_up(), "stopping from another folder stops nothing"
