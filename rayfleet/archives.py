"""Zip archives among the files to ingest: each file inside is a document of its own.

Document sets often arrive zipped (an export of a shared drive, ``handbook.zip`` dropped into
the bucket). Ingestion lists a ``.zip`` as the files it holds, each named
``<archive URI>!/<path inside>`` (the JAR URL convention), so a member has its own ledger row,
``doc_id`` and citations, and is skipped, updated or recorded deleted like any listed file::

    entries = with_archives_unpacked(storage.list_entries("s3://bucket/incoming"))
    # FileEntry("s3://bucket/incoming/handbook.zip!/hr/leave.pdf", 48213, "<the archive's mtime>")
    data = ListedFileReader().read(entries[0].uri, max_bytes=100 * 2**20)

Only the archive's central directory (once while the archive stays open in a
:class:`ListedFileReader`) and the members read are fetched (ranged reads on S3). A member is
``modified`` when its archive is, so a replaced archive is listed anew (members whose bytes did
not change keep their ``doc_id`` and are not parsed again). Folders inside, hidden
files (``.DS_Store``) and macOS's ``__MACOSX/`` copies are passed over; an archive inside an
archive is not opened (its member is set aside as an unknown type). A ``.zip`` that is really
a DOCX, XLSX, PPTX, OpenDocument or EPUB file is a document, not an archive; one that does not
open stays listed as itself and is set aside with the reason.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
import zlib
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

from rayfleet import storage
from rayfleet.text.document import ParseError
from rayfleet.text.parsing import OOXML_MAIN_PARTS

ARCHIVE_SEPARATOR = "!/"
# An archive's name ends in .zip; the first such name followed by the separator is the archive.
MEMBER_URI = re.compile(r"^(?P<archive>.*?\.zip)!/(?P<member>.+)$", re.IGNORECASE | re.DOTALL)
# Package formats built on zip that are documents of their own (named .zip by mistake or by a download).
PACKAGE_MEMBERS = {"mimetype", *OOXML_MAIN_PARTS}
# What reading a damaged archive or member raises (a bad CRC, a truncated stream, a bad header).
DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError)

logger = logging.getLogger(__name__)


def is_archive(uri: str) -> bool:
    """Whether the name is that of a zip archive (``.zip``, any case)."""
    return uri.lower().endswith(".zip")


def member_uri(archive_uri: str, member: str) -> str:
    """The URI of a file inside an archive."""
    return f"{archive_uri}{ARCHIVE_SEPARATOR}{member}"


def split_member_uri(uri: str) -> tuple[str, str] | None:
    """``(archive URI, path inside)`` of a member's URI; None for any other URI."""
    match = MEMBER_URI.match(uri)
    return (match["archive"], match["member"]) if match else None


def within_archive(uri: str, archive_uri: str) -> bool:
    """Whether ``uri`` names a file inside the archive ``archive_uri``."""
    return uri.startswith(archive_uri + ARCHIVE_SEPARATOR)


def with_archives_unpacked(entries: list[storage.FileEntry]) -> list[storage.FileEntry]:
    """The entries with each zip archive among them replaced by the files it holds; an archive that
    does not open (damaged, or no zip at all) stays as itself."""
    listed: list[storage.FileEntry] = []
    for entry in entries:
        members = archive_members(entry) if is_archive(entry.uri) else None
        listed.extend([entry] if members is None else members)
    return listed


def archive_members(archive: storage.FileEntry) -> list[storage.FileEntry] | None:
    """The files a zip archive holds, as listed entries; None when it is not an archive to unpack
    (it does not open, or it is a package format such as DOCX)."""
    try:
        with open_zip(archive.uri) as package:
            infos = package.infolist()
    except (OSError, *DAMAGED_ZIP_ERRORS) as error:
        logger.warning("%s does not open as a zip archive (%s: %s): set aside as it is",
                       archive.uri, type(error).__name__, error)  # fmt: skip
        return None
    if PACKAGE_MEMBERS & {info.filename for info in infos}:
        return None
    members = [
        storage.FileEntry(member_uri(archive.uri, info.filename), info.file_size, archive.modified)
        for info in infos
        if is_document_member(info)
    ]
    logger.info("%s holds %d file(s) to ingest", archive.uri, len(members))
    return members


def is_document_member(info: zipfile.ZipInfo) -> bool:
    """A file in the archive (no folder, hidden file, macOS resource copy or path leaving the archive)."""
    parts = info.filename.split("/")
    if info.is_dir() or info.filename.startswith("/") or ".." in parts:
        return False
    return not any(part.startswith(".") or part == "__MACOSX" for part in parts)


def zip_members(data: bytes, max_bytes: int) -> list[tuple[str, bytes]] | None:
    """The files of a zip archive held in memory (an e-mail's attachment) and their bytes, as many as
    inflate to ``max_bytes`` together; None when it is not an archive to unpack. A member that is
    encrypted, damaged or past what is left of ``max_bytes`` is left out."""
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
        infos = package.infolist()
    except DAMAGED_ZIP_ERRORS:
        return None
    if PACKAGE_MEMBERS & {info.filename for info in infos}:
        return None
    members, left = [], max_bytes
    for info in filter(is_document_member, infos):
        try:
            content = inflate_member(package, info, left)
        except ParseError:
            continue
        members.append((info.filename, content))
        left -= len(content)
    return members


class ListedFileReader:
    """Reads listed files: a plain file whole, a member of an archive inflated from it. The last
    ``keep_open`` archives stay open, so an archive's directory is fetched once for all the files
    read from it (files of one archive come one after another in a listing), not once per file."""

    def __init__(self, keep_open: int = 4):
        self.keep_open = keep_open
        self.archives: OrderedDict[str, tuple[Any, zipfile.ZipFile]] = OrderedDict()

    def read(self, uri: str, max_bytes: int) -> bytes:
        """The bytes of the listed file at ``uri``.

        Raises:
            OSError: the file or its archive cannot be read (FileNotFoundError: the member is gone).
            ParseError: the member is encrypted, damaged, or inflates past ``max_bytes``.
        """
        member = split_member_uri(uri)
        if member is None:
            return storage.read_bytes(uri)
        archive_uri, name = member
        package = self.archive(archive_uri)
        try:
            info = package.getinfo(name)
        except KeyError:
            raise FileNotFoundError(f"{name} is no longer in {archive_uri}") from None
        return inflate_member(package, info, max_bytes)

    def archive(self, uri: str) -> zipfile.ZipFile:
        """The archive at ``uri``, opened once while it is among the last ``keep_open`` used."""
        if uri in self.archives:
            self.archives.move_to_end(uri)
            return self.archives[uri][1]
        location = storage.resolve(uri)
        raw = location.filesystem.open_input_file(location.path)
        try:
            package = zipfile.ZipFile(raw)
        except BaseException:
            raw.close()
            raise
        self.archives[uri] = (raw, package)
        while len(self.archives) > self.keep_open:
            self._close(*self.archives.popitem(last=False)[1])
        return package

    def close(self) -> None:
        while self.archives:
            self._close(*self.archives.popitem()[1])

    @staticmethod
    def _close(raw, package: zipfile.ZipFile) -> None:
        package.close()
        raw.close()


def inflate_member(package: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """A member's bytes, inflated no further than one byte past ``max_bytes`` (a zip bomb's declared
    size may lie)."""
    if info.flag_bits & 0x1:
        raise ParseError("encrypted zip member: it needs a password (unzip it, or zip it again without one)")
    try:
        with package.open(info) as stream:
            data = stream.read(max_bytes + 1)
    except DAMAGED_ZIP_ERRORS as error:
        raise ParseError(f"corrupt zip member: {type(error).__name__}: {error}") from error
    if len(data) > max_bytes:
        raise ParseError(f"oversize: zip member inflates past max_file_bytes={max_bytes}")
    return data


@contextmanager
def open_zip(uri: str) -> Iterator[zipfile.ZipFile]:
    """A zip archive opened for random access: on S3, ranged reads of what is used, not the whole object."""
    location = storage.resolve(uri)
    with location.filesystem.open_input_file(location.path) as raw, zipfile.ZipFile(raw) as package:
        yield package
