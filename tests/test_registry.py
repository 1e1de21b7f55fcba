"""The artifact registry: versions never overwritten, references, promotion, fetch from S3."""

from __future__ import annotations

import json
import os
import threading

import pytest

from rayfleet import storage
from rayfleet.registry import Registry, RegistryError, parse_ref


def make_adapter_folder(folder, content: str = "weights") -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as handle:
        json.dump({"r": 8}, handle)
    with open(os.path.join(folder, "adapter_model.safetensors"), "w") as handle:
        handle.write(content)
    return str(folder)


@pytest.fixture(params=["local", "s3"])
def registry_root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_prefix") + "/registry"


def test_publish_makes_consecutive_versions_with_metadata(registry_root, tmp_path):
    registry = Registry(registry_root)
    first = registry.publish("acme-qa", make_adapter_folder(tmp_path / "a", "one"), {"base_model": "smollm2"})
    second = registry.publish("acme-qa", make_adapter_folder(tmp_path / "b", "two"), {"base_model": "smollm2"})

    assert (first.version, second.version) == (1, 2)
    assert registry.versions("acme-qa") == [1, 2]
    assert registry.names() == ["acme-qa"]
    assert second.metadata["base_model"] == "smollm2"
    assert second.metadata["version"] == 2 and second.metadata["created_at"]
    first_weights = storage.read_bytes(storage.join(first.uri, "adapter_model.safetensors"))
    assert first_weights == b"one", "publishing version 2 must not touch version 1"


def test_references_resolve_latest_numbered_and_promoted(registry_root, tmp_path):
    registry = Registry(registry_root)
    for content in ("one", "two", "three"):
        registry.publish("acme-qa", make_adapter_folder(tmp_path / content, content), {})

    assert registry.resolve("acme-qa").version == 3
    assert registry.resolve("acme-qa@latest").version == 3
    assert registry.resolve("acme-qa@2").version == 2
    with pytest.raises(RegistryError, match="no promoted version"):
        registry.resolve("acme-qa@promoted")

    registry.promote("acme-qa", 2, {"primary_metric": "f1", "candidate": 0.41, "incumbent": 0.30})
    assert registry.resolve("acme-qa@promoted").version == 2
    decisions = registry.decisions("acme-qa", 2)
    assert decisions[-1]["promoted"] is True and decisions[-1]["candidate"] == 0.41


def test_unknown_names_versions_and_bad_refs_fail_clearly(registry_root, tmp_path):
    registry = Registry(registry_root)
    registry.publish("acme-qa", make_adapter_folder(tmp_path / "a"), {})
    with pytest.raises(RegistryError, match="no version 7.*published: \\[1\\]"):
        registry.resolve("acme-qa@7")
    with pytest.raises(RegistryError, match="no published adapters named 'other'"):
        registry.resolve("other")
    with pytest.raises(RegistryError, match="bad version"):
        registry.resolve("acme-qa@newest")
    with pytest.raises(RegistryError, match="bad registry reference"):
        parse_ref("a/b@1")
    for other_spelling in ("acme-qa@01", "acme-qa@\u0661"):  # int() reads both as 1
        with pytest.raises(RegistryError, match="bad version"):
            registry.resolve(other_spelling)


def test_a_promotion_record_that_is_damaged_or_names_a_gone_version_says_so(registry_root, tmp_path):
    registry = Registry(registry_root)
    registry.publish("acme-qa", make_adapter_folder(tmp_path / "a"), {})
    pointer = storage.join(registry_root, "adapters", "acme-qa", "promoted.json")
    storage.write_bytes(pointer, b'{"version": 7}')
    with pytest.raises(RegistryError, match=r"promoted.json names version 7, which is gone.*published: \[1\]"):
        registry.resolve("acme-qa@promoted")
    storage.write_bytes(pointer, b"{not json")
    with pytest.raises(RegistryError, match="promoted.json is not a promotion record"):
        registry.resolve("acme-qa@promoted")


def test_unfinished_publish_is_not_a_version(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    registry.publish("acme-qa", make_adapter_folder(tmp_path / "a"), {})
    # A publisher that died after uploading files but before metadata.json.
    make_adapter_folder(tmp_path / "registry" / "adapters" / "acme-qa" / "2")

    assert registry.versions("acme-qa") == [1]
    assert registry.resolve("acme-qa").version == 1
    assert registry.publish("acme-qa", make_adapter_folder(tmp_path / "b"), {}).version == 3


def test_racing_publishers_never_share_a_version(s3_prefix, tmp_path):
    registry = Registry(s3_prefix + "/registry")
    results, errors = [], []

    def publish(index: int) -> None:
        try:
            folder = make_adapter_folder(tmp_path / f"p{index}", f"content-{index}")
            results.append(registry.publish("acme-qa", folder, {"publisher": index}))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=publish, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    versions = sorted(result.version for result in results)
    assert len(set(versions)) == 4, f"two publishers shared a version: {versions}"
    assert registry.versions("acme-qa") == versions
    for result in results:
        weights = storage.read_bytes(storage.join(result.uri, "adapter_model.safetensors"))
        assert weights == f"content-{result.metadata['publisher']}".encode()


def test_fetch_downloads_an_s3_version_once(s3_prefix, tmp_path):
    registry = Registry(s3_prefix + "/registry", kind="models")
    published = registry.publish("base-int8", make_adapter_folder(tmp_path / "m", "quantized"), {"method": "int8"})

    local = registry.fetch(published, cache_dir=str(tmp_path / "cache"))
    assert open(os.path.join(local, "adapter_model.safetensors")).read() == "quantized"
    assert json.load(open(os.path.join(local, "metadata.json")))["method"] == "int8"
    assert registry.fetch(published, cache_dir=str(tmp_path / "cache")) == local


def test_publish_refuses_empty_folders_and_unknown_kinds(tmp_path):
    registry = Registry(str(tmp_path / "registry"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a folder with files"):
        registry.publish("acme-qa", str(tmp_path / "empty"), {})
    with pytest.raises(ValueError, match="kind must be one of"):
        Registry(str(tmp_path), kind="datasets")


@pytest.mark.parametrize("name", ["support-bot@v2", "..", ".", "a/b", "", "-x", "name with space", "café", "x" * 129])
def test_names_that_would_not_resolve_or_would_leave_the_registry_are_refused(tmp_path, name):
    registry = Registry(str(tmp_path / "registry"))
    with pytest.raises(RegistryError, match="bad registry name"):
        registry.publish(name, make_adapter_folder(tmp_path / "a"), {})
    assert not (tmp_path / "registry").exists() or not any((tmp_path / "registry").rglob("metadata.json"))


def test_a_reference_with_two_selectors_is_refused_not_read_as_another_version():
    with pytest.raises(RegistryError, match="bad registry reference"):
        parse_ref("acme@2@1")
    with pytest.raises(RegistryError, match="bad registry reference"):
        parse_ref("acme@")
    assert parse_ref("acme.v2_final-1@promoted") == ("acme.v2_final-1", "promoted")
