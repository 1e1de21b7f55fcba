"""A serving index follows new versions: swapped in whole, in the background, never lost on a bad one."""

from __future__ import annotations

import logging
import time

from rayfleet.retrieval import store
from rayfleet.retrieval.latest import LatestRetriever
from tests.retrieval.index_versions import write_index_version


def wait_for(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_new_version_is_loaded_and_its_chunks_are_found(tmp_path, acl_chunk_table, embedder):
    root = str(tmp_path)
    write_index_version(root, acl_chunk_table.slice(0, 20), embedder, "v1")
    index = LatestRetriever(root, refresh_s=0, hybrid=True)
    new_chunk = acl_chunk_table.to_pylist()[30]
    first_hits = index.current().search(new_chunk["text"], k=5)
    assert index.version == "v1" and new_chunk["chunk_id"] not in {hit.chunk_id for hit in first_hits}

    write_index_version(root, acl_chunk_table.slice(0, 40), embedder, "v2")
    assert index.current().manifest.version == "v1", "refresh_s=0 never looks again by itself"
    assert index.refresh() and index.version == "v2"
    assert index.current().search(new_chunk["text"], k=1, hybrid=True)[0].chunk_id == new_chunk["chunk_id"]
    assert not index.refresh(), "nothing newer: nothing loaded"


def test_a_new_version_is_swapped_in_whole_in_the_background_with_no_query_asking(tmp_path, acl_chunk_table, embedder):
    """On a quiet server the first question about a new document is answered from the new version."""
    root = str(tmp_path)
    write_index_version(root, acl_chunk_table.slice(0, 20), embedder, "v1")
    index = LatestRetriever(root, refresh_s=0.2)
    in_hand = index.current()
    write_index_version(root, acl_chunk_table.slice(0, 40), embedder, "v2")
    assert wait_for(lambda: index.retriever.manifest.version == "v2"), "loaded without a query"
    swapped = index.current()
    assert swapped.manifest.version == "v2" and swapped.rows.num_rows == 40 and len(swapped.index) == 40
    assert swapped.embedder is in_hand.embedder, "the same embedding model is not loaded twice"
    assert in_hand.rows.num_rows == 20, "the version in hand was never changed in place"


def test_the_look_for_new_versions_stops_when_the_index_is_closed_or_dropped(tmp_path, acl_chunk_table, embedder):
    import gc
    import threading

    root = str(tmp_path)
    write_index_version(root, acl_chunk_table.slice(0, 10), embedder, "v1")
    index = LatestRetriever(root, refresh_s=0.05)
    index.close()
    write_index_version(root, acl_chunk_table.slice(0, 20), embedder, "v2")
    time.sleep(0.3)
    assert index.version == "v1", "a closed index looks no more"

    def followers() -> set[threading.Thread]:
        return {thread for thread in threading.enumerate() if thread.name == "index-refresh" and thread.is_alive()}

    before = followers()
    dropped = LatestRetriever(root, refresh_s=0.05)
    its_follower = followers() - before
    assert dropped.version == "v2" and len(its_follower) == 1
    del dropped
    gc.collect()
    assert wait_for(lambda: not any(thread.is_alive() for thread in its_follower), timeout_s=5), (
        "the thread ends with its index"
    )


def test_a_broken_new_version_keeps_the_old_one_serving(tmp_path, acl_chunk_table, embedder, caplog):
    root = str(tmp_path)
    write_index_version(root, acl_chunk_table.slice(0, 20), embedder, "v1")
    index = LatestRetriever(root, refresh_s=0.1)
    storage_latest = tmp_path / store.LATEST
    storage_latest.write_text("v9-never-written")  # LATEST pointing at a version that is not there
    time.sleep(0.2)
    with caplog.at_level(logging.ERROR, logger="rayfleet.retrieval.latest"):
        index.current()
        assert wait_for(lambda: "refresh failed; still serving version v1" in caplog.text)
    assert index.version == "v1"
    row = acl_chunk_table.slice(3, 1).to_pylist()[0]
    assert index.current().search(row["text"], k=1)[0].chunk_id == row["chunk_id"]


def test_a_root_with_no_version_yet_is_followed_until_the_first_one_appears(
    tmp_path, acl_chunk_table, embedder, caplog
):
    root = str(tmp_path / "index")
    with caplog.at_level(logging.WARNING, logger="rayfleet.retrieval.latest"):
        index = LatestRetriever(root, refresh_s=0.1)
    assert index.current() is None and index.version is None and "no index version" in caplog.text
    write_index_version(root, acl_chunk_table.slice(0, 10), embedder, "v1")
    assert wait_for(lambda: index.version == "v1")
    row = acl_chunk_table.slice(2, 1).to_pylist()[0]
    assert index.current().search(row["text"], k=1)[0].chunk_id == row["chunk_id"]
