"""Stopping one local Ray head (``make ray-down``): all of its processes, agents and workers included,
and nothing of another head running beside it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from cluster.local_ray import alive, head_processes, head_state, names_dir

REPO = Path(__file__).resolve().parents[2]


def test_a_folder_is_named_by_an_option_or_an_argument_not_by_a_longer_name():
    assert names_dir(["raylet", "--log_dir=/tmp/rf-1/session/logs"], "/tmp/rf-1")
    assert names_dir(["ray", "start", "--temp-dir", "/tmp/rf-1"], "/tmp/rf-1")
    assert not names_dir(["raylet", "--log_dir=/tmp/rf-12/session/logs"], "/tmp/rf-1")
    assert not names_dir(["bash", "-c", "python -m cluster.local_ray down /tmp/rf-1"], "/tmp/rf-1")


def test_down_stops_every_process_of_the_head_and_leaves_another_head_running(ray_cluster, tmp_path_factory):
    import ray

    from tests.conftest import start_ray_head

    temp_dir = tmp_path_factory.mktemp("head")  # short: Ray's unix sockets live under it
    started, port = start_ray_head(temp_dir)
    assert started.returncode == 0, started.stderr[-3000:]
    assert head_state(str(temp_dir), [port]) == "ours", "make ray-up: already running"
    assert head_state(str(tmp_path_factory.mktemp("elsewhere")), [port]) == f"ray:{port}", "another checkout's view"
    processes = alive(head_processes(str(temp_dir)))
    names = {" ".join(process.cmdline()) for process in processes}
    assert any("raylet" in name for name in names) and any("DashboardAgent" in name for name in names), names
    session_temp_dir = Path(ray._private.worker._global_node.get_session_dir_path()).parent
    session_head = [
        p for p in head_processes(str(session_temp_dir)) if "raylet" in p.name() or "gcs_server" in p.name()
    ]
    assert len(session_head) == 2

    down = subprocess.run([sys.executable, "-m", "cluster.local_ray", "down", str(temp_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip

    assert down.returncode == 0 and f"stopped {len(processes)} process(es)" in down.stdout, down.stderr
    assert alive(processes) == [] and alive(head_processes(str(temp_dir))) == []
    assert alive(session_head) == session_head and ray.cluster_resources()["CPU"] == 2, "the other head runs on"


def test_state_before_ray_up_tells_a_taken_port_from_a_free_one(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert head_state(str(tmp_path / "no-head"), [taken]) == f"bound:{taken}"
    assert head_state(str(tmp_path / "no-head"), [taken]) == "free"
