"""The dispatcher's typed configuration (``jobs/configs/dispatch/*.yaml``).

The embedded defaults are the local setup: poll ``s3://rayfleet/incoming/`` on the
local S3, record claims in a SQLite file, submit to the local Ray head on
``http://127.0.0.1:8265``. ``jobs/configs/dispatch/aws.yaml`` is the AWS setup: S3
notifications through SQS and a DynamoDB ledger.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from events.rules import Rule
from rayfleet.config import BaseConfig


class PollerConfig(BaseConfig):
    """The bucket-listing source, for S3-compatible stores without notifications."""

    bucket: str = Field("rayfleet", description="Bucket to list.")
    prefix: str = Field("incoming/", description="Only keys under this prefix are listed.")
    endpoint_url: str | None = Field(
        None, description="S3 endpoint; None uses the AWS environment (AWS_ENDPOINT_URL...)."
    )


class SqsConfig(BaseConfig):
    """The SQS source: a queue that receives the bucket's S3 event notifications."""

    queue_url: str = Field("", description="URL of the queue S3 sends its notifications to.")
    wait_time_s: int = Field(10, ge=0, le=20, description="SQS long-poll wait per receive.")
    max_messages: int = Field(10, ge=1, le=10, description="Messages per receive.")
    visibility_timeout_s: int = Field(
        120, ge=0, description="Seconds a received message stays hidden before redelivery."
    )
    endpoint_url: str | None = Field(
        None, description="SQS endpoint; None uses the AWS environment (AWS_ENDPOINT_URL_SQS...)."
    )


class LedgerConfig(BaseConfig):
    """Where claims and job states are recorded."""

    kind: Literal["sqlite", "dynamodb"] = Field(
        "sqlite", description="sqlite for one dispatcher, dynamodb for several."
    )
    sqlite_path: str = Field(".data/dispatch/ledger.sqlite", description="SQLite ledger file.")
    dynamodb_table: str = Field("rayfleet-dispatch-ledger", description="DynamoDB ledger table.")
    create_table: bool = Field(False, description="Create the DynamoDB table if it is missing (development).")
    endpoint_url: str | None = Field(None, description="DynamoDB endpoint; None uses the AWS environment.")


class RayConfig(BaseConfig):
    """The cluster jobs go to, and what travels with each job."""

    address: str = Field("http://127.0.0.1:8265", description="Ray jobs API (dashboard) address.")
    working_dir: str | None = Field(
        ".", description="Project folder uploaded with every job; None relies on the cluster's image."
    )
    excludes: list[str] = Field(
        default_factory=lambda: [".git", ".venv", ".data", ".models", ".run", "**/__pycache__"],
        description="Paths under working_dir not uploaded.",
    )
    env_vars: dict[str, str] = Field(default_factory=dict, description="Environment variables set for every job.")


class RetryConfig(BaseConfig):
    """What happens when a job fails."""

    max_attempts: int = Field(3, ge=1, description="Attempts per object version before it goes to the dead letter.")
    backoff_s: float = Field(30.0, ge=0, description="Wait before the second attempt.")
    backoff_factor: float = Field(2.0, ge=1, description="Each later wait is this many times the previous one.")
    max_backoff_s: float = Field(900.0, ge=0, description="Longest wait between attempts.")
    log_lines: int = Field(
        40, ge=1, description="Last lines of the job's logs kept with a failure and the dead letter."
    )


class FaultInjectionConfig(BaseConfig):
    """Deliberate failures, for tests of crash recovery only."""

    crash_after_claim: bool = Field(
        False, description="Kill the process (os._exit) right after a claim, before submitting."
    )


class DispatchConfig(BaseConfig):
    """Configuration of the S3-event dispatcher (python -m events run)."""

    source: Literal["poller", "sqs"] = Field("poller", description="Where events come from.")
    poller: PollerConfig = Field(default_factory=PollerConfig, description="The bucket poller (source=poller).")
    sqs: SqsConfig = Field(default_factory=SqsConfig, description="The SQS queue (source=sqs).")
    ledger: LedgerConfig = Field(default_factory=LedgerConfig, description="The ledger.")
    ray: RayConfig = Field(default_factory=RayConfig, description="The Ray cluster.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries and the dead letter.")
    rules: list[Rule] = Field(default_factory=list, description="Event-to-job rules; the first match wins.")
    dead_letter_output: str | None = Field(
        None, description="Folder (local or s3://) for one JSON record per dead letter."
    )
    max_running_jobs: int | None = Field(
        1,
        ge=1,
        description="Most jobs submitted and unfinished at once, counted in the ledger; more claims wait, oldest "
        "first. 1 suits the 2-CPU local head (two engine jobs deadlock there); None: no limit.",
    )
    cycle_interval_s: float = Field(5.0, ge=0, description="Pause after a cycle that received no event.")
    stale_claim_s: float = Field(
        30.0, ge=0, description="A claim this old with no submission is reconciled (crash recovery)."
    )
    exit_when_idle: bool = Field(
        False, description="Stop once a cycle receives nothing and no job is open (scripts, tests)."
    )
    dispatcher_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Recorded as the owner of each claim.",
    )
    status_limit: int = Field(20, ge=1, description="Entries shown by python -m events status.")
    fault_injection: FaultInjectionConfig = Field(default_factory=FaultInjectionConfig, description="Tests only.")

    @field_validator("rules")
    @classmethod
    def _distinct_names(cls, rules: list[Rule]) -> list[Rule]:
        names = [rule.name for rule in rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"rule names must be distinct (the ledger records a rule by name): {repeated}")
        return rules


def missing_rule_configs(config: DispatchConfig) -> list[str]:
    """The rules' config files that the working dir lacks: each job would fail on the cluster, after every
    retry. Nothing to check when the cluster's image holds the code (no working_dir)."""
    if config.ray.working_dir is None:
        return []
    root = Path(config.ray.working_dir)
    return [f"rule {rule.name!r}: config {rule.config} is no file in {root}"
            for rule in config.rules if rule.config and not (root / rule.config).is_file()]  # fmt: skip


def unknown_rule_jobs(config: DispatchConfig) -> list[str]:
    """The rules' job modules found neither in the working dir nor installed here (the cluster may still
    install them, through its image or a runtime environment: worth a warning, not a refusal)."""
    root = Path(config.ray.working_dir or ".")
    unknown = []
    for rule in config.rules:
        module = root / rule.job.replace(".", "/")
        if not (module.with_suffix(".py").is_file() or (module / "__init__.py").is_file() or _installed(rule.job)):
            unknown.append(f"rule {rule.name!r}: job {rule.job} is no module in {root} nor installed here")
    return unknown


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
