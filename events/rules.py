"""Dispatch rules: which object event starts which job, with which config and overrides.

A rule matches an event on bucket, key prefix, key suffix and size, and names a job
module (run as ``python -m <job>``), an optional config file and ``key=value``
overrides. Overrides are templates over the object that landed::

    - name: summarize-incoming-parquet
      prefix: incoming/
      suffix: .parquet
      job: jobs.summarize
      overrides: ["input={uri}", "output=s3://{bucket}/summaries/{stem}"]

Placeholders: ``{uri}`` (``s3://bucket/key``), ``{bucket}``, ``{key}``, ``{name}``
(the last part of the key), ``{stem}`` (that name without its extension), ``{parent}``
(the key's folder) and ``{version}`` (the version id or ETag). The first matching
rule wins.
"""

from __future__ import annotations

import posixpath
import shlex
import string
from dataclasses import dataclass

from pydantic import Field, field_validator

from rayfleet.config import BaseConfig

PLACEHOLDERS = ("uri", "bucket", "key", "name", "stem", "parent", "version")


@dataclass(frozen=True)
class ObjectEvent:
    """One object version that landed in a bucket, whichever source reported it."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def version(self) -> str:
        """What tells this version of the object from any other: the version id, else the ETag."""
        return self.version_id or self.etag

    @property
    def object_version(self) -> str:
        """The ledger's key: one submission per ``bucket/key@version``."""
        return f"{self.bucket}/{self.key}@{self.version}"


class Rule(BaseConfig):
    """One mapping from object events to a job."""

    name: str = Field(..., description="Name of the rule, recorded with every event it matched.")
    bucket: str | None = Field(None, description="Bucket the object must be in; None matches any bucket.")
    prefix: str = Field("", description="Key prefix the object must start with.")
    suffix: str = Field("", description="Key suffix the object must end with (e.g. .parquet).")
    min_size: int = Field(1, ge=0, description="Smallest object size in bytes (1 skips empty objects and folders).")
    max_size: int | None = Field(None, ge=0, description="Largest object size in bytes; None means no limit.")
    job: str = Field(..., description="Job module run as `python -m <job>` (e.g. jobs.summarize).")
    config: str | None = Field(None, description="Config file passed to the job as config=<file>, relative to the working dir.")
    overrides: list[str] = Field(
        default_factory=list, description="key=value overrides for the job; values may use the placeholders {uri}, {key}, ..."
    )
    entrypoint_num_cpus: float = Field(0, ge=0, description="CPUs reserved for the job's driver (>0 makes an autoscaler start a worker for it).")
    entrypoint_num_gpus: float = Field(0, ge=0, description="GPUs reserved for the job's driver.")

    @field_validator("overrides")
    @classmethod
    def _known_placeholders(cls, overrides: list[str]) -> list[str]:
        for override in overrides:
            if "=" not in override:
                raise ValueError(f"override {override!r} is not of the form key=value")
            names = {field for _, field, _, _ in string.Formatter().parse(override) if field is not None}
            unknown = names - set(PLACEHOLDERS)
            if unknown:
                raise ValueError(f"override {override!r} uses unknown placeholders {sorted(unknown)}; known: {PLACEHOLDERS}")
        return overrides

    def matches(self, event: ObjectEvent) -> bool:
        """True when ``event`` is for this rule."""
        return (
            (self.bucket is None or event.bucket == self.bucket)
            and event.key.startswith(self.prefix)
            and event.key.endswith(self.suffix)
            and event.size >= self.min_size
            and (self.max_size is None or event.size <= self.max_size)
        )


def first_match(rules: list[Rule], event: ObjectEvent) -> Rule | None:
    """The first rule that matches ``event``, or None."""
    return next((rule for rule in rules if rule.matches(event)), None)


def placeholder_values(event: ObjectEvent) -> dict[str, str]:
    """The values of the override placeholders for one event."""
    name = posixpath.basename(event.key)
    return {
        "uri": event.uri,
        "bucket": event.bucket,
        "key": event.key,
        "name": name,
        "stem": name.split(".", 1)[0],
        "parent": posixpath.dirname(event.key),
        "version": event.version,
    }


def entrypoint(rule: Rule, event: ObjectEvent) -> str:
    """The shell command that runs ``rule``'s job on ``event`` (what `ray job submit` runs)."""
    values = placeholder_values(event)
    arguments = [f"config={rule.config}"] if rule.config else []
    arguments += [override.format(**values) for override in rule.overrides]
    return shlex.join(["python", "-m", rule.job, *arguments])
