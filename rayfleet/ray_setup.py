"""Connecting to Ray and sizing actor pools from the cluster's resources.

Pools are sized from what the cluster has, never hard-coded: on a 2-CPU machine a pool
that claims every CPU starves Ray Data's read and write tasks and the job hangs
without a word, so CPU pools always leave ``reserve_cpus`` free.
"""

from __future__ import annotations

import logging
import os
import time

from pydantic import Field

from rayfleet.config import BaseConfig, InputError

logger = logging.getLogger(__name__)


class WorkerPoolConfig(BaseConfig):
    """How many engine workers a batch job runs, and what each one claims."""

    max_workers: int = Field(4, ge=1, description="Upper bound on engine actors.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs each engine actor claims from Ray.")
    gpus_per_worker: float = Field(1.0, ge=0, description="GPUs each engine actor claims when the cluster has GPUs.")
    reserve_cpus: float = Field(1.0, ge=0, description="CPUs left free for Ray Data read/write tasks.")
    cpu_workers_per_node: int = Field(
        1, ge=1, description="CPU-only clusters: engine actors per node (a CPU engine binds all its node's cores)."
    )


def wait_for_resources(
    needed: dict[str, float], timeout_s: float, what: str, hint: str = "", poll_s: float = 5.0
) -> None:
    """Return once the cluster has ``needed`` (``{"CPU": 2}``) in all, waiting up to ``timeout_s`` for an
    autoscaler to add nodes. Ray Train waits for workers that cannot be placed for ever, retrying.

    Raises:
        InputError: the cluster still lacks them, naming what ``what`` needs and what the cluster has.
    """
    import ray

    deadline, said = time.monotonic() + timeout_s, 0.0
    while True:
        have = ray.cluster_resources()
        short = {name: amount for name, amount in needed.items() if have.get(name, 0.0) < amount}
        if not short:
            return
        wanted = ", ".join(f"{amount:g} {name}" for name, amount in needed.items())
        held = ", ".join(f"{have.get(name, 0.0):g} {name}" for name in needed)
        if time.monotonic() >= deadline:
            waited = f" (after {timeout_s:.0f} s of waiting for nodes)" if timeout_s else ""
            raise InputError(f"{what} need {wanted}; the cluster has {held}{waited}{hint}")
        if time.monotonic() - said >= 30:
            logger.info("waiting for the cluster to have %s for %s (it has %s)", wanted, what, held)
            said = time.monotonic()
        time.sleep(poll_s)


def init_ray(address: str | None = None) -> None:
    """Connect to a running cluster (``address``, ``$RAY_ADDRESS``) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    ray.init(address=target, logging_level=logging.WARNING, log_to_driver=True)
    logger.info("connected to Ray at %s: %s", target or "a new local instance", ray.cluster_resources())


def pool_size(resources: dict[str, float], nodes: int, config: WorkerPoolConfig) -> tuple[int, dict]:
    """The number of engine actors and the Ray resources each claims.

    Args:
        resources: ``ray.cluster_resources()``.
        nodes: alive nodes with CPUs.
    """
    gpus = resources.get("GPU", 0.0)
    if gpus >= config.gpus_per_worker > 0:
        workers = int(gpus // config.gpus_per_worker)
        claim = {"num_cpus": config.cpus_per_worker, "num_gpus": config.gpus_per_worker}
    else:
        usable = resources.get("CPU", 0.0) - config.reserve_cpus
        workers = min(int(usable // config.cpus_per_worker), nodes * config.cpu_workers_per_node)
        claim = {"num_cpus": config.cpus_per_worker}
    if workers < 1:
        raise RuntimeError(
            f"the cluster ({resources.get('CPU', 0):g} CPUs, {gpus:g} GPUs) cannot fit one engine worker "
            f"claiming {claim} with {config.reserve_cpus:g} CPUs reserved; lower workers.cpus_per_worker "
            "or workers.reserve_cpus, or add nodes"
        )
    return min(workers, config.max_workers), claim


def cluster_pool_size(config: WorkerPoolConfig) -> tuple[int, dict]:
    """:func:`pool_size` for the connected cluster."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0)
    total = ray.cluster_resources()
    workers, claim = pool_size(total, max(nodes, 1), config)
    warn_if_held(ray.available_resources(), total, claim)
    return workers, claim


def warn_if_held(available: dict[str, float], total: dict[str, float], claim: dict) -> bool:
    """Log (and say) when not even one actor's claim is free now: the job then waits for others to
    let go (a Serve app holds CPUs until it is stopped) or for the autoscaler to add a node."""
    short = [name for name, key in (("num_cpus", "CPU"), ("num_gpus", "GPU"))
             if claim.get(name, 0) > available.get(key, 0.0) + 1e-9]  # fmt: skip
    if short:
        logger.warning(
            "the cluster has %.1f of %.1f CPUs and %.1f of %.1f GPUs free now, less than one worker's claim %s: "
            "the pool waits until others (a Serve app, other jobs) free them or the autoscaler adds a node; "
            "a smaller workers.cpus_per_worker shares a busy cluster",
            available.get("CPU", 0.0), total.get("CPU", 0.0), available.get("GPU", 0.0), total.get("GPU", 0.0), claim,
        )  # fmt: skip
    return bool(short)
