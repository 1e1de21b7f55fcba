"""Fault injection in Ray workers: storage fails to open the files named in ``$RAYFLEET_FAULT_INJECTION_UNREADABLE``
(comma-separated URIs), as S3 down past its retries would. A job's ``worker_process_setup_hook``
(:func:`ray_workers_failing_to_open`), since a test's monkeypatch reaches only its own process."""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from typing import Iterator

from rayfleet import storage

UNREADABLE = "RAYFLEET_FAULT_INJECTION_UNREADABLE"


class FailingOpenForFaultInjection:
    def open_input_file(self, path: str, *args, **options):
        raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: connection reset")

    open_input_stream = open_input_file


def fail_opening_named_files() -> None:
    named, resolve = set(os.environ[UNREADABLE].split(",")), storage.resolve

    def resolve_failing(uri: str) -> storage.Location:
        found = resolve(uri)
        return dataclasses.replace(found, filesystem=FailingOpenForFaultInjection()) if uri in named else found

    storage.resolve = resolve_failing


@contextmanager
def ray_workers_failing_to_open(uris: list[str], cluster) -> Iterator[None]:
    """This process's Ray connection, while the block runs, one whose workers fail to open ``uris``."""
    import ray

    address = cluster.address_info["gcs_address"]
    ray.shutdown()
    hook = f"{__name__}.{fail_opening_named_files.__name__}"
    try:
        ray.init(address=address, logging_level="WARNING",
                 runtime_env={"worker_process_setup_hook": hook, "env_vars": {UNREADABLE: ",".join(uris)}})  # fmt: skip
        yield
    finally:
        ray.shutdown()
        ray.init(address=address, logging_level="WARNING")
