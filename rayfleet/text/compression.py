"""Compressed files (gzip, bzip2, xz): the file inside, to be parsed by its own type.

Document dumps often lie compressed in object stores (``report.txt.gz``, ``pages.html.gz``,
``changelog.gz``, an S3 object stored with gzip encoding under its plain name). A file is
recognised as compressed by its first bytes, whatever its name says; the name of the file
inside is the name without the compression's extension (``report.txt.gz`` is a ``report.txt``),
so the parser is picked as for the plain file::

    name, data, compression = decompressed("s3://bucket/report.txt.gz", data, max_bytes=100 * 2**20)
    document = parse_file(name, data)  # compression: "gzip" (None for a file not compressed)

Inflating stops past ``max_bytes`` (a decompression-bomb guard): such a file, or a damaged
one, raises :class:`ParseError` with the reason.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import zlib
from dataclasses import dataclass
from typing import IO, Callable

from rayfleet.text.document import ParseError


@dataclass(frozen=True)
class Compression:
    """One compression format: how its files start, their extensions and how to open them."""

    name: str
    magic: bytes
    extensions: tuple[str, ...]
    open: Callable[[IO[bytes]], IO[bytes]]


COMPRESSIONS = (
    Compression("gzip", b"\x1f\x8b", (".gz", ".gzip"), lambda raw: gzip.GzipFile(fileobj=raw)),
    Compression("bzip2", b"BZh", (".bz2",), bz2.BZ2File),
    Compression("xz", b"\xfd7zXZ\x00", (".xz",), lzma.LZMAFile),
)
# What a damaged stream raises while it is read (a truncated one: EOFError).
CORRUPT_STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def compression_of(data: bytes) -> Compression | None:
    """The compression format the first bytes announce, if any."""
    for compression in COMPRESSIONS:
        if data.startswith(compression.magic):
            # bzip2's magic is followed by the block size, a digit 1-9: text starting "BZh" is not bzip2.
            if compression.name != "bzip2" or (data[3:4].isdigit() and data[3:4] != b"0"):
                return compression
    return None


def decompressed(name: str, data: bytes, max_bytes: int) -> tuple[str, bytes, str | None]:
    """The name and bytes of the file inside a compressed file, and the compression's name; any other
    file as it is, with None.

    Raises:
        ParseError: a damaged compressed file, one that holds nothing, or one that inflates past ``max_bytes``.
    """
    compression = compression_of(data)
    if compression is None:
        return name, data, None
    inner = inflate(compression, data, max_bytes)
    stem, extension = posixpath.splitext(name)
    return (stem if extension.lower() in compression.extensions else name), inner, compression.name


def inflate(compression: Compression, data: bytes, max_bytes: int) -> bytes:
    """The decompressed bytes, read no further than one byte past ``max_bytes``."""
    try:
        with compression.open(io.BytesIO(data)) as stream:
            inner = stream.read(max_bytes + 1)
    except CORRUPT_STREAM_ERRORS as error:
        raise ParseError(f"corrupt {compression.name} file: {type(error).__name__}: {error}") from error
    if len(inner) > max_bytes:
        raise ParseError(f"oversize: {compression.name} file inflates past max_file_bytes={max_bytes}")
    if not inner:
        raise ParseError(f"empty {compression.name} file (nothing inside)")
    return inner
