"""Dispatch rules: which object event starts which job, with which config and overrides.

A rule matches an event on bucket, key prefix, key suffix and size, and names a job
module (run as ``python -m <job>``), an optional config file and ``key=value``
overrides. Overrides are templates over the object that landed::

    - name: summarize-incoming-parquet
      prefix: incoming/
      suffix: .parquet
      job: jobs.summarize
      overrides: ["input={uri}", "output=s3://{bucket}/summaries/{relative_stem}/{safe_version}"]

Placeholders: ``{uri}`` (``s3://bucket/key``), ``{bucket}``, ``{key}``, ``{name}``
(the last part of the key), ``{stem}`` (that name without its last extension),
``{parent}`` (the key's folder), ``{relative_key}`` (the key after the rule's
``prefix``), ``{relative_stem}`` (that without its last extension: unique per key
when the rule has a ``suffix``), ``{version}`` (the version id or ETag) and
``{safe_version}`` (the same as one path segment). An output built from
``{relative_stem}`` and ``{safe_version}`` is new for every object and all new contents
of it, so a corrected file is summarized afresh instead of skipped as done (the same
bytes uploaded again reuse their folder, where the job finds its work done).

A rule with ``on_removed: true`` also runs its job when a matching object is deleted (the
same overrides; ``{version}`` is the deleted version's, if the source knows it): the
default ingestion rules do, so a deleted file leaves the corpus and the index.

A value that holds a placeholder reaches the job as exactly that string: the job reads
each override value as YAML (``rayfleet.config.parse_override``), where ``#`` starts a
comment and ``: `` a mapping, so such a value is passed as a quoted YAML scalar when it
would not read back as itself. The first matching rule wins.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import string
from dataclasses import dataclass

import yaml
from pydantic import Field, field_validator, model_validator

from rayfleet.config import BaseConfig, parse_override

PLACEHOLDERS = (
    "uri", "bucket", "key", "name", "stem", "parent", "relative_key", "relative_stem", "version", "safe_version",
)  # fmt: skip


REMOVED_MARK = "removed~"  # starts the version part of a deletion's object version


@dataclass(frozen=True)
class ObjectEvent:
    """One object version that landed in a bucket, or its deletion, whichever source reported it."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None = None
    uploaded: str = ""  # which upload: S3's sequencer in a notification, LastModified in a listing ("" unknown)
    removed: bool = False  # a deletion (size 0; from the poller, the deleted upload's etag and uploaded; from SQS,
    # S3's record: no etag, and the deletion's own sequencer)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def version(self) -> str:
        """The version id, else the ETag (which the same bytes uploaded again share: :attr:`object_version` tells
        uploads apart)."""
        return self.version_id or self.etag

    @property
    def object_version(self) -> str:
        """The ledger's key: one submission per ``bucket/key@version``.

        Without a version id (a bucket without versioning) the ETag alone would call the
        same bytes uploaded again after other contents (A, then B, then A) the first
        upload, and the file would keep B's results; the upload's marker tells them apart:
        ``bucket/key@ETag~uploaded``. A deletion is ``bucket/key@removed~...`` (what the
        source knows of it: the deleted version, or S3's sequencer).
        """
        which = self.version_id or "~".join(part for part in (self.etag, self.uploaded) if part)
        return f"{self.bucket}/{self.key}@{REMOVED_MARK if self.removed else ''}{which}"


class Rule(BaseConfig):
    """One mapping from object events to a job."""

    name: str = Field(..., description="Name of the rule, recorded with every event it matched.")
    bucket: str | None = Field(None, description="Bucket the object must be in; None matches any bucket.")
    prefix: str = Field("", description="Key prefix the object must start with.")
    suffix: str = Field("", description="Key suffix the object must end with (e.g. .parquet).")
    min_size: int = Field(1, ge=0, description="Smallest object size in bytes (1 skips empty objects and folders).")
    max_size: int | None = Field(None, ge=0, description="Largest object size in bytes; None means no limit.")
    job: str = Field(..., description="Job module run as `python -m <job>` (e.g. jobs.summarize).")
    config: str | None = Field(
        None, description="Config file passed to the job as config=<file>, relative to the working dir."
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="key=value overrides for the job; values may use the placeholders {uri}, {key}, ...",
    )
    entrypoint_num_cpus: float = Field(
        0, ge=0, description="CPUs reserved for the job's driver (>0 makes an autoscaler start a worker for it)."
    )
    entrypoint_num_gpus: float = Field(0, ge=0, description="GPUs reserved for the job's driver.")
    max_running_jobs: int | None = Field(
        None, ge=1, description="Most jobs of this rule submitted and unfinished at once; None: the overall limit only."
    )
    timeout_s: float | None = Field(
        None, gt=0, description="A job unfinished this long after its submission is stopped and fails; None: no limit."
    )
    on_removed: bool = Field(
        False,
        description="Run the job, with the same overrides, when a matching object is deleted too (for jobs that "
        "follow deletions: jobs.ingest given a deleted file records it deleted and the index drops it).",
    )

    @field_validator("overrides")
    @classmethod
    def _known_placeholders(cls, overrides: list[str]) -> list[str]:
        for override in overrides:
            if "=" not in override:
                raise ValueError(f"override {override!r} is not of the form key=value")
            names = {field for _, field, _, _ in string.Formatter().parse(override) if field is not None}
            unknown = names - set(PLACEHOLDERS)
            if unknown:
                raise ValueError(
                    f"override {override!r} uses unknown placeholders {sorted(unknown)}; known: {PLACEHOLDERS}"
                )
            try:  # a format spec or conversion ({stem:d}, {uri!z}) would fail every event it is filled for
                override.partition("=")[2].format(**{name: "x" for name in PLACEHOLDERS})
            except (ValueError, KeyError, IndexError) as error:
                raise ValueError(f"override {override!r} cannot be filled in: {error}") from None
        return overrides

    @model_validator(mode="after")
    def _can_match(self):
        if self.max_size is not None and self.max_size < self.min_size:
            raise ValueError(
                f"rule {self.name!r}: max_size {self.max_size} is below min_size {self.min_size}, so it never matches"
            )
        globbed = [field for field in ("prefix", "suffix") if "*" in getattr(self, field)]
        if globbed:
            raise ValueError(f"rule {self.name!r}: {' and '.join(globbed)} are matched as written, "
                             "not as globs ('*' is a "
                             "character of the key): write suffix: .pdf, not *.pdf")  # fmt: skip
        return self

    def matches(self, event: ObjectEvent) -> bool:
        """True when ``event`` is for this rule (a deletion only if the rule follows deletions; sizes do not apply).
        A key ending in ``/`` is a console's folder marker, no file: it matches no rule."""
        if event.key.endswith("/"):
            return False
        if event.removed:
            return self.on_removed and self.names(event)
        return self.fits_size(event) and self.names(event)

    def fits_size(self, event: ObjectEvent) -> bool:
        return event.size >= self.min_size and (self.max_size is None or event.size <= self.max_size)

    def names(self, event: ObjectEvent) -> bool:
        """True when ``event``'s bucket and key are this rule's, whatever its size."""
        return (
            (self.bucket is None or event.bucket == self.bucket)
            and event.key.startswith(self.prefix)
            and event.key.endswith(self.suffix)
        )


def first_match(rules: list[Rule], event: ObjectEvent) -> Rule | None:
    """The first rule that matches ``event``, or None."""
    return next((rule for rule in rules if rule.matches(event)), None)


def sized_out(rules: list[Rule], event: ObjectEvent) -> Rule | None:
    """The first rule that names ``event``'s object but not its size (an empty upload, where ``min_size`` is
    1): no job runs for it, and what was made of an earlier version of the object stays."""
    if event.removed or event.key.endswith("/"):
        return None
    return next((rule for rule in rules if rule.names(event) and not rule.fits_size(event)), None)


def without_extension(path: str) -> str:
    """``path`` without its last extension (``2024.01.parquet`` -> ``2024.01``)."""
    return posixpath.splitext(path)[0]


def safe_path_segment(text: str) -> str:
    """``text`` as one path segment: characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def placeholder_values(rule: Rule, event: ObjectEvent) -> dict[str, str]:
    """The values of the override placeholders for one event matched by ``rule``."""
    name = posixpath.basename(event.key)
    relative_key = event.key[len(rule.prefix) :] if event.key.startswith(rule.prefix) else event.key
    return {
        "uri": event.uri,
        "bucket": event.bucket,
        "key": event.key,
        "name": name,
        "stem": without_extension(name),
        "parent": posixpath.dirname(event.key),
        "relative_key": relative_key,
        "relative_stem": without_extension(relative_key),
        "version": event.version,
        "safe_version": safe_path_segment(event.version),
    }


def yaml_exact(value: str) -> str:
    """``value`` written so that the job's override parser reads it back as exactly this string.

    ``value`` itself when it already reads back so (most keys), else a single-quoted YAML
    scalar (``'`` doubled), else a double-quoted one with every other character escaped
    (control characters, which a single-quoted scalar cannot hold).

    Raises:
        ValueError: no form reads back as ``value`` (not expected for any string).
    """
    single_quoted = "'" + value.replace("'", "''") + "'"
    double_quoted = '"' + "".join(_yaml_escaped(character) for character in value) + '"'
    for candidate in (value, single_quoted, double_quoted):
        if _reads_back(candidate, value):
            return candidate
    raise ValueError(f"{value!r} cannot be passed as an override value")


def _reads_back(candidate: str, value: str) -> bool:
    """True when the override parser reads ``candidate`` as ``value``, as valid YAML (not by its fallback)."""
    try:
        strict = yaml.safe_load(candidate) if candidate else ""
    except yaml.YAMLError:
        return False
    return strict == value and parse_override(f"value={candidate}")[1] == value


def _yaml_escaped(character: str) -> str:
    """One character for a double-quoted YAML scalar: printable ASCII as is, anything else as an escape."""
    if " " <= character <= "~" and character not in '"\\':
        return character
    return f"\\u{ord(character):04x}" if ord(character) < 0x10000 else f"\\U{ord(character):08x}"


def render_override(override: str, values: dict[str, str]) -> str:
    """One ``key=template`` override with the placeholders filled; a filled value is YAML-exact."""
    key, _, template = override.partition("=")
    if not any(field is not None for _, field, _, _ in string.Formatter().parse(template)):
        return override  # no placeholder: the value is YAML as written (numbers, booleans, lists)
    return f"{key}={yaml_exact(template.format(**values))}"


def entrypoint(rule: Rule, event: ObjectEvent) -> str:
    """The shell command that runs ``rule``'s job on ``event`` (what `ray job submit` runs)."""
    values = placeholder_values(rule, event)
    arguments = [f"config={yaml_exact(rule.config)}"] if rule.config else []
    arguments += [render_override(override, values) for override in rule.overrides]
    return shlex.join(["python", "-m", rule.job, *arguments])
