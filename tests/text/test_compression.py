"""Compressed files are read as the file inside them, within the size limit."""

from __future__ import annotations

import bz2
import gzip
import lzma

import pytest

from rayfleet.text.compression import compression_of, decompressed
from rayfleet.text.parsing import MIME_HTML, MIME_MARKDOWN, ParseError, parse_file
from tests.text.samples import docx_bytes

MARKDOWN = b"# Quarterly report\n\nRevenue grew by nine percent in the third quarter.\n"
COMPRESSORS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize(("compression", "extension"), [("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz")])
def test_a_compressed_file_is_parsed_as_the_file_inside(compression, extension):
    name, data, found = decompressed(f"s3://docs/report.md{extension}", COMPRESSORS[compression](MARKDOWN), 1 << 20)

    assert (name, data, found) == ("s3://docs/report.md", MARKDOWN, compression)
    document = parse_file(name, data)
    assert document.mime_type == MIME_MARKDOWN and document.title == "Quarterly report"
    assert "nine percent" in document.text


def test_the_bytes_decide_not_the_name():
    html = b"<!doctype html><html><head><title>Notes</title></head><body><p>Hello there.</p></body></html>"
    # Stored gzip-encoded under its plain name (as S3 objects uploaded with Content-Encoding: gzip are).
    name, data, found = decompressed("pages/notes", gzip.compress(html), 1 << 20)
    assert (name, data, found) == ("pages/notes", html, "gzip")
    assert parse_file(name, data).mime_type == MIME_HTML
    # A file that is not compressed is passed on as it is, whatever its extension says.
    assert decompressed("plain.txt.gz", MARKDOWN, 1 << 20) == ("plain.txt.gz", MARKDOWN, None)
    # Office files are zips, not compressed files: left to their parser.
    assert compression_of(docx_bytes()) is None
    # Text that happens to start like bzip2's magic is not bzip2.
    assert compression_of(b"BZh is how this note starts") is None


def test_a_file_inflating_past_the_limit_is_refused_without_inflating_it_all():
    bomb = gzip.compress(b"\0" * (8 << 20))  # 8 MiB of zeros in about 8 KiB

    with pytest.raises(ParseError, match=r"oversize: gzip file inflates past max_file_bytes=1048576"):
        decompressed("bomb.txt.gz", bomb, 1 << 20)
    assert decompressed("bomb.txt.gz", bomb, 8 << 20)[1] == b"\0" * (8 << 20), "exactly at the limit is allowed"


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_a_damaged_or_empty_compressed_file_is_a_clear_parse_error(compression):
    whole = COMPRESSORS[compression](MARKDOWN * 50)

    with pytest.raises(ParseError, match=rf"^corrupt {compression} file: "):
        decompressed("cut.md.gz", whole[: len(whole) // 2], 1 << 20)
    with pytest.raises(ParseError, match=rf"^empty {compression} file \(nothing inside\)"):
        decompressed("nothing.gz", COMPRESSORS[compression](b""), 1 << 20)
