"""Zip archives listed as the files they hold and read member by member, locally and on a real S3 API."""

from __future__ import annotations

import io
import zipfile

import pytest

from rayfleet import storage
from rayfleet.archives import ListedFileReader, split_member_uri, with_archives_unpacked
from rayfleet.ingestion import ChunkingConfig, FileIngester
from rayfleet.text.document import ParseError
from tests.text.samples import docx_bytes

GUIDE = b"# Leave\n\nAsk your manager two weeks ahead.\n"
MEMO = b"The canteen opens at eight."
CONTRACT = docx_bytes()  # once: a DOCX made again may differ in its timestamps


def zipped(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as package:
        for name, data in members.items():
            package.writestr(name, data)
    return buffer.getvalue()


def handbook() -> bytes:
    return zipped({
        "hr/": b"", "hr/leave.md": GUIDE, "hr/contract.docx": CONTRACT, "memo.txt": MEMO,
        "__MACOSX/hr/._leave.md": b"\x00\x05\x16\x07", ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "old/archive.zip": zipped({"deep.txt": b"not opened"}),
    })  # fmt: skip


@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_archive_is_listed_as_its_files_and_each_is_read_from_it(where, tmp_path, request):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_prefix")
    storage.write_bytes(storage.join(root, "handbook.zip"), handbook())
    storage.write_bytes(storage.join(root, "plain.txt"), MEMO)

    entries = with_archives_unpacked(storage.list_entries(root))

    archive = storage.join(root, "handbook.zip")
    modified = storage.list_entries(archive)[0].modified
    assert [entry.uri for entry in entries] == [
        f"{archive}!/hr/leave.md", f"{archive}!/hr/contract.docx", f"{archive}!/memo.txt",
        f"{archive}!/old/archive.zip", storage.join(root, "plain.txt"),
    ], "folders, macOS copies and hidden files are passed over; an archive inside is one file"  # fmt: skip
    assert {entry.modified for entry in entries[:4]} == {modified}, "a member changes when its archive does"
    assert entries[0].size == len(GUIDE)
    reader = ListedFileReader()
    assert reader.read(entries[0].uri, 10_000) == GUIDE
    assert reader.read(entries[1].uri, 100_000) == CONTRACT
    assert reader.read(entries[4].uri, 10_000) == MEMO


def test_a_member_uri_names_its_archive_and_the_path_inside():
    assert split_member_uri("s3://b/in/Hand Book.ZIP!/a/b!/c.md") == ("s3://b/in/Hand Book.ZIP", "a/b!/c.md")
    assert split_member_uri("s3://b/wow!/notes.md") is None, "a '!' folder outside an archive is a folder"
    assert split_member_uri("/data/x.zip") is None


def test_an_archive_stays_open_for_the_files_read_from_it_and_the_least_recent_is_closed(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.zip").write_bytes(zipped({"one.txt": name.encode(), "two.txt": name.encode() * 2}))
    reader = ListedFileReader(keep_open=2)
    first = reader.archive(f"{tmp_path}/a.zip")
    assert reader.read(f"{tmp_path}/a.zip!/two.txt", 100) == b"aa"
    assert reader.archive(f"{tmp_path}/a.zip") is first, "its directory is not read again"
    assert [reader.read(f"{tmp_path}/{name}.zip!/one.txt", 100) for name in "bc"] == [b"b", b"c"]
    assert first.fp is None and list(reader.archives) == [f"{tmp_path}/b.zip", f"{tmp_path}/c.zip"]
    reader.close()
    assert not reader.archives


def test_a_zip_that_is_a_document_or_does_not_open_stays_itself(tmp_path):
    (tmp_path / "report.zip").write_bytes(CONTRACT)  # a DOCX saved as .zip
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not a zip at all")
    entries = with_archives_unpacked(storage.list_entries(str(tmp_path)))
    assert [entry.uri for entry in entries] == [str(tmp_path / "broken.zip"), str(tmp_path / "report.zip")]


def test_a_bomb_an_encrypted_and_a_missing_member_are_refused_with_the_reason(tmp_path):
    bomb = zipped({"zeros.txt": bytes(5_000_000)})
    (tmp_path / "bomb.zip").write_bytes(bomb)
    reader = ListedFileReader()
    with pytest.raises(ParseError, match="oversize: zip member inflates past max_file_bytes=1000000"):
        reader.read(f"{tmp_path}/bomb.zip!/zeros.txt", 1_000_000)
    (tmp_path / "locked.zip").write_bytes(with_encrypted_flag(zipped({"secret.txt": MEMO}, zipfile.ZIP_STORED)))
    with pytest.raises(ParseError, match="encrypted zip member"):
        reader.read(f"{tmp_path}/locked.zip!/secret.txt", 10_000)
    with pytest.raises(FileNotFoundError, match="gone.txt is no longer in"):
        reader.read(f"{tmp_path}/bomb.zip!/gone.txt", 10_000)


def with_encrypted_flag(data: bytes) -> bytes:
    """The archive with each member marked encrypted (bit 0 of the general-purpose flags), as a
    password-protected zip's are."""
    data = bytearray(data)
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        data[start + flag_offset] |= 0x1
    return bytes(data)


def test_the_ingester_reads_members_and_sets_aside_a_bad_one_with_its_reason(tmp_path):
    (tmp_path / "pack.zip").write_bytes(zipped({"guide.md": GUIDE, "zeros.txt": bytes(3_000)}))
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=2_000, run_id="r1")
    guide, zeros = with_archives_unpacked(storage.list_entries(str(tmp_path)))

    result = ingester.ingest(guide, {})
    assert result.document["source"] == f"{tmp_path}/pack.zip!/guide.md"
    assert "two weeks ahead" in result.document["text"] and result.document["title"] == "Leave"
    assert result.chunks and {chunk["source"] for chunk in result.chunks} == {guide.uri}

    refused = ingester.ingest(storage.FileEntry(zeros.uri, 10, zeros.modified), {})  # a declared size that lies
    assert refused.error["error"] == "oversize: zip member inflates past max_file_bytes=2000"
    assert refused.ledger["outcome"] == "error" and refused.ledger["source"] == zeros.uri
