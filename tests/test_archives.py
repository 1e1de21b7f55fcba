"""Zip and tar archives listed as the files they hold and read member by member, locally and on a real S3 API."""

from __future__ import annotations

import dataclasses
import gzip
import io
import random
import tarfile
import zipfile

import pyarrow as pa
import pytest

from rayfleet import storage
from rayfleet.archives import (
    InflatesTooFar,
    ListedFileReader,
    is_archive,
    opened_archive,
    split_member_uri,
    with_archives_unpacked,
)
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
    assert first.package.fp is None and list(reader.archives) == [f"{tmp_path}/b.zip", f"{tmp_path}/c.zip"]
    reader.close()
    assert not reader.archives


def test_a_zip_that_is_a_document_or_does_not_open_stays_itself(tmp_path):
    (tmp_path / "report.zip").write_bytes(CONTRACT)  # a DOCX saved as .zip
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not a zip at all")
    (tmp_path / "empty.zip").write_bytes(b"")  # shorter than a zip's end record: damage, not a failed read
    (tmp_path / "short.zip").write_bytes(b"PK")
    entries = with_archives_unpacked(storage.list_entries(str(tmp_path)), unread := [])
    assert [entry.uri for entry in entries] == [str(tmp_path / name) for name in
                                                ("broken.zip", "empty.zip", "report.zip", "short.zip")]  # fmt: skip
    assert unread == []


def test_an_archive_storage_fails_to_read_at_listing_is_left_out_not_listed_as_itself(tmp_path, monkeypatch):
    """What an archive holds is unknown when its read fails: listing it as itself would ingest it as a
    document and take its files for deleted."""
    archive = tmp_path / "handbook.zip"
    archive.write_bytes(handbook())
    (tmp_path / "memo.txt").write_bytes(MEMO)
    entries = storage.list_entries(str(tmp_path))

    class FailingOpen:  # fault injection: storage fails to open the archive
        def open_input_file(self, path: str):
            raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: connection reset")

    resolve = storage.resolve
    monkeypatch.setattr(storage, "resolve", lambda uri: dataclasses.replace(resolve(uri), filesystem=FailingOpen()))
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        with_archives_unpacked(entries)
    unread: list[str] = []
    assert with_archives_unpacked(entries, unread) == [entries[1]] and unread == [str(archive)]


@pytest.mark.parametrize("name", ["handbook.zip", "export.tar.gz"])
def test_a_read_that_fails_part_way_through_listing_an_archive_is_no_damage(tmp_path, monkeypatch, name):
    """zipfile takes any OSError while it reads the directory for a bad zip: a dropped connection there must
    still leave the archive unread, not listed as itself (its files would be recorded deleted)."""
    data = handbook() if name.endswith(".zip") else tarred({"a.md": GUIDE}, "gz")
    (tmp_path / name).write_bytes(data)
    entries = storage.list_entries(str(tmp_path))

    class DroppedConnection(io.BytesIO):  # fault injection: every read fails, the open succeeded
        def readinto(self, buffer) -> int:
            raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: connection reset")

        def read(self, size=-1) -> bytes:
            raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: connection reset")

    class DroppingFilesystem:  # fault injection
        def open_input_file(self, path: str) -> DroppedConnection:
            return DroppedConnection(data)

    resolve = storage.resolve
    monkeypatch.setattr(
        storage, "resolve", lambda uri: dataclasses.replace(resolve(uri), filesystem=DroppingFilesystem())
    )
    unread: list[str] = []
    assert with_archives_unpacked(entries, unread) == [] and unread == [str(tmp_path / name)]


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


def tarred(members: dict[str, bytes], compression: str = "", extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    """A tar archive (``compression``: "", "gz", "bz2" or "xz") of the files, then the ``extra`` entries
    (folders, links, devices: no data)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as package:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            package.addfile(info, io.BytesIO(data))
        for info in extra:
            package.addfile(info)
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


INNER_ZIP = zipped({"deep.txt": b"not opened"})  # once: a zip made again may differ in its timestamps


def tar_handbook(compression: str = "") -> bytes:
    """The handbook as ``tar -c .`` packs it (``./`` names), with what is no document: a folder, links,
    devices, a pipe, macOS copies, hidden files and paths leaving the archive."""
    return tarred(
        {"./hr/leave.md": GUIDE, "./hr/contract.docx": CONTRACT, "./memo.txt": MEMO,
         "./__MACOSX/hr/._leave.md": b"\x00\x05\x16\x07", "./.DS_Store": b"\x00\x00\x00\x01Bud1",
         "./old/archive.zip": INNER_ZIP, "../escape.txt": MEMO, "/etc/abs.txt": MEMO},
        compression,
        extra=(tar_entry("./hr", tarfile.DIRTYPE), tar_entry("./link.md", tarfile.SYMTYPE, "hr/leave.md"),
               tar_entry("./hard.md", tarfile.LNKTYPE, "./hr/leave.md"), tar_entry("./dev/null", tarfile.CHRTYPE),
               tar_entry("./dev/sda", tarfile.BLKTYPE), tar_entry("./pipe", tarfile.FIFOTYPE)),
    )  # fmt: skip


TAR_NAMES = [("handbook.tar", ""), ("handbook.tar.gz", "gz"), ("handbook.tar.gzip", "gz"), ("HANDBOOK.TGZ", "gz"),
             ("handbook.tar.bz2", "bz2"), ("handbook.tbz2", "bz2"), ("handbook.tbz", "bz2"), ("handbook.tar.xz", "xz"),
             ("handbook.txz", "xz"),
             ("handbook.tar", "gz")]  # fmt: skip


@pytest.mark.parametrize(("name", "compression"), TAR_NAMES)
def test_a_tar_is_listed_as_its_regular_files_and_each_is_read_from_it(name, compression, tmp_path):
    check_tar_listed_and_read(str(tmp_path), name, compression)


@pytest.mark.parametrize(("name", "compression"), [("handbook.tar", ""), ("handbook.tar.gz", "gz")])
def test_a_tar_on_s3_is_listed_and_read(name, compression, s3_prefix):
    check_tar_listed_and_read(s3_prefix, name, compression)


def check_tar_listed_and_read(root: str, name: str, compression: str) -> None:
    archive = storage.join(root, name)
    storage.write_bytes(archive, tar_handbook(compression))
    storage.write_bytes(storage.join(root, "plain.txt"), MEMO)

    entries = with_archives_unpacked(storage.list_entries(root))

    modified = storage.list_entries(archive)[0].modified
    assert [entry.uri for entry in entries] == [
        f"{archive}!/hr/leave.md", f"{archive}!/hr/contract.docx", f"{archive}!/memo.txt",
        f"{archive}!/old/archive.zip", storage.join(root, "plain.txt"),
    ], "folders, links, devices, macOS copies, hidden files and paths outside are passed over"  # fmt: skip
    assert {entry.modified for entry in entries[:4]} == {modified}, "a member changes when its archive does"
    assert [entry.size for entry in entries[:3]] == [len(GUIDE), len(CONTRACT), len(MEMO)]
    reader = ListedFileReader()
    assert [reader.read(entry.uri, 100_000) for entry in reversed(entries)][1:] == [
        INNER_ZIP, MEMO, CONTRACT, GUIDE,
    ], "read in any order"  # fmt: skip
    assert split_member_uri(entries[0].uri) == (archive, "hr/leave.md")


def test_tar_member_uris_name_their_archive_whatever_its_suffix():
    assert split_member_uri("s3://b/in/Hand Book.TAR.GZ!/a/b!/c.md") == ("s3://b/in/Hand Book.TAR.GZ", "a/b!/c.md")
    for suffix in ("tar", "tgz", "tar.gz", "tar.gzip", "tar.bz2", "tbz2", "tbz", "tar.xz", "txz", "TXZ"):
        assert split_member_uri(f"/data/export.{suffix}!/notes.md") == (f"/data/export.{suffix}", "notes.md")
    for suffix in ("gz", "gzip", "bz2", "xz", "txt.gz"):  # a compressed file is no archive: a folder named "raw.xz!"
        assert split_member_uri(f"/data/raw.{suffix}!/notes.md") is None
    assert split_member_uri("s3://b/Q3 backup.gz!/handbook.zip!/hr/leave.md") == (
        "s3://b/Q3 backup.gz!/handbook.zip", "hr/leave.md",
    )  # fmt: skip
    assert [is_archive(name) for name in ("a.tar", "a.TAR.GZ", "a.tgz", "a.tar.bz2", "a.txz", "a.gz", "a.txt")] == [
        True, True, True, True, True, False, False,
    ], "a compressed file is an archive by its name only when it is a tar's"  # fmt: skip


def test_a_compressed_tar_is_walked_once_then_read_forward_in_listing_order(tmp_path, monkeypatch):
    import _compression

    rewinds = []
    rewind = _compression.DecompressReader._rewind
    monkeypatch.setattr(_compression.DecompressReader, "_rewind", lambda self: rewinds.append(1) or rewind(self))
    files = {f"part{index}.txt": f"part {index} ".encode() * 5_000 for index in range(5)}
    (tmp_path / "parts.tar.xz").write_bytes(tarred(files, "xz"))
    entries = with_archives_unpacked(storage.list_entries(str(tmp_path)))
    reader = ListedFileReader()
    opened = reader.archive(f"{tmp_path}/parts.tar.xz")

    assert [reader.read(entry.uri, 100_000) for entry in entries] == list(files.values())
    assert reader.archive(f"{tmp_path}/parts.tar.xz") is opened
    assert len(rewinds) == 1, "its headers walked once, then one forward pass"
    assert reader.read(entries[1].uri, 100_000) == files["part1.txt"] and len(rewinds) == 2, "one behind: read again"
    reader.close()
    assert not reader.archives and opened.raw.closed


def test_a_tar_that_is_cut_short_damaged_or_no_tar_stays_itself_and_is_set_aside_with_the_reason(tmp_path):
    whole = tarred({"guide.md": GUIDE, "memo.txt": MEMO * 100})
    damaged = {
        "cut-in-data.tar": whole[: 512 * 3 + 100],  # inside memo.txt's bytes
        "cut-at-header.tar": whole[: 512 * 2],  # after guide.md: memo.txt and the end are gone
        "cut-in-header.tar": whole[: 512 * 2 + 300],
        "bad-header.tar": whole[: 512 * 2] + b"x" * 512 + whole[512 * 3 :],  # memo.txt's header overwritten
        "no-tar.tar": b"just some words, not a tar at all " * 40,
        "cut.tar.gz": tarred({"guide.md": GUIDE, "memo.txt": MEMO * 100}, "gz")[:-20],
        "no-tar.tgz": gzip.compress(b"just some words, not a tar at all " * 40),
    }
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)

    entries = with_archives_unpacked(storage.list_entries(str(tmp_path)))

    assert [entry.uri for entry in entries] == [str(tmp_path / name) for name in sorted(damaged)]
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=100_000, run_id="r1")
    reasons = {entry.uri.rsplit("/", 1)[1]: ingester.ingest(entry, {}).error["error"] for entry in entries}
    assert reasons["cut.tar.gz"].startswith("corrupt gzip file")
    assert {name: reason for name, reason in reasons.items() if name != "cut.tar.gz"} == dict.fromkeys(
        set(damaged) - {"cut.tar.gz"},
        "tar archive that does not open (damaged, cut short, or not a tar file): its files cannot be listed",
    )


def test_a_compressed_tar_inflating_past_the_cap_is_not_walked_past_it_and_is_set_aside(tmp_path, caplog):
    """Listing walks a compressed tar's headers by decompressing all between them: a bomb would take hours."""
    members = {"guide.md": GUIDE, "zeros.txt": bytes(3_000_000), "memo.txt": MEMO}
    (tmp_path / "bomb.tar.gz").write_bytes(tarred(members, "gz"))
    (tmp_path / "plain.tar").write_bytes(tarred(members))  # walked by seeking: no cap
    with caplog.at_level("WARNING", logger="rayfleet.archives"):
        entries = with_archives_unpacked(storage.list_entries(str(tmp_path)), max_inflated_bytes=1_000_000)
    bomb = str(tmp_path / "bomb.tar.gz")
    assert {entry.uri for entry in entries} == {bomb} | {f"{tmp_path / 'plain.tar'}!/{name}" for name in members}
    assert f"{bomb} is not listed: its contents inflate past 1000000 bytes: a tar bomb" in caplog.text

    opened = opened_archive("bomb.tar.gz", io.BytesIO(tarred(members, "gz")), max_inflated_bytes=1_000_000)
    with pytest.raises(InflatesTooFar):
        opened.documents()
    assert opened.stream.tell() < 10_000, "stopped at the header, before decompressing the member"
    long_name = io.BytesIO()  # a GNU long-name header holds its name as data, read whole by tarfile
    with tarfile.open(fileobj=long_name, mode="w:gz", format=tarfile.GNU_FORMAT) as package:
        package.addfile(tarfile.TarInfo("x" * 3_000_000))
    with pytest.raises(InflatesTooFar):  # at its first header, which tarfile reads on opening
        opened_archive("names.tar.gz", io.BytesIO(long_name.getvalue()), max_inflated_bytes=1_000_000).documents()
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=2_000_000, run_id="r1")
    bomb_entry = next(entry for entry in entries if entry.uri == bomb)
    assert ingester.ingest(bomb_entry, {}).error["error"] == "oversize: gzip file inflates past max_file_bytes=2000000"


def test_a_tar_bomb_a_cut_and_a_missing_member_are_refused_with_the_reason(tmp_path):
    (tmp_path / "bomb.tar.gz").write_bytes(tarred({"zeros.txt": bytes(5_000_000)}, "gz"))
    reader = ListedFileReader()
    with pytest.raises(ParseError, match="oversize: tar member inflates past max_file_bytes=1000000"):
        reader.read(f"{tmp_path}/bomb.tar.gz!/zeros.txt", 1_000_000)
    with pytest.raises(FileNotFoundError, match="gone.txt is no longer in"):
        reader.read(f"{tmp_path}/bomb.tar.gz!/gone.txt", 10_000)
    (tmp_path / "cut.tar").write_bytes(tarred({"guide.md": GUIDE, "memo.txt": MEMO * 100})[: 512 * 3 + 100])
    with pytest.raises(ParseError, match="corrupt tar archive: ReadError: unexpected end of data"):
        reader.read(f"{tmp_path}/cut.tar!/memo.txt", 10_000)  # listed whole, cut short since
    with pytest.raises(ParseError, match="corrupt tar archive: ReadError: unexpected end of data"):
        reader.read(f"{tmp_path}/cut.tar!/guide.md", 10_000)  # before the cut, but a later copy may be lost


@pytest.mark.parametrize("compression", ["", "gz"])
def test_a_name_a_tar_holds_twice_is_its_last_copy_as_tar_x_leaves_it(compression, tmp_path):
    """``tar -r`` appends a file again under its name: listing and reading alike take the last copy."""
    (tmp_path / "pack.tar").write_bytes(tarred({"notes.md": b"# Notes\n\nold", "memo.txt": MEMO}))
    with tarfile.open(tmp_path / "pack.tar", "a") as package:  # as tar -r does
        info = tarfile.TarInfo("./notes.md")
        info.size = len(b"# Notes\n\nnew, longer")
        package.addfile(info, io.BytesIO(b"# Notes\n\nnew, longer"))
    if compression:
        (tmp_path / "pack.tar").write_bytes(gzip.compress((tmp_path / "pack.tar").read_bytes()))
    archive = f"{tmp_path}/pack.tar"

    entries = with_archives_unpacked(storage.list_entries(archive))

    assert [(entry.uri, entry.size) for entry in entries] == [
        (f"{archive}!/memo.txt", len(MEMO)), (f"{archive}!/notes.md", len(b"# Notes\n\nnew, longer")),
    ], "once, in the last copy's place and size"  # fmt: skip
    assert ListedFileReader().read(entries[1].uri, 10_000) == b"# Notes\n\nnew, longer", "a worker's first read"
    reader = ListedFileReader()
    assert [reader.read(entry.uri, 10_000) for entry in entries] == [MEMO, b"# Notes\n\nnew, longer"]


class CountedReads(io.BytesIO):
    """An archive's bytes, counting the reads that fetch some (on S3, each is one ranged GET; pyarrow
    answers a read at the end without one)."""

    reads = 0

    def readinto(self, buffer) -> int:
        count = super().readinto(buffer)
        self.reads += count > 0
        return count

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.reads += len(data) > 0
        return data


@pytest.mark.parametrize("compression", ["", "gz"])
def test_walking_a_tar_of_many_small_members_is_a_few_large_reads_not_one_per_header(compression):
    noise = random.Random(0)  # bytes that do not compress: a .tar.gz as large as its tar
    files = {f"docs/{index:03d}.txt": noise.randbytes(80_000) for index in range(150)}
    raw = CountedReads(tarred(files, compression))
    opened = opened_archive("export.tar", raw)

    assert list(opened.documents()) == list(files)
    assert raw.reads <= 3, f"{raw.reads} reads for {len(raw.getvalue()) / 2**20:.1f} MiB"
    assert opened.read("docs/100.txt", 1_000_000) == files["docs/100.txt"]
    assert opened.read("docs/101.txt", 1_000_000) == files["docs/101.txt"] and raw.reads <= 6


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_bad_data_in_a_bzip2_or_lzma_zip_member_is_damage_set_aside_not_a_read_to_retry(tmp_path, compression):
    """bz2 raises a plain OSError for bad data, lzma an LZMAError: the member is corrupt, for good. Taken
    for a failed read from storage, it would fail every run, never set aside."""
    text = random.Random(2).randbytes(200_000).hex().encode()
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", compression=compression) as package:
        package.writestr("report.txt", text)
    with zipfile.ZipFile(archive) as package:
        info = package.getinfo("report.txt")
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2 : start + info.compress_size // 2 + 64] = bytes(64)
    archive.write_bytes(bytes(data))
    [entry] = with_archives_unpacked(storage.list_entries(str(archive)))

    result = FileIngester(ChunkingConfig(), max_file_bytes=1_000_000, run_id="r1").ingest(entry, {})

    assert result.unread is None and result.ledger["outcome"] == "error"
    assert result.error["error"].startswith("corrupt zip member: "), result.error["error"]


def test_bad_data_in_a_bzip2_tar_is_damage_but_a_failed_read_from_storage_is_not(tmp_path, monkeypatch):
    """bz2 raises a plain OSError for bad data: the archive is corrupt. A read from storage that fails
    (the network) must stay an OSError: the file is unreadable, not damaged."""
    noise = random.Random(1)
    good = tarred({f"part{index}.txt": noise.randbytes(300_000) for index in range(6)}, "bz2")
    archive = tmp_path / "export.tar.bz2"
    archive.write_bytes(good)
    entries = with_archives_unpacked(storage.list_entries(str(archive)))
    damaged = bytearray(good)
    damaged[len(good) // 2 : len(good) // 2 + 64] = bytes(64)  # replaced since it was listed
    archive.write_bytes(bytes(damaged))

    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1_000_000, run_id="r1")
    assert ingester.ingest(entries[0], {}).error["error"] == (
        "corrupt tar archive: ReadError: OSError: Invalid data stream"
    )  # fmt: skip

    class DroppedConnection(io.BytesIO):  # fault injection: storage fails every read after the first
        def readinto(self, buffer) -> int:
            if self.tell():
                raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation: connection reset")
            return super().readinto(buffer)

    class DroppingFilesystem:  # fault injection
        def open_input_file(self, path: str) -> DroppedConnection:
            return DroppedConnection(good)

    archive.write_bytes(good)
    resolve = storage.resolve
    monkeypatch.setattr(
        storage, "resolve", lambda uri: dataclasses.replace(resolve(uri), filesystem=DroppingFilesystem())
    )
    with pytest.raises(OSError, match="NETWORK_CONNECTION") as raised:
        ListedFileReader().read(entries[0].uri, 1_000_000)
    assert not isinstance(raised.value, ParseError)
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1_000_000, run_id="r1")  # no archive open
    unread = ingester.ingest(entries[0], {})
    assert unread.unread.startswith("StorageReadError: OSError: AWS") and unread.ledger is unread.error is None


def test_a_tar_member_is_read_no_further_than_one_byte_past_max_bytes(tmp_path, monkeypatch):
    (tmp_path / "big.tar").write_bytes(tarred({"words.txt": b"word " * 200_000}))
    asked = []
    read = tarfile.ExFileObject.read
    monkeypatch.setattr(tarfile.ExFileObject, "read", lambda self, size=-1: asked.append(size) or read(self, size))
    with pytest.raises(ParseError, match="oversize"):
        ListedFileReader().read(f"{tmp_path}/big.tar!/words.txt", 10_000)
    assert asked == [10_001]


def test_the_ingester_reads_tar_members_with_their_own_doc_ids(tmp_path):
    (tmp_path / "pack.tgz").write_bytes(tarred({"guide.md": GUIDE, "copy/guide.md": GUIDE}, "gz"))
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=2_000, run_id="r1")
    guide, copy = with_archives_unpacked(storage.list_entries(str(tmp_path)))

    result = ingester.ingest(guide, {})
    assert result.document["source"] == f"{tmp_path}/pack.tgz!/guide.md"
    assert "two weeks ahead" in result.document["text"] and result.document["title"] == "Leave"
    assert {chunk["source"] for chunk in result.chunks} == {guide.uri}
    assert ingester.ingest(copy, {}).ledger["outcome"] == "duplicate", "same bytes, same document"


def test_a_compressed_file_is_not_opened_at_listing_even_when_it_holds_a_tar(tmp_path, monkeypatch):
    """Tars are known by name: a folder of compressed part files is listed without a read."""
    (tmp_path / "export.gz").write_bytes(tarred({"guide.md": GUIDE}, "gz"))
    (tmp_path / "part-00000.gz").write_bytes(gzip.compress(GUIDE))
    (tmp_path / "raw.xz!").mkdir()  # a folder whose name ends like a compressed file's, then "!"
    (tmp_path / "raw.xz!" / "notes.md").write_bytes(GUIDE)
    entries = storage.list_entries(str(tmp_path))
    opened, resolve = [], storage.resolve
    monkeypatch.setattr(storage, "resolve", lambda uri: opened.append(uri) or resolve(uri))

    assert with_archives_unpacked(entries) == entries and not opened, "no file opened to look inside"
    monkeypatch.undo()
    assert ListedFileReader().read(f"{tmp_path}/raw.xz!/notes.md", 10_000) == GUIDE, "a plain file in that folder"
    ingester = FileIngester(ChunkingConfig(), max_file_bytes=100_000, run_id="r1")
    assert ingester.ingest(entries[0], {}).error["error"].startswith("tar archive under a name that is not a tar's")


def test_a_tar_member_named_in_latin1_is_listed_read_and_committed(tmp_path):
    """A tar made on a Latin-1 system: its names' bytes are no UTF-8; the batch's tables must still be written."""
    from jobs.ingest import IngestConfig, IngestWorker
    from rayfleet.config import load_config
    from rayfleet.tables import read_folder

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as package:
        for name, data in [("café.md", GUIDE), ("menu.txt", MEMO)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            package.addfile(info, io.BytesIO(data))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "export.tar").write_bytes(buffer.getvalue())
    archive = f"{tmp_path}/in/export.tar"

    entries = with_archives_unpacked(storage.list_entries(archive))

    assert [entry.uri for entry in entries] == [f"{archive}!/café.md", f"{archive}!/menu.txt"]
    assert ListedFileReader().read(entries[0].uri, 10_000) == GUIDE
    config = load_config(IngestConfig, [f"input={tmp_path}/in", f"output={tmp_path}/out"])
    batch = pa.Table.from_pylist([{"uri": e.uri, "size": e.size, "modified": e.modified} for e in entries])
    assert IngestWorker(config, "r1", {})(batch)["documents"] == [2]  # ingested, and committed
    assert sorted(read_folder(config.table("documents"), ["source"])["source"].to_pylist()) == [
        entry.uri for entry in entries
    ]  # fmt: skip
