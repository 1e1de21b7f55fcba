"""One filesystem layer for local paths and ``s3://`` URIs, over ``pyarrow.fs``.

Every read and write in rayfleet goes through here, so jobs take the same URIs on a
laptop, against the local SeaweedFS and against AWS. S3 settings come from the
standard AWS environment variables:

- ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``): an S3-compatible endpoint such as
  ``http://127.0.0.1:8333``; unset means AWS itself.
- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``.
- ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), default ``us-east-1``.
- ``AWS_MAX_ATTEMPTS``: attempts per request before a transient failure (no connection,
  throttling, a 5xx) is raised, with backoff between them; default 8, which rides out about
  half a minute of outage (pyarrow's own 3 give up within a second).

Writes are atomic: an S3 PUT is atomic by nature, a local write goes to a temporary
file that is renamed into place, so a killed job never leaves half a file.

A job submitted with ``ray job submit --working-dir .`` runs in Ray's copy of that folder,
removed with the Ray session: a relative path there is warned of once, since what a job
writes to it is lost (use an absolute path or an ``s3://`` URI).
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from rayfleet.config import InputError

logger = logging.getLogger(__name__)

S3_SCHEMES = ("s3", "s3a")
RAY_PACKAGE_PREFIX = "_ray_pkg_"  # the folder Ray unpacks a job's working_dir into (ray._private.runtime_env.packaging)


@dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem that holds it and the path inside that filesystem."""

    filesystem: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_s3(self) -> bool:
        return isinstance(self.filesystem, pafs.S3FileSystem)


def is_s3_uri(uri: str) -> bool:
    """True for ``s3://bucket/key`` style URIs."""
    return urlparse(uri).scheme in S3_SCHEMES


# Attempts per S3 request when AWS_MAX_ATTEMPTS is unset: pyarrow's default (3) gives up within a
# second of an outage, which ended a batch job at its next commit; 8 ride out ~30-60 s of it
# (measured against a stopped endpoint: 3 attempts 0.8 s, 5 11 s, 7 39 s, 8 56 s, 10 99 s).
DEFAULT_S3_ATTEMPTS = 8


class StorageSettingError(ValueError):
    """An S3 setting in the environment that cannot be used (it names the variable)."""


def s3_failure(error: OSError) -> str | None:
    """What a failed S3 request (pyarrow's ``AWS Error ...``) means for the user, in one line; None when
    ``error`` is not one: an endpoint that does not answer, credentials it refuses, anything else it said."""
    text = str(error)
    if "AWS Error" not in text:
        return None
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    said = " ".join(text.split())
    if "NETWORK_CONNECTION" in text:
        return (f"cannot reach S3 at {endpoint} after {s3_max_attempts()} attempts (is it running? `make s3-up` starts "
                f"the local one; AWS_ENDPOINT_URL names it): {said}")  # fmt: skip
    if any(code in text for code in ("ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH")):
        return f"S3 at {endpoint} refused these credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): {said}"
    return f"an S3 request to {endpoint} failed: {said}"


def s3_max_attempts() -> int:
    """Attempts per S3 request: the standard ``AWS_MAX_ATTEMPTS`` variable (boto3 reads it too), else 8."""
    value = os.environ.get("AWS_MAX_ATTEMPTS", "").strip()
    if not value:
        return DEFAULT_S3_ATTEMPTS
    if not value.isdigit() or int(value) < 1:
        raise StorageSettingError(f"AWS_MAX_ATTEMPTS must be a whole number of at least 1, not {value!r}")
    return int(value)


def s3_filesystem(allow_bucket_creation: bool = False) -> pafs.S3FileSystem:
    """An S3 filesystem configured from the standard AWS environment variables; a request that fails
    for a transient reason (no connection, throttling, a 5xx) is retried with backoff, up to
    :func:`s3_max_attempts` attempts."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options: dict = {
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        "connect_timeout": 10,
        "request_timeout": 60,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3_max_attempts()),
    }
    if endpoint:
        parsed = urlparse(endpoint)
        options["endpoint_override"] = parsed.netloc or parsed.path
        options["scheme"] = parsed.scheme or "https"
        # S3-compatible servers rarely support virtual-host addressing.
        options["force_virtual_addressing"] = False
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        options["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret_key"] = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if os.environ.get("AWS_SESSION_TOKEN"):
            options["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**options, allow_bucket_creation=allow_bucket_creation)


def s3_path(uri: str) -> str:
    """``bucket/key`` of an ``s3://`` (or ``s3a://``) URI, repeated slashes as one. Everything after the
    scheme is the key, as S3 names it: ``#`` and ``?`` are characters of a key (``Invoice #12.pdf``),
    not a URL's fragment or query, which a URL parser would cut off."""
    return re.sub("/+", "/", uri.split("://", 1)[1]).rstrip("/")


def resolve(uri: str) -> Location:
    """Map a local path or ``s3://`` URI to its filesystem and in-filesystem path."""
    if is_s3_uri(uri):
        path = s3_path(uri)
        return Location(s3_filesystem(), path, f"s3://{path}")
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported storage URI {uri!r}: use a local path or s3://bucket/key")
    path = uri.removeprefix("file://")
    if not os.path.isabs(path) and in_ray_working_dir_copy(os.getcwd()):
        warn_of_relative_path_in_ray_copy(path, os.getcwd())
    local_path = os.path.abspath(path)
    return Location(pafs.LocalFileSystem(), local_path, local_path)


def in_ray_working_dir_copy(folder: str) -> bool:
    """Whether ``folder`` lies in the copy of a working directory Ray unpacked for a submitted job."""
    return any(part.startswith(RAY_PACKAGE_PREFIX) for part in Path(folder).parts)


@functools.cache
def warn_of_relative_path_in_ray_copy(path: str, folder: str) -> None:
    logger.warning(
        "%s is a relative path, so it is read and written in Ray's copy of the job's working directory (%s), "
        "which is removed with the Ray session: give an absolute path or an s3:// URI to keep what is written there",
        path, folder,
    )  # fmt: skip


def join(uri: str, *parts: str) -> str:
    """Join URI parts with ``/`` (``os.path.join`` would break ``s3://``)."""
    return posixpath.join(uri.rstrip("/"), *parts) if is_s3_uri(uri) else os.path.join(uri, *parts)


def exists(uri: str) -> bool:
    """True if a file or folder (prefix) exists at ``uri``."""
    location = resolve(uri)
    return location.filesystem.get_file_info(location.path).type != pafs.FileType.NotFound


@dataclass(frozen=True)
class FileEntry:
    """One listed file: its URI, size and last-modified time (ISO 8601, as the filesystem reports it)."""

    uri: str
    size: int
    modified: str


PARQUET_HIDDEN = ("_", ".")  # what Parquet dataset readers skip: _SUCCESS, _errors/, .crc, .tmp


def list_entries(
    uri: str,
    suffixes: tuple[str, ...] = (),
    recursive: bool = True,
    hidden: tuple[str, ...] = PARQUET_HIDDEN,
    skipped: list[str] | None = None,
) -> list[FileEntry]:
    """All files at or under ``uri`` (a file or a folder/prefix), sorted, with their size and mtime;
    with ``recursive`` off, only the folder's own files, not its subfolders'.

    Names under ``uri`` starting with one of ``hidden`` (by default ``_`` and ``.``: ``_errors/``,
    ``.tmp``, as Parquet dataset readers do) are skipped, their URIs added to ``skipped`` when it is
    given; so are a local folder's broken links, pipes and names that are not UTF-8 (which pyarrow
    cannot open), with a warning naming them. ``suffixes`` (lower case) match names in any case.

    Raises:
        FileNotFoundError: nothing exists at ``uri``.
        InputError: ``uri`` is a local path that is not UTF-8 (a job ends with that one line).
    """
    location = resolve(uri)
    if not location.is_s3 and not utf8_name(location.path):
        name = printable_name(location.path)
        raise InputError(f"{name}: the name is not UTF-8, which pyarrow cannot open: rename it")
    info = location.filesystem.get_file_info(location.path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no file or folder at {uri}")
    if info.type == pafs.FileType.File:
        return [_entry(location, info)]
    found, unreadable = [], []
    for entry in _files_under(location) if recursive else _files_in(location):
        if is_hidden(entry.path[len(location.path) :], hidden):
            if skipped is not None and entry.type == pafs.FileType.File:
                skipped.append(_entry(location, entry).uri)
            continue
        if entry.type in (pafs.FileType.NotFound, pafs.FileType.Unknown):  # a broken link, a FIFO or a socket
            unreadable.append(entry.path)
        if entry.type != pafs.FileType.File:
            continue
        if suffixes and not entry.path.lower().endswith(suffixes):
            continue
        found.append(_entry(location, entry))
    if unreadable:
        logger.warning("skipping %d entr%s under %s that %s not a file (a broken link, a pipe): %s", len(unreadable),
                       "y" if len(unreadable) == 1 else "ies", uri, "is" if len(unreadable) == 1 else "are",
                       ", ".join(sorted(unreadable)[:5]))  # fmt: skip
    return sorted(found, key=lambda entry: entry.uri)


def _files_under(location: Location) -> list[pafs.FileInfo]:
    """Everything under a folder. A local folder is walked with its links to folders followed once
    each (a link back up, or two links to one folder, would make pyarrow's listing endless)."""
    if location.is_s3:
        return location.filesystem.get_file_info(pafs.FileSelector(location.path, recursive=True))
    paths, seen = [], set()
    for root, folders, files in os.walk(location.path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [name for name in folders if os.path.realpath(os.path.join(root, name)) not in seen]
        paths += [os.path.join(root, name) for name in files]
    named = [path for path in paths if utf8_name(path)]
    if len(named) < len(paths):
        unnamed = [path for path in paths if not utf8_name(path)]
        logger.warning("skipping %d file(s) under %s whose names are not UTF-8, which pyarrow cannot open "
                       "(rename them): %s", len(unnamed), location.uri,
                       ", ".join(map(printable_name, unnamed[:5])))  # fmt: skip
    return location.filesystem.get_file_info(named)  # a broken link reads as not found


def utf8_name(path: str) -> bool:
    """Whether a local path decodes as UTF-8 (Python holds the bytes of one that does not as lone surrogates)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_name(path: str) -> str:
    """A local path that is not UTF-8 with its odd bytes written as ``\\xe9``, for messages."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _files_in(location: Location) -> list[pafs.FileInfo]:
    """What is directly in a folder (its subfolders' files not)."""
    return location.filesystem.get_file_info(pafs.FileSelector(location.path, recursive=False))


def is_hidden(relative: str, hidden: tuple[str, ...] = PARQUET_HIDDEN) -> bool:
    """Whether a relative path has a name in it starting with one of ``hidden``, which listings skip."""
    return any(part.startswith(hidden) for part in relative.split("/") if part and hidden)


def hidden_under(folder: str, uri: str) -> bool:
    """Whether ``uri``, at or under ``folder`` (see :func:`contains`), lies where listings of ``folder`` skip."""
    if is_s3_uri(folder):
        folder, uri = s3_path(folder), s3_path(uri)
    else:
        folder, uri = os.path.realpath(folder), os.path.realpath(uri)
    return is_hidden(uri.rstrip("/")[len(folder.rstrip("/")) :])


def listed_under(folder: str, uri: str) -> bool:
    """Whether a listing of ``folder`` would take in what is at ``uri`` (it lies under ``folder``,
    not in a hidden part)."""
    return contains(folder, uri) and not hidden_under(folder, uri)


def list_files(uri: str, suffixes: tuple[str, ...] = (), recursive: bool = True) -> list[str]:
    """The URIs of :func:`list_entries`."""
    return [entry.uri for entry in list_entries(uri, suffixes, recursive)]


class NoParquetFilesError(FileNotFoundError, ValueError):
    """Something is at a Parquet input, but no Parquet file (an empty folder, Spark's lone ``_SUCCESS``, CSVs):
    a missing input to a job (one error line), and a ValueError to code that checks the input's shape."""


PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
PARQUET_MAGIC = b"PAR1"


def list_parquet_files(uri: str) -> list[str]:
    """The Parquet files at or under ``uri``, sorted: names ending ``.parquet``, ``.parq`` or ``.pq``
    (any case), and names with no extension that start as Parquet does (Hive and Athena write
    ``000000_0``). Other files are skipped, with a log line saying how many.

    Raises:
        FileNotFoundError: nothing exists at ``uri``.
        NoParquetFilesError: it holds no Parquet file.
    """
    entries = list_files(uri)
    found = [entry for entry in entries if entry.lower().endswith(PARQUET_SUFFIXES) or _bare_parquet(entry)]
    if len(found) < len(entries):
        logger.info("skipping %d file(s) under %s that are not Parquet", len(entries) - len(found), uri)
    if not found:
        raise NoParquetFilesError(
            f"no Parquet files (*.parquet, *.parq, *.pq, or Parquet without an extension) at {uri}"
        )
    return found


def _bare_parquet(uri: str) -> bool:
    """A file with no extension whose first bytes are Parquet's magic."""
    if "." in posixpath.basename(uri):
        return False
    location = resolve(uri)
    with location.filesystem.open_input_file(location.path) as stream:
        return stream.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC


def contains(folder: str, uri: str) -> bool:
    """Whether ``uri`` is ``folder`` or lies under it (both local paths, or both ``s3://`` URIs, as
    ``s3a://`` and repeated slashes name the same objects); local paths are compared where their
    links lead (an input reached through a link to the output's folder is that folder)."""
    if is_s3_uri(folder) != is_s3_uri(uri):
        return False
    if is_s3_uri(folder):
        parent, child = s3_path(folder), s3_path(uri)
        return child == parent or child.startswith(parent + "/")
    parent, child = os.path.realpath(folder), os.path.realpath(uri)
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def read_bytes(uri: str) -> bytes:
    """The whole content of one file, byte for byte (a ``.gz`` file's compressed bytes: pyarrow would
    inflate it, by its name, and with no limit)."""
    location = resolve(uri)
    with location.filesystem.open_input_stream(location.path, compression=None) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write one file atomically, creating parent folders as needed."""
    location = resolve(uri)
    if location.is_s3:
        with location.filesystem.open_output_stream(location.path, compression=None) as stream:
            stream.write(data)
        return
    parent = os.path.dirname(location.path)
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".tmp-{uuid.uuid4().hex}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, location.path)


def delete(uri: str) -> None:
    """Delete one file; a missing file is not an error."""
    location = resolve(uri)
    try:
        location.filesystem.delete_file(location.path)
    except FileNotFoundError:
        pass


def delete_folder(uri: str) -> None:
    """Delete a folder (an S3 prefix) and everything under it; a missing one is not an error."""
    location = resolve(uri)
    try:
        location.filesystem.delete_dir(location.path)
    except FileNotFoundError:
        pass


def subfolder_names(uri: str) -> list[str]:
    """The names of the folders right under ``uri`` (an S3 prefix's common prefixes), sorted; none if it is missing."""
    location = resolve(uri)
    infos = location.filesystem.get_file_info(pafs.FileSelector(location.path, allow_not_found=True))
    return sorted(posixpath.basename(info.path) for info in infos if info.type == pafs.FileType.Directory)


class OutputLocationError(OSError):
    """A job's output cannot be made where it was asked for (a file in the way, no permission, a bucket
    these credentials may not create): the user must change the path or the rights."""


def ensure_bucket(uri: str) -> None:
    """Create the bucket of an ``s3://`` URI (or the local folder) if it does not exist.

    Raises:
        OutputLocationError: a local file stands where the folder or one above it would be, or the
            bucket is missing and these credentials may not create it (named, with S3's reason).
    """
    location = resolve(uri)
    if not location.is_s3:
        try:
            os.makedirs(location.path, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:
            raise OutputLocationError(
                f"cannot make the folder {uri}: a file is in the way ({error.filename})"
            ) from error
        except PermissionError as error:
            raise OutputLocationError(f"cannot make the folder {uri}: permission denied ({error.filename})") from error
        except OSError as error:  # /proc/x (no such file: /proc takes no folders), a read-only filesystem
            raise OutputLocationError(f"cannot make the folder {uri}: {error.strerror or error}") from error
        return
    bucket = location.path.split("/", 1)[0]
    if location.filesystem.get_file_info(bucket).type != pafs.FileType.NotFound:
        return
    try:
        s3_filesystem(allow_bucket_creation=True).create_dir(bucket, recursive=False)
    except OSError as error:
        raise OutputLocationError(
            f"bucket {bucket!r} (of {uri}) does not exist and could not be created: {error}"
        ) from error
    logger.info("created bucket %s", bucket)


def check_writable(uri: str) -> None:
    """Fail now, not after hours of work, when nothing can be written under ``uri``: make the folder (or
    the bucket, as :func:`ensure_bucket` does), then write and delete a small hidden probe file in it.
    The local folders it made are removed again while still empty (a job that ends up writing nothing,
    a refused publication, leaves no trace); a bucket it made stays.

    Raises:
        OutputLocationError: the folder cannot be made or written (a file in the way, no permission, a
            read-only filesystem, S3 refusing the write), named with the reason.
        OSError: S3 cannot be reached at all (:func:`s3_failure` says so in one line).
    """
    location = resolve(uri)
    folder = None if location.is_s3 else os.path.normpath(location.path)
    first_made = folder and first_missing_folder(folder)
    try:
        ensure_bucket(uri)
        probe = join(uri, f".write-probe-{uuid.uuid4().hex}")
        try:
            write_bytes(probe, b"")
        except OSError as error:
            reason = s3_failure(error) or error.strerror or str(error)
            raise OutputLocationError(f"cannot write under {uri}: {reason}") from error
        delete(probe)
    finally:
        if first_made:
            remove_empty_folders(folder, up_to=first_made)


def remove_empty_folders(path: str, up_to: str) -> None:
    """Remove ``path`` and its parents up to ``up_to`` (included) while they are empty: what another
    writer put there meanwhile stays."""
    while True:
        try:
            os.rmdir(path)
        except OSError:
            return
        if path == up_to or not path.startswith(up_to):
            return
        path = os.path.dirname(path)


def first_missing_folder(path: str) -> str | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet; None if it does."""
    missing = None
    while path and not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def _to_uri(location: Location, path: str) -> str:
    return f"s3://{path}" if location.is_s3 else path


def _entry(location: Location, info: pafs.FileInfo) -> FileEntry:
    modified = info.mtime.isoformat() if info.mtime is not None else ""
    return FileEntry(_to_uri(location, info.path), int(info.size or 0), modified)
