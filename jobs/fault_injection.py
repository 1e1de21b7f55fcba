"""A job made for fault injection: it prints the object it was given, then exits as told.

The dispatcher's tests point rules at it to get a job that always fails (or that
succeeds in a second, without a model)::

    python -m jobs.fault_injection input=s3://bucket/key exit_code=1
"""

from __future__ import annotations

import sys
import time

from pydantic import Field

from rayfleet.config import BaseConfig, run_job


class FaultInjectionJobConfig(BaseConfig):
    """Configuration of the fault-injection job."""

    input: str = Field(..., description="The object the job was started for (printed, not read).")
    exit_code: int = Field(1, ge=0, le=255, description="Exit status of the job: 0 succeeds, anything else fails.")
    sleep_s: float = Field(0.0, ge=0, description="Seconds to wait before exiting.")


def main(config: FaultInjectionJobConfig) -> int:
    """Print what was asked, wait, and return the exit status to use."""
    print(f"fault injection job for {config.input}: exiting with {config.exit_code}", flush=True)
    time.sleep(config.sleep_s)
    return config.exit_code


if __name__ == "__main__":
    sys.exit(run_job(__spec__, "FaultInjectionJobConfig"))
