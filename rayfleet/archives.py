"""Zip and tar archives among the files to ingest: each file inside is a document of its own.

Document sets often arrive packed (an export of a shared drive, ``handbook.zip`` or
``export.tar.gz`` dropped into the bucket). Ingestion lists an archive as the files it holds,
each named ``<archive URI>!/<path inside>`` (the JAR URL convention), so a member has its own
ledger row, ``doc_id`` and citations, and is skipped, updated or recorded deleted like any listed
file::

    entries = with_archives_unpacked(storage.list_entries("s3://bucket/incoming"))
    # FileEntry("s3://bucket/incoming/handbook.zip!/hr/leave.pdf", 48213, "<the archive's mtime>")
    data = ListedFileReader().read(entries[0].uri, max_bytes=100 * 2**20)

Archives are known by name only: ``.zip``; ``.tar``, ``.tar.gz``/``.tar.gzip``/``.tgz``,
``.tar.bz2``/``.tbz2``/``.tbz``, ``.tar.xz``/``.txz`` (any case; a tar's compression is read from its
first bytes, whatever the name says). No other file is opened at listing time: a tar compressed
under another name (``export.gz``) is one compressed file, set aside as a tar that is not named as
one (name it ``export.tar.gz`` to have its files listed).

What it costs to read them:

- zip: only the central directory (once while the archive stays open in a
  :class:`ListedFileReader`) and the members read are fetched (ranged reads on S3);
- tar: tar has no directory, and a name appended again (``tar -r``) is held twice, its last copy
  the file (as ``tar -x`` leaves it). So listing reads every member's header, and so does a worker,
  once, when it opens the archive, before it reads a member; then each member is read at the place
  its header recorded;
- uncompressed tar: read in reads of 8 MiB (ranged reads on S3), so the headers of many small
  members take a few reads in all; a header past a member larger than that is one more read of
  8 MiB; a member is then a ranged read of its bytes;
- compressed tar: decompressed as it is read, the compressed bytes read 8 MiB at a time, never
  held whole: listing decompresses the whole archive once (no further than ``max_inflated_bytes``,
  16 GiB by default: one that goes on past that, a tar bomb, stays listed as itself and is set aside;
  members are bounded when read), and so does a worker when it opens it; its
  reads then go forward in listing order, one more pass over the archive while it stays open; a
  member before the last one read costs decompressing again from the start.

An open tar holds an 8 MiB buffer (a :class:`ListedFileReader` keeps four archives open).

A member is ``modified`` when its archive is, so a replaced archive is listed anew (members whose
bytes did not change keep their ``doc_id`` and are not parsed again). Folders inside, hidden files
(``.DS_Store``), macOS's ``__MACOSX/`` copies, absolute paths and paths with ``..`` are passed
over, as are a tar's links, devices and pipes; a name a tar holds twice is its last copy; a tar's
name that is not UTF-8 (made on a Latin-1 system) is read as Latin-1. An archive inside an
archive is not opened (its member is set aside as an unknown type).
A ``.zip`` that is really a DOCX, XLSX, PPTX, OpenDocument or EPUB file is a document, not an
archive; an archive that does not open, or a tar cut short (it does not end with its
end-of-archive block), stays listed as itself and is set aside with the reason. A tar found damaged
when a worker reads it (replaced since it was listed) sets each member read aside as ``corrupt tar
archive``; a read from storage that fails there is no damage: the member is left unread for the next
run (:class:`StorageReadError`). Nor is
one that fails while the archive is listed: what it holds is not known this time, so the archive is
left out of that listing (``with_archives_unpacked``'s ``unread``) and none of its files is taken
for deleted.
"""

from __future__ import annotations

import gzip
import io
import logging
import lzma
import re
import tarfile
import zipfile
import zlib
from collections import OrderedDict
from contextlib import closing, contextmanager
from typing import IO, Callable, ContextManager, Iterator, Protocol

from rayfleet import storage
from rayfleet.text.compression import COMPRESSIONS, compression_of
from rayfleet.text.document import ParseError
from rayfleet.text.parsing import OOXML_MAIN_PARTS, TAR_EXTENSIONS

ARCHIVE_SEPARATOR = "!/"
COMPRESSED_EXTENSIONS = tuple(extension for compression in COMPRESSIONS for extension in compression.extensions)
TAR_SUFFIXES = TAR_EXTENSIONS + tuple(f".tar{extension}" for extension in COMPRESSED_EXTENSIONS)
ARCHIVE_SUFFIXES = (".zip", *TAR_SUFFIXES)
# An archive's name ends in .zip or a tar's suffix; the first such name followed by the separator is
# the archive (``raw.xz!/notes.md`` is a plain file under a folder named ``raw.xz!``).
MEMBER_URI = re.compile(
    rf"^(?P<archive>.*?(?:{'|'.join(map(re.escape, ARCHIVE_SUFFIXES))}))!/(?P<member>.+)$", re.IGNORECASE | re.DOTALL
)
# Package formats built on zip that are documents of their own (named .zip by mistake or by a download).
PACKAGE_MEMBERS = {"mimetype", *OOXML_MAIN_PARTS}
# What reading a damaged archive or member raises (a bad CRC, a truncated stream, a bad header).
DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, ValueError, NotImplementedError)
# (bz2 raises a plain OSError for bad data, taken for damage only when no read from storage failed:
# bad_data_as_damage, bounded_member_read.)
DAMAGED_TAR_ERRORS = (tarfile.TarError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, EOFError)
DAMAGED_ARCHIVE_ERRORS = DAMAGED_ZIP_ERRORS + DAMAGED_TAR_ERRORS
# Reads of a tar, compressed or not, go through a buffer this large: on S3 one ranged read (GET) each,
# so walking a tar's headers (the small members between them come along) is a few large reads, not
# one per header. Held by each open tar (a ListedFileReader keeps four open).
TAR_READ_BUFFER_BYTES = 8 * 2**20
# How far listing a compressed tar may decompress it (its members and headers together, all walked).
MAX_INFLATED_TAR_BYTES = 16 * 2**30
# An archive attached to a mail is walked no further than this many times what its files may come to.
ATTACHMENT_WALK_FACTOR = 4

logger = logging.getLogger(__name__)


def is_archive(uri: str) -> bool:
    """Whether the name is that of a zip or tar archive (any case)."""
    return is_zip(uri) or is_tar(uri)


def is_zip(uri: str) -> bool:
    """Whether the name is that of a zip archive (``.zip``)."""
    return uri.lower().endswith(".zip")


def is_tar(uri: str) -> bool:
    """Whether the name is that of a tar archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``...)."""
    return uri.lower().endswith(TAR_SUFFIXES)


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


def with_archives_unpacked(
    entries: list[storage.FileEntry],
    unread: list[str] | None = None,
    max_inflated_bytes: int = MAX_INFLATED_TAR_BYTES,
) -> list[storage.FileEntry]:
    """The entries with each archive among them replaced by the files it holds; an archive that
    does not open (damaged, cut short, or no archive at all), or a compressed tar whose contents
    inflate past ``max_inflated_bytes`` (a tar bomb), stays as itself.

    Args:
        unread: where to add the URI of an archive whose read from storage fails (the network, S3, the
            archive deleted meanwhile): it is left out, since what it holds is not known this time (not
            damage: its files must not be taken for deleted). Without it, that failure is raised.
    """
    listed: list[storage.FileEntry] = []
    for entry in entries:
        try:
            members = archive_members(entry, max_inflated_bytes) if is_archive(entry.uri) else None
        except OSError as error:
            if unread is None:
                raise
            logger.error("%s could not be read to list its files (%s: %s): left out of this run",
                         entry.uri, type(error).__name__, error)  # fmt: skip
            unread.append(entry.uri)
            continue
        listed.extend([entry] if members is None else members)
    return listed


def archive_members(
    archive: storage.FileEntry, max_inflated_bytes: int = MAX_INFLATED_TAR_BYTES
) -> list[storage.FileEntry] | None:
    """The files an archive holds, as listed entries; None when it is not an archive to unpack
    (it does not open, a compressed tar inflates past ``max_inflated_bytes``, or it is a package
    format such as DOCX).

    Raises:
        OSError: a read from storage failed.
    """
    try:
        with closing(open_archive(archive.uri, max_inflated_bytes)) as opened:
            sizes = opened.documents()
    except InflatesTooFar as error:
        logger.warning("%s is not listed: %s; set aside as it is", archive.uri, error)
        return None
    except DAMAGED_ARCHIVE_ERRORS as error:
        logger.warning("%s does not open as a %s archive (%s: %s): set aside as it is",
                       archive.uri, archive_kind(archive.uri), type(error).__name__, error)  # fmt: skip
        return None
    if sizes is None:
        return None
    members = [storage.FileEntry(member_uri(archive.uri, name), size, archive.modified) for name, size in sizes.items()]
    logger.info("%s holds %d file(s) to ingest", archive.uri, len(members))
    return members


def archive_kind(uri: str) -> str:
    """``zip`` or ``tar``: how the archive at ``uri`` is read."""
    return "zip" if is_zip(uri) else "tar"


def is_document_name(name: str) -> bool:
    """A path inside an archive that names a document: none that is absolute or leaves the archive,
    no hidden file, no macOS resource copy."""
    parts = name.split("/")
    if not name or name.startswith("/") or ".." in parts:
        return False
    return not any(part.startswith(".") or part == "__MACOSX" for part in parts)


def decompressing(raw: IO[bytes]) -> tuple[IO[bytes], bool]:
    """``raw`` (seekable, at its start) read through a buffer of :data:`TAR_READ_BUFFER_BYTES`, and
    whether it is decompressed as it is read (its first bytes are a gzip, bzip2 or xz file's)."""
    buffered = io.BufferedReader(raw, TAR_READ_BUFFER_BYTES)
    compression = compression_of(buffered.peek(8))  # the first read fills the buffer: no read of its own
    return (buffered, False) if compression is None else (compression.open(buffered), True)


class OpenArchive(Protocol):
    """An archive opened for listing and reading its members by name."""

    def documents(self) -> dict[str, int] | None:
        """Every document member's size, by name; None for a package format (DOCX...)."""
        ...

    def read(self, name: str, max_bytes: int) -> bytes:
        """A member's bytes, read no further than one byte past ``max_bytes``.

        Raises:
            KeyError: no member has that name.
            ParseError: the member is encrypted, damaged, or larger than ``max_bytes``.
        """
        ...

    def close(self) -> None: ...


def open_archive(uri: str, max_inflated_bytes: int | None = None) -> OpenArchive:
    """The archive at ``uri``, opened for random access (on S3, ranged reads of what is used);
    ``max_inflated_bytes``: see :class:`OpenTar`."""
    location = storage.resolve(uri)
    raw = location.filesystem.open_input_file(location.path)
    try:
        return opened_archive(uri, raw, max_inflated_bytes)
    except BaseException:
        raw.close()
        raise


def opened_archive(name: str, raw: IO[bytes], max_inflated_bytes: int | None = None) -> OpenArchive:
    """The archive in ``raw`` (seekable), read as a zip or a tar by its ``name``."""
    return OpenZip(raw) if is_zip(name) else OpenTar(raw, max_inflated_bytes)


class OpenZip:
    """A zip archive, its central directory read once."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        try:
            self.package = zipfile.ZipFile(StorageReads(raw))
        except zipfile.BadZipFile as error:  # zipfile takes any OSError reading the directory for damage
            if isinstance(error.__context__, StorageReadError):
                raise error.__context__ from None
            raise

    def documents(self) -> dict[str, int] | None:
        infos = self.package.infolist()
        if PACKAGE_MEMBERS & {info.filename for info in infos}:
            return None
        documents = [info for info in infos if not info.is_dir() and is_document_name(info.filename)]
        return {info.filename: info.file_size for info in documents}

    def read(self, name: str, max_bytes: int) -> bytes:
        return inflate_member(self.package, self.package.getinfo(name), max_bytes)

    def close(self) -> None:
        self.package.close()
        self.raw.close()


class StorageReadError(OSError):
    """A read from storage failed (the network, S3): no damage in the archive."""


class StorageReads(io.RawIOBase):
    """A file opened in storage, a failed read raised as :class:`StorageReadError`, so that it is told
    apart from the plain OSError bz2 raises for bad data."""

    def __init__(self, file: IO[bytes]):
        self.file = file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def readinto(self, buffer) -> int:
        try:
            return self.file.readinto(buffer)
        except OSError as error:
            raise StorageReadError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        self.file.close()
        super().close()


@contextmanager
def bad_data_as_damage() -> Iterator[None]:
    """A plain OSError while a tar is read (bz2's "Invalid data stream") raised as ``tarfile.ReadError``:
    damage, set aside as corrupt; a failed read from storage goes on as the OSError it is (left unread)."""
    try:
        yield
    except (StorageReadError, *DAMAGED_TAR_ERRORS):
        raise
    except OSError as error:
        raise tarfile.ReadError(f"{type(error).__name__}: {error}") from error


class InflatesTooFar(tarfile.ReadError):
    """A compressed tar whose contents run past the bytes it may inflate to while its headers are walked."""


class CappedInflation(io.RawIOBase):
    """A decompressed stream that refuses to go past ``max_bytes``: a read or a seek that would raises
    :class:`InflatesTooFar` having decompressed at most one byte more (a seek, none)."""

    def __init__(self, stream: IO[bytes], max_bytes: int):
        self.stream, self.max_bytes = stream, max_bytes

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.stream.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.tell() + offset if whence == io.SEEK_CUR else None
        if target is None or target > self.max_bytes:
            raise self.past_the_cap()
        return self.stream.seek(target)

    def read(self, size: int = -1) -> bytes:
        left = self.max_bytes - self.tell()
        data = self.stream.read(left + 1 if size is None or size < 0 or size > left else size)
        if self.tell() > self.max_bytes:
            raise self.past_the_cap()
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def past_the_cap(self) -> InflatesTooFar:
        return InflatesTooFar(f"its contents inflate past {self.max_bytes} bytes: a tar bomb, or an export to split "
                              "into smaller archives")  # fmt: skip


class OpenTar:
    """A tar archive, every header read once before its first member is (tar has no directory, and a
    name appended again with ``tar -r`` is held twice: the last copy is the file, as ``tar -x`` leaves it).

    Walking a compressed tar's headers decompresses every member between them: with ``max_inflated_bytes``,
    reading it stops with :class:`InflatesTooFar` where it would go past that (skipping a member seeks: the
    header gives its size, and nothing past the cap is decompressed). An uncompressed tar is walked by
    seeking over its members, whatever their size."""

    def __init__(self, raw: IO[bytes], max_inflated_bytes: int | None = None):
        self.raw = raw
        self.stream, compressed = decompressing(StorageReads(raw))
        if compressed and max_inflated_bytes is not None:
            self.stream = CappedInflation(self.stream, max_inflated_bytes)
        with bad_data_as_damage():
            # Names are decoded the same way on every machine; one that is not UTF-8: tar_member_name.
            self.tar = tarfile.open(fileobj=self.stream, mode="r:", encoding="utf-8")
        self.members: dict[str, tarfile.TarInfo] | None = None  # the document members by name, once walked
        self.damage = ""  # why the walk failed, once it did

    def documents(self) -> dict[str, int]:
        """Raises ``tarfile.ReadError`` for an archive cut short or damaged after its first member."""
        if self.members is None:
            with bad_data_as_damage():
                self.members = self._walk()
        return {name: info.size for name, info in self.members.items()}

    def read(self, name: str, max_bytes: int) -> bytes:
        if self.members is None and not self.damage:
            try:
                self.documents()
            except DAMAGED_TAR_ERRORS as error:
                self.damage = f"corrupt tar archive: {type(error).__name__}: {error}"
        if self.damage:
            raise ParseError(self.damage)
        info = self.members[name]  # KeyError: no such member
        return bounded_member_read(lambda: self._member_stream(info), "tar", DAMAGED_TAR_ERRORS, max_bytes)

    @contextmanager
    def _member_stream(self, info: tarfile.TarInfo) -> Iterator[IO[bytes]]:
        with bad_data_as_damage(), self.tar.extractfile(info) as stream:
            yield stream

    def close(self) -> None:
        self.tar.close()
        self.stream.close()
        self.raw.close()

    def _walk(self) -> dict[str, tarfile.TarInfo]:
        """Every document member's header, by name, in the order of the archive; a name held twice as its
        last copy, in that copy's place (so reading in listing order goes forward)."""
        members: dict[str, tarfile.TarInfo] = {}
        while (info := self.tar.next()) is not None:
            if info.isfile() and is_document_name(name := tar_member_name(info)):
                members.pop(name, None)
                members[name] = info
        if not ends_whole(self.tar):
            raise tarfile.ReadError(f"cut short or damaged at byte {self.tar.offset}: no end-of-archive block there")
        return members


def tar_member_name(info: tarfile.TarInfo) -> str:
    """A member's path inside the archive, without the ``./`` that ``tar -c .`` puts before it. A name
    that is not UTF-8 (a tar made on a Latin-1 system) is read as Latin-1: tarfile holds its bytes as
    lone surrogates, which no Parquet file or Arrow column takes."""
    stored = info.name.encode("utf-8", "surrogateescape")
    try:
        name = stored.decode("utf-8")
    except UnicodeDecodeError:
        name = stored.decode("latin-1")  # every byte a character: two names stay two names
    while name.startswith("./"):
        name = name[2:]
    return name


def ends_whole(tar: tarfile.TarFile) -> bool:
    """Whether the archive, read to its last member, goes on with its end-of-archive (zero) block; one
    cut short or damaged does not (tarfile takes a bad header after the first for the end)."""
    tar.fileobj.seek(tar.offset)
    return tar.fileobj.read(tarfile.BLOCKSIZE) == tarfile.NUL * tarfile.BLOCKSIZE


def archived_files(name: str, data: bytes, max_bytes: int) -> list[tuple[str, bytes]] | None:
    """The files of an archive held in memory (an e-mail's attachment named ``name``) and their bytes,
    as many as inflate to ``max_bytes`` together; None when it is not an archive to unpack. A member
    that is encrypted, damaged or past what is left of ``max_bytes`` is left out."""
    if not is_archive(name):
        return None
    try:
        opened = opened_archive(name, io.BytesIO(data), ATTACHMENT_WALK_FACTOR * max_bytes)
        sizes = opened.documents()
    except DAMAGED_ARCHIVE_ERRORS:
        return None
    return None if sizes is None else read_in_turn(opened, list(sizes), max_bytes)


def read_in_turn(opened: OpenArchive, names: list[str], max_bytes: int) -> list[tuple[str, bytes]]:
    """The named members and their bytes, as many as come to ``max_bytes`` together; one that is
    encrypted, damaged or past what is left is left out."""
    members, left = [], max_bytes
    for name in names:
        try:
            content = opened.read(name, left)
        except ParseError:
            continue
        members.append((name, content))
        left -= len(content)
    return members


class ListedFileReader:
    """Reads listed files: a plain file whole, a member of an archive from it. The last ``keep_open``
    archives stay open, so a zip's directory, or a tar's headers, are read once for all the files read
    from it (files of one archive come one after another in a listing), not once per file."""

    def __init__(self, keep_open: int = 4):
        self.keep_open = keep_open
        self.archives: OrderedDict[str, OpenArchive] = OrderedDict()

    def read(self, uri: str, max_bytes: int) -> bytes:
        """The bytes of the listed file at ``uri``.

        Raises:
            OSError: the file or its archive cannot be read (FileNotFoundError: the member is gone).
            ParseError: the archive is damaged; the member is encrypted, damaged, or inflates past ``max_bytes``.
        """
        member = split_member_uri(uri)
        if member is None:
            return storage.read_bytes(uri)
        archive_uri, name = member
        try:
            return self.archive(archive_uri).read(name, max_bytes)
        except KeyError:
            raise FileNotFoundError(f"{name} is no longer in {archive_uri}") from None

    def archive(self, uri: str) -> OpenArchive:
        """The archive at ``uri``, opened once while it is among the last ``keep_open`` used.

        Raises:
            ParseError: it no longer opens as an archive.
        """
        if uri in self.archives:
            self.archives.move_to_end(uri)
            return self.archives[uri]
        try:
            self.archives[uri] = open_archive(uri)
        except DAMAGED_ARCHIVE_ERRORS as error:
            raise ParseError(f"corrupt {archive_kind(uri)} archive: {type(error).__name__}: {error}") from error
        while len(self.archives) > self.keep_open:
            self.archives.popitem(last=False)[1].close()
        return self.archives[uri]

    def close(self) -> None:
        while self.archives:
            self.archives.popitem()[1].close()


def inflate_member(package: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """A member's bytes, inflated no further than one byte past ``max_bytes`` (a zip bomb's declared
    size may lie)."""
    if info.flag_bits & 0x1:
        raise ParseError("encrypted zip member: it needs a password (unzip it, or zip it again without one)")
    return bounded_member_read(lambda: package.open(info), "zip", DAMAGED_ZIP_ERRORS, max_bytes)


def bounded_member_read(
    open_member: Callable[[], ContextManager[IO[bytes]]], kind: str, damage: tuple[type, ...], max_bytes: int
) -> bytes:
    """The bytes of the member ``open_member`` opens, read no further than one byte past ``max_bytes``.

    Raises:
        ParseError: the member is damaged (one of ``damage`` raised), or its bytes go past ``max_bytes``.
    """
    try:
        with open_member() as stream:
            data = stream.read(max_bytes + 1)
    except StorageReadError:
        raise  # storage failed, not the member: read it again in the next run
    except (*damage, OSError) as error:  # OSError: bz2's bad data, a seek past the archive's end
        raise ParseError(f"corrupt {kind} member: {type(error).__name__}: {error}") from error
    if len(data) > max_bytes:
        raise ParseError(f"oversize: {kind} member inflates past max_file_bytes={max_bytes}")
    return data
