"""The local S3 (SeaweedFS) helper: which server a checkout started, and stopping only its own."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

from cluster.local_s3 import LocalS3, PortInUseError


def test_a_server_answering_on_the_port_but_started_elsewhere_is_told_apart_and_left_running(local_s3, tmp_path):
    elsewhere = LocalS3(tmp_path / "s3", s3_port=local_s3.s3_port)  # another checkout's view of the same port
    assert local_s3.started_here() and elsewhere.is_up() and not elsewhere.started_here()
    elsewhere.stop()
    assert local_s3.is_up(), "stopping from another folder stops nothing"


def test_the_server_listens_on_its_own_ports_below_the_range_given_to_outgoing_connections(local_s3, tmp_path):
    from tests.conftest import TEST_S3_PORTS, _port_is_free

    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for server in [LocalS3(tmp_path), *(LocalS3(tmp_path, s3_port=port) for port in TEST_S3_PORTS)]:
        assert len(set(server.all_ports())) == 10 and max(server.all_ports()) < first_ephemeral, server.s3_port
    deadline = time.monotonic() + 30  # the admin service starts last, a few seconds after the S3 API answers
    while (free := [port for port in local_s3.all_ports() if _port_is_free(port)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not free, "every one is the running server's"


def test_a_port_held_by_another_process_is_named_before_weed_starts(tmp_path):
    from tests.conftest import unstarted_local_s3

    server = unstarted_local_s3(tmp_path / "s3")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", server.s3_port + 2))
        holder.listen()
        with pytest.raises(
            PortInUseError, match=rf"port\(s\) \[{server.s3_port + 2}\] on 127.0.0.1 are in use .* RAYFLEET_S3_PORT"
        ):
            server.start()
    assert not server.pid_file.exists(), "nothing was started"


@pytest.mark.slow
def test_every_bucket_takes_writes_even_when_there_are_more_buckets_than_gib_of_free_disk(tmp_path):
    """`weed mini` alone sizes volumes by free disk (1 GiB here) and allows free disk / size of them, one or
    more per bucket: on CI the suite's buckets used them all up and every later write failed."""
    from tests.conftest import unstarted_local_s3

    server = unstarted_local_s3(tmp_path / "s3")
    buckets = [f"bucket-{index:03d}" for index in range(min(shutil.disk_usage(tmp_path).free // 2**30 + 10, 150))]
    server.start()
    try:
        client = server.client()
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="doc.txt", Body=bucket.encode())
        assert [client.get_object(Bucket=b, Key="doc.txt")["Body"].read().decode() for b in buckets] == buckets
    finally:
        server.stop()
