"""Index versions in storage: which versions a build keeps, locally and on S3."""

from __future__ import annotations

import json

import pytest

from rayfleet import storage
from rayfleet.retrieval import store


@pytest.mark.parametrize("where", ["local", "s3"])
def test_old_versions_are_pruned_to_the_newest_but_latest_and_a_new_build_is_untouched(where, tmp_path, request):
    root = storage.join(str(tmp_path) if where == "local" else request.getfixturevalue("s3_prefix"), "index")
    names = [f"20261205T070000Z-{suffix}" for suffix in "fedcba"]  # one second's runs: their names do not sort
    for minute, name in enumerate(names):
        manifest = json.dumps({"created_at": f"2026-12-05T07:00:00.{minute:06d}+00:00"}).encode()
        storage.write_bytes(storage.join(store.version_uri(root, name), "manifest.json"), manifest)
    storage.write_bytes(storage.join(root, store.LATEST), names[1].encode())  # rolled back to an old version
    versions = storage.join(root, "versions")
    assert store.prune_versions(root, keep=0) == [] and storage.subfolder_names(versions) == sorted(names)

    assert store.prune_versions(root, keep=2) == [names[0], names[2], names[3]], "oldest first, LATEST's kept"
    assert storage.subfolder_names(versions) == sorted([names[1], *names[4:]])
    assert storage.exists(storage.join(store.version_uri(root, names[1]), "manifest.json")), "LATEST's is kept"
    assert not storage.exists(storage.join(store.version_uri(root, names[0]), "manifest.json"))
    assert store.prune_versions(root, keep=2) == []
