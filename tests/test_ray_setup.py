"""Actor pools are sized from the cluster, and never starve the read/write tasks."""

from __future__ import annotations

import pytest

from rayfleet.ray_setup import WorkerPoolConfig, pool_size


def test_two_cpu_machine_gets_one_worker_and_keeps_a_cpu_free():
    workers, claim = pool_size({"CPU": 2.0}, nodes=1, config=WorkerPoolConfig())
    assert workers == 1
    assert claim == {"num_cpus": 1.0}
    assert 2.0 - workers * claim["num_cpus"] >= WorkerPoolConfig().reserve_cpus


def test_cpu_workers_are_one_per_node_by_default():
    workers, _ = pool_size({"CPU": 64.0}, nodes=3, config=WorkerPoolConfig(max_workers=10))
    assert workers == 3


def test_gpu_cluster_gets_a_worker_per_gpu_capped():
    workers, claim = pool_size({"CPU": 32.0, "GPU": 8.0}, nodes=2, config=WorkerPoolConfig(max_workers=6))
    assert workers == 6
    assert claim["num_gpus"] == 1.0


def test_too_small_cluster_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cannot fit one engine worker"):
        pool_size({"CPU": 1.0}, nodes=1, config=WorkerPoolConfig())


def test_a_claim_that_does_not_fit_what_is_free_now_is_said_before_the_pool_waits(caplog):
    from rayfleet.ray_setup import warn_if_held

    total = {"CPU": 2.0}
    with caplog.at_level("WARNING", logger="rayfleet.ray_setup"):
        assert warn_if_held({"CPU": 0.6}, total, {"num_cpus": 1.0})  # a Serve app holds 1.4 CPUs
    assert "0.6 of 2.0 CPUs" in caplog.text and "workers.cpus_per_worker" in caplog.text
    caplog.clear()
    assert not warn_if_held({"CPU": 0.6}, total, {"num_cpus": 0.5})
    assert not warn_if_held({"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}, {"num_cpus": 1.0, "num_gpus": 1.0})
    assert warn_if_held({"CPU": 8.0}, {"CPU": 8.0, "GPU": 1.0}, {"num_cpus": 1.0, "num_gpus": 1.0})


def test_workers_the_cluster_cannot_hold_are_named_instead_of_waited_for(ray_cluster):
    """Ray Train retried three workers on this 2-CPU cluster for ever; the job now says why it cannot start."""
    from rayfleet.config import InputError
    from rayfleet.ray_setup import wait_for_resources

    wait_for_resources({"CPU": 2.0}, 0, "two workers")
    with pytest.raises(InputError, match=r"^3 workers need 3 CPU; the cluster has 2 CPU: ask for fewer$"):
        wait_for_resources({"CPU": 3.0}, 0, "3 workers", ": ask for fewer")
    with pytest.raises(InputError, match=r"need 1 CPU, 1 GPU; the cluster has 2 CPU, 0 GPU \(after 1 s of waiting"):
        wait_for_resources({"CPU": 1.0, "GPU": 1.0}, 1, "a GPU worker", poll_s=0.2)
