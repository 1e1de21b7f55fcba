"""The storage layer on local paths and on a real S3 API (SeaweedFS)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from rayfleet import storage


def test_local_roundtrip_is_atomic(tmp_path):
    target = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(target, b"payload")
    assert storage.read_bytes(target) == b"payload"
    assert os.listdir(tmp_path / "a") == ["b.bin"]  # no temporary file left behind


def test_list_files_skips_hidden_and_underscore(tmp_path):
    for name in ["x.parquet", "_errors/e.parquet", ".tmp-1", "sub/y.parquet", "z.txt"]:
        storage.write_bytes(str(tmp_path / name), b"1")
    found = storage.list_files(str(tmp_path), suffixes=(".parquet",))
    assert found == [str(tmp_path / "sub" / "y.parquet"), str(tmp_path / "x.parquet")]


def test_list_entries_give_size_and_a_modified_time_that_changes_with_the_file(tmp_path):
    target = str(tmp_path / "doc.txt")
    storage.write_bytes(target, b"12345")
    [entry] = storage.list_entries(str(tmp_path))
    assert (entry.uri, entry.size) == (target, 5) and entry.modified
    os.utime(target, (1_000_000_000, 1_000_000_000))
    assert storage.list_entries(target)[0].modified != entry.modified


def test_a_local_listing_follows_links_to_folders_once_and_never_loops(tmp_path, caplog):
    (tmp_path / "docs" / "a").mkdir(parents=True)
    (tmp_path / "docs" / "a" / "x.txt").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "y.txt").write_text("y")
    (tmp_path / "docs" / "a" / "loop1").symlink_to(tmp_path / "docs")  # links back up: endless for pyarrow
    (tmp_path / "docs" / "a" / "loop2").symlink_to(tmp_path / "docs")
    (tmp_path / "docs" / "shared").symlink_to(tmp_path / "elsewhere")  # a folder linked in on purpose
    (tmp_path / "docs" / "gone.txt").symlink_to(tmp_path / "nowhere.txt")  # a broken link
    os.mkfifo(tmp_path / "docs" / "pipe")
    with caplog.at_level("WARNING"):
        listed = [uri[len(str(tmp_path / "docs")) + 1 :] for uri in storage.list_files(str(tmp_path / "docs"))]
    assert listed == ["a/x.txt", "shared/y.txt"]
    assert "skipping 2 entries" in caplog.text and "gone.txt" in caplog.text and "pipe" in caplog.text


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file or folder"):
        storage.list_files(str(tmp_path / "nothing"))


def test_unsupported_scheme():
    with pytest.raises(ValueError, match="unsupported storage URI"):
        storage.resolve("gs://bucket/key")


def test_s3_roundtrip_list_exists_delete(s3_prefix):
    uri = storage.join(s3_prefix, "docs", "one.txt")
    storage.write_bytes(uri, b"hello s3")
    assert storage.read_bytes(uri) == b"hello s3"
    assert storage.exists(storage.join(s3_prefix, "docs"))
    assert storage.list_files(s3_prefix) == [uri]
    assert storage.list_files(s3_prefix, recursive=False) == []  # its one file is in a subfolder
    assert storage.list_files(storage.join(s3_prefix, "docs"), recursive=False) == [uri]
    [entry] = storage.list_entries(s3_prefix)
    assert entry.size == len(b"hello s3") and entry.modified
    storage.delete(uri)
    assert not storage.exists(uri)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_compressed_files_bytes_are_read_and_written_as_they_are(where, tmp_path, request):
    import gzip

    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_prefix")
    packed = gzip.compress(b"the words inside")
    uri = storage.join(root, "notes.txt.gz")
    storage.write_bytes(uri, packed)
    assert storage.read_bytes(uri) == packed, "not inflated (nor compressed again) by its name"
    assert storage.list_entries(uri)[0].size == len(packed)


def test_s3_keys_keep_every_character_a_file_name_may_hold(s3_prefix):
    names = ["Invoice #12.pdf", "Invoice #13.pdf", "FAQ?.txt", "a;b.txt", "100% done.txt", "naïve café.txt"]
    for number, name in enumerate(names):
        storage.write_bytes(storage.join(s3_prefix, "odd", name), f"file {number}".encode())

    listed = storage.list_files(storage.join(s3_prefix, "odd"))
    assert sorted(uri.rsplit("/", 1)[1] for uri in listed) == sorted(names), "no name cut at '#' or '?'"
    for number, name in enumerate(names):
        assert storage.read_bytes(storage.join(s3_prefix, "odd", name)) == f"file {number}".encode()
    assert storage.s3_path("s3://bucket//reports/Q3 #2?.pdf") == "bucket/reports/Q3 #2?.pdf"


def test_s3_credentials_come_from_environment(s3_prefix, monkeypatch):
    uri = storage.join(s3_prefix, "secret.txt")
    storage.write_bytes(uri, b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(OSError, match="ACCESS_DENIED|Access Denied|403"):
        storage.read_bytes(uri)


def test_parquet_files_are_found_by_any_case_suffix_or_by_their_magic_without_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("a.parquet", "B.PARQUET", "c.pq", "000000_0"):
        pq.write_table(pa.table({"x": [1]}), tmp_path / name)
    (tmp_path / "README").write_text("not data")
    (tmp_path / "notes.txt").write_text("not data either")
    found = [os.path.basename(uri) for uri in storage.list_parquet_files(str(tmp_path))]
    assert found == ["000000_0", "B.PARQUET", "a.parquet", "c.pq"]


def test_contains_tells_a_folder_from_a_sibling_with_the_same_prefix(tmp_path):
    assert storage.contains("s3://b/proj", "s3://b/proj/docs") and storage.contains("s3://b/proj/", "s3://b/proj")
    assert not storage.contains("s3://b/proj", "s3://b/project") and not storage.contains("s3://b/proj", str(tmp_path))
    assert storage.contains(str(tmp_path), str(tmp_path / "out"))
    assert not storage.contains(str(tmp_path / "a"), str(tmp_path / "ab"))
    assert storage.contains("s3a://b/x", "s3://b/x/out") and storage.contains("s3://b//x", "s3://b/x/out")
    assert storage.listed_under("s3://b/x", "s3://b/x/out") and not storage.listed_under(
        "s3://b/x", "s3a://b//x/_out/e"
    )


def test_the_write_check_leaves_no_folder_it_made_but_keeps_what_was_there(tmp_path):
    storage.check_writable(str(tmp_path / "registry" / "models"))
    assert list(tmp_path.iterdir()) == [], "the probe and the two folders made for it are gone"

    (tmp_path / "registry").mkdir()
    storage.check_writable(str(tmp_path / "registry" / "models") + "/")
    assert [path.name for path in tmp_path.rglob("*")] == ["registry"], "a folder that was there stays"

    with pytest.raises(storage.OutputLocationError, match="a file is in the way"):
        (tmp_path / "registry" / "taken").write_text("a file")
        storage.check_writable(str(tmp_path / "registry" / "taken" / "models"))
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["registry", "taken"]


def test_a_missing_bucket_is_created(s3_prefix):
    bucket = f"new-bucket-{uuid.uuid4().hex[:8]}"
    assert not storage.exists(f"s3://{bucket}")
    storage.ensure_bucket(f"s3://{bucket}/out/summaries")
    storage.write_bytes(f"s3://{bucket}/out/summaries/x.txt", b"x")
    assert storage.read_bytes(f"s3://{bucket}/out/summaries/x.txt") == b"x"
    storage.ensure_bucket(f"s3://{bucket}/out")  # there already: nothing to do


def test_a_relative_path_in_rays_copy_of_a_jobs_working_dir_is_warned_of_once(tmp_path, monkeypatch, caplog):
    copy = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_0123abcd"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with caplog.at_level("WARNING", logger="rayfleet.storage"):
        storage.write_bytes("out/summaries.parquet", b"x")
        storage.write_bytes("out/summaries.parquet", b"y")
        storage.write_bytes(str(tmp_path / "kept.parquet"), b"z")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "out/summaries.parquet is a relative path" in warnings[0]
    assert "removed with the Ray session" in warnings[0]

    monkeypatch.chdir(tmp_path)  # an ordinary folder: relative paths are the user's own
    with caplog.at_level("WARNING", logger="rayfleet.storage"):
        caplog.clear()
        storage.write_bytes("elsewhere.parquet", b"x")
    assert not caplog.records


def test_a_write_during_a_short_s3_outage_is_retried_until_the_server_is_back(tmp_path, monkeypatch):
    from tests.conftest import unstarted_local_s3

    server = unstarted_local_s3(tmp_path / "s3")  # a server of its own: this test stops it
    server.start()
    try:
        for name, value in server.environment().items():
            monkeypatch.setenv(name, value)
        server.create_bucket("outage")
        server.stop()
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        with pytest.raises(OSError, match="NETWORK_CONNECTION"):
            storage.write_bytes("s3://outage/once.txt", b"lost")

        monkeypatch.delenv("AWS_MAX_ATTEMPTS")  # the default's retries
        outcome = {}
        writer = threading.Thread(target=lambda: outcome.update(error=write_error("s3://outage/kept.txt")))
        writer.start()
        time.sleep(2.0)  # ~3 s of outage with the restart: pyarrow's own 3 attempts give up within it
        server.start()
        writer.join(timeout=120)
        assert outcome == {"error": None}, "the write waited out the outage"
        assert storage.read_bytes("s3://outage/kept.txt") == b"kept"
    finally:
        server.stop()


def write_error(uri: str) -> Exception | None:
    """What writing ``uri`` raised, if anything."""
    try:
        storage.write_bytes(uri, b"kept")
    except Exception as error:
        return error
    return None


@pytest.mark.parametrize("value", ["0", "-1", "many", "2.5"])
def test_a_bad_attempt_count_is_refused_with_its_name(value, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", value)
    with pytest.raises(ValueError, match=f"AWS_MAX_ATTEMPTS must be a whole number of at least 1, not '{value}'"):
        storage.resolve("s3://bucket/key")


def test_a_folder_without_parquet_is_a_missing_input_and_a_value_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "_SUCCESS").write_bytes(b"")
    with pytest.raises(storage.NoParquetFilesError, match="no Parquet files") as raised:
        storage.list_parquet_files(str(tmp_path))
    assert isinstance(raised.value, FileNotFoundError) and isinstance(raised.value, ValueError)


def test_s3_failures_are_told_by_what_the_user_must_change(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    refused = OSError(
        "When getting information for bucket 'rayfleet': AWS Error ACCESS_DENIED during HeadBucket operation"
    )
    assert storage.s3_failure(refused).startswith("S3 at http://127.0.0.1:8333 refused these credentials")
    other = OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.")
    assert storage.s3_failure(other).startswith("an S3 request to http://127.0.0.1:8333 failed: AWS Error SLOW_DOWN")
    assert storage.s3_failure(OSError("disk full")) is None


def test_a_link_to_a_folder_is_that_folder_and_a_name_that_is_not_utf8_is_said_as_such(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert storage.contains(f"{tmp_path}/real", f"{tmp_path}/alias/summaries")
    assert storage.contains(f"{tmp_path}/alias", f"{tmp_path}/real/summaries")
    assert not storage.contains(f"{tmp_path}/real", f"{tmp_path}/realm")
    latin1 = tmp_path / "real" / "caf\udce9.txt"  # the byte 0xe9 alone: not UTF-8
    latin1.write_text("x")
    with pytest.raises(ValueError, match=r"caf\\xe9\.txt: the name is not UTF-8, which pyarrow cannot open"):
        storage.list_entries(str(latin1))
    (tmp_path / "real" / "ok.txt").write_text("y")
    assert storage.list_files(f"{tmp_path}/alias") == [f"{tmp_path}/alias/ok.txt"]
