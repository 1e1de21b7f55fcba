"""A versioned registry of model artifacts (LoRA adapters, merged and quantized models) in storage.

Layout under a root URI (a local folder or ``s3://bucket/prefix``)::

    <root>/<kind>/<name>/<version>/...            the artifact's files (e.g. a peft adapter folder)
    <root>/<kind>/<name>/<version>/metadata.json  written last: a version exists once this does
    <root>/<kind>/<name>/<version>/_decisions/    promotion decisions about this version (never overwritten)
    <root>/<kind>/<name>/promoted.json            the version currently promoted, and why

``kind`` is ``adapters`` for peft adapters and ``models`` for full (merged or quantized)
checkpoints. Versions are integers 1, 2, 3, ... and are never overwritten: a publisher
first claims a version number with a unique claim file and backs off to the next number
if another publisher claimed the same one, then uploads the files and writes
``metadata.json`` last, so a crashed publish leaves no half version behind it.

References name a version as text: ``name`` or ``name@latest`` (the newest version),
``name@3`` and ``name@promoted``.

Example::

    registry = Registry("s3://rayfleet/registry", kind="adapters")
    published = registry.publish("acme-qa", "/tmp/adapter", {"base_model": "smollm2-135m-instruct"})
    local_folder = registry.fetch(registry.resolve("acme-qa@latest"))
"""

from __future__ import annotations

import json
import os
import re
import random
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from rayfleet import storage

METADATA_FILE = "metadata.json"
PROMOTED_FILE = "promoted.json"
CLAIMS_FOLDER = "_claims"
DECISIONS_FOLDER = "_decisions"
KINDS = ("adapters", "models")
NAME = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII
)  # no "/" or "@", never "." or ".." (outside the registry)
NAME_RULE = "a name is 1 to 128 ASCII letters, digits, '.', '_' and '-', starting with a letter or digit"


class RegistryError(LookupError):
    """A name, version or reference that the registry does not hold, or cannot take."""


@dataclass(frozen=True)
class ArtifactVersion:
    """One published version: where its files are and what was recorded about it."""

    kind: str
    name: str
    version: int
    uri: str
    metadata: dict[str, Any]

    @property
    def ref(self) -> str:
        """The reference that names exactly this version, e.g. ``acme-qa@3``."""
        return f"{self.name}@{self.version}"


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``name[@selector]`` into the name and the selector (``latest`` when absent)."""
    name, at, selector = ref.partition("@")
    if not NAME.fullmatch(name) or (at and not selector) or "@" in selector:
        raise RegistryError(f"bad registry reference {ref!r}: expected name, name@<version>, name@latest "
                            f"or name@promoted "
                            f"({NAME_RULE})")  # fmt: skip
    return name, selector or "latest"


def is_version_number(text: str) -> bool:
    """Whether ``text`` writes a version as the registry does: ASCII digits, no leading zero (``3``, not
    ``03`` or ``٣``, which ``int`` would read as 3 too)."""
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def check_name(name: str) -> str:
    """``name`` if it can name an artifact; :class:`RegistryError` saying the rule if not."""
    if not NAME.fullmatch(name):
        raise RegistryError(f"bad registry name {name!r}: {NAME_RULE}")
    return name


def provenance() -> dict[str, Any]:
    """When, where and from which code revision something was produced."""
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        "git_revision": git_revision(),
    }


def git_revision() -> str | None:
    """The git commit of the code that runs (``RAYFLEET_GIT_REVISION`` wins, for packaged jobs)."""
    if os.environ.get("RAYFLEET_GIT_REVISION"):
        return os.environ["RAYFLEET_GIT_REVISION"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


class Registry:
    """Publish, list, resolve, fetch and promote versions of one kind of artifact."""

    def __init__(self, root: str, kind: str = "adapters"):
        if kind not in KINDS:
            raise ValueError(f"registry kind must be one of {KINDS}, got {kind!r}")
        self.root = root.rstrip("/")
        self.kind = kind

    # -- reading -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name with at least one published version, sorted."""
        return sorted(name for name in self._child_folders(self._kind_uri()) if self.versions(name))

    def versions(self, name: str) -> list[int]:
        """The published (committed) versions of ``name``, oldest first."""
        numbers = [int(child) for child in self._child_folders(self._name_uri(name)) if is_version_number(child)]
        return sorted(number for number in numbers if storage.exists(self._metadata_uri(name, number)))

    def get(self, name: str, version: int) -> ArtifactVersion:
        """One published version; :class:`RegistryError` if it is not there."""
        metadata_uri = self._metadata_uri(name, version)
        if not storage.exists(metadata_uri):
            known = self.versions(name)
            raise RegistryError(
                f"{self.kind} {name!r} has no version {version} in {self.root} (published: {known or 'none'})"
            )
        metadata = json.loads(storage.read_bytes(metadata_uri))
        return ArtifactVersion(self.kind, name, version, self._version_uri(name, version), metadata)

    def latest(self, name: str) -> ArtifactVersion:
        """The newest published version of ``name``."""
        versions = self.versions(name)
        if not versions:
            raise RegistryError(
                f"no published {self.kind} named {name!r} in {self.root} (known: {self.names() or 'none'})"
            )
        return self.get(name, versions[-1])

    def promoted(self, name: str) -> ArtifactVersion | None:
        """The promoted version of ``name``, or None if none was ever promoted."""
        pointer_uri = storage.join(self._name_uri(name), PROMOTED_FILE)
        if not storage.exists(pointer_uri):
            return None
        try:
            version = int(json.loads(storage.read_bytes(pointer_uri))["version"])
        except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise RegistryError(
                f"{pointer_uri} is not a promotion record ({error!r}): promote a version again"
            ) from error
        try:
            return self.get(name, version)
        except RegistryError as error:
            raise RegistryError(f"{pointer_uri} names version {version}, which is gone: {error}") from error

    def resolve(self, ref: str) -> ArtifactVersion:
        """The version a reference names: ``name``, ``name@latest``, ``name@3`` or ``name@promoted``."""
        name, selector = parse_ref(ref)
        if selector == "latest":
            return self.latest(name)
        if selector == "promoted":
            promoted = self.promoted(name)
            if promoted is None:
                raise RegistryError(f"{self.kind} {name!r} has no promoted version in {self.root}")
            return promoted
        if not is_version_number(selector):
            raise RegistryError(f"bad version {selector!r} in {ref!r}: expected a number, latest or promoted")
        return self.get(name, int(selector))

    def decisions(self, name: str, version: int) -> list[dict[str, Any]]:
        """The promotion decisions recorded about one version, oldest first."""
        folder = storage.join(self._version_uri(name, version), DECISIONS_FOLDER)
        if not storage.exists(folder):
            return []
        uris = [uri for uri in self._all_files(folder) if uri.endswith(".json")]
        return [json.loads(storage.read_bytes(uri)) for uri in sorted(uris)]

    def fetch(self, artifact: ArtifactVersion, cache_dir: str | None = None) -> str:
        """A local folder holding the version's files (S3 versions are downloaded once and cached).

        The cache key is the version's URI; versions never change, so a cached copy stays
        valid. ``cache_dir`` defaults to ``$RAYFLEET_CACHE_DIR`` or ``~/.cache/rayfleet``.
        """
        if not storage.is_s3_uri(artifact.uri):
            return artifact.uri
        from rayfleet.assets import cache_dir as default_cache_dir

        cache_root = cache_dir or str(default_cache_dir())
        target = os.path.join(cache_root, "registry", artifact.uri.removeprefix("s3://"))
        if os.path.exists(os.path.join(target, METADATA_FILE)):
            return target
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".fetch-", dir=os.path.dirname(target))
        source = storage.resolve(artifact.uri)
        pafs.copy_files(
            source.path, staging, source_filesystem=source.filesystem, destination_filesystem=pafs.LocalFileSystem()
        )
        try:
            os.replace(staging, target)
        except OSError:  # another process fetched it first
            pass
        return target

    # -- writing -------------------------------------------------------------------------

    def publish(self, name: str, local_folder: str, metadata: dict[str, Any]) -> ArtifactVersion:
        """Upload ``local_folder`` as the next version of ``name``; never overwrites a version.

        ``metadata`` is stored as given, with :func:`provenance` and the version added.
        """
        check_name(name)
        if not os.path.isdir(local_folder) or not os.listdir(local_folder):
            raise ValueError(f"cannot publish {local_folder!r}: not a folder with files in it")
        if METADATA_FILE in os.listdir(local_folder):
            raise ValueError(f"{local_folder!r} holds a {METADATA_FILE}; the registry writes that file itself")
        version = self._claim_next_version(name)
        destination = storage.resolve(self._version_uri(name, version))
        if not destination.is_s3:
            os.makedirs(destination.path, exist_ok=True)
        pafs.copy_files(
            local_folder,
            destination.path,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=destination.filesystem,
        )
        record = {**metadata, **provenance(), "name": name, "version": version, "kind": self.kind}
        storage.write_bytes(self._metadata_uri(name, version), json.dumps(record, indent=2, default=str).encode())
        return self.get(name, version)

    def check_writable(self) -> None:
        """Fail at once when nothing could be published here (see :func:`rayfleet.storage.check_writable`):
        a job checks this before its slow steps, not when it publishes their result.

        Raises:
            OutputLocationError: the registry's folder cannot be made or written, with the reason.
        """
        storage.check_writable(self._kind_uri())

    def promote(self, name: str, version: int, decision: dict[str, Any]) -> ArtifactVersion:
        """Make ``version`` the promoted one, recording ``decision`` (the numbers behind it)."""
        artifact = self.get(name, version)
        record = {**decision, "name": name, "version": version, "promoted_at": provenance()["created_at"]}
        self.record_decision(artifact, {**record, "promoted": True})
        storage.write_bytes(storage.join(self._name_uri(name), PROMOTED_FILE), json.dumps(record, indent=2).encode())
        return artifact

    def record_decision(self, artifact: ArtifactVersion, decision: dict[str, Any]) -> str:
        """Keep a promotion decision (taken or refused) beside the version; returns its URI."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        uri = storage.join(artifact.uri, DECISIONS_FOLDER, f"{stamp}-{uuid.uuid4().hex[:8]}.json")
        storage.write_bytes(uri, json.dumps(decision, indent=2, default=str).encode())
        return uri

    # -- internals -----------------------------------------------------------------------

    def _claim_next_version(self, name: str) -> int:
        """Claim the lowest free version number.

        A claim wins only if it is alone in the version's claims folder when its writer
        lists it right after writing. Two winners are impossible: each would have listed
        before the other wrote, yet each wrote before listing. Losers (both, in a tie)
        move on to the next number after a random pause, leaving a gap at worst.
        """
        existing = [int(child) for child in self._child_folders(self._name_uri(name)) if is_version_number(child)]
        version = max(existing, default=0) + 1
        token = uuid.uuid4().hex
        while True:
            claims_uri = storage.join(self._version_uri(name, version), CLAIMS_FOLDER)
            storage.write_bytes(storage.join(claims_uri, token), b"")
            if len(self._all_files(claims_uri)) == 1:
                return version
            version += 1
            time.sleep(random.uniform(0.0, 0.05))

    def _kind_uri(self) -> str:
        return storage.join(self.root, self.kind)

    def _name_uri(self, name: str) -> str:
        return storage.join(self._kind_uri(), name)

    def _version_uri(self, name: str, version: int) -> str:
        return storage.join(self._name_uri(name), str(version))

    def _metadata_uri(self, name: str, version: int) -> str:
        return storage.join(self._version_uri(name, version), METADATA_FILE)

    @staticmethod
    def _child_folders(uri: str) -> list[str]:
        location = storage.resolve(uri)
        infos = location.filesystem.get_file_info(pafs.FileSelector(location.path, allow_not_found=True))
        return [info.base_name for info in infos if info.type == pafs.FileType.Directory]

    @staticmethod
    def _all_files(uri: str) -> list[str]:
        location = storage.resolve(uri)
        infos = location.filesystem.get_file_info(
            pafs.FileSelector(location.path, recursive=True, allow_not_found=True)
        )
        prefix = "s3://" if location.is_s3 else ""
        return [prefix + info.path for info in infos if info.type == pafs.FileType.File]
