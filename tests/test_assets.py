"""Model provisioning: local folders only, clear errors, idempotent setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayfleet.assets import (
    MINILM,
    MINILM_STATIC,
    PROVISIONED_MARKER,
    SMOLLM2,
    ModelNotFoundError,
    folder_fingerprint,
    models_dir,
    provision_smollm2,
    provision_static_minilm,
    resolve_model,
    static_recipe,
)


def test_unknown_model_says_how_to_fix():
    with pytest.raises(ModelNotFoundError, match="make setup"):
        resolve_model("no-such-model-anywhere")


def test_smollm2_is_a_plain_fp32_folder(smollm2_path):
    config = json.loads((smollm2_path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert config.get("dtype", config.get("torch_dtype")) == "float32"
    marker = json.loads((smollm2_path / PROVISIONED_MARKER).read_text())
    assert len(marker["weights_sha256"]) == 64


def test_provisioning_twice_does_nothing(smollm2_path):
    before = (smollm2_path / "model.safetensors").stat().st_mtime_ns
    assert provision_smollm2(models_dir() / SMOLLM2) is False
    assert (smollm2_path / "model.safetensors").stat().st_mtime_ns == before


def test_minilm_comes_from_its_wheel():
    folder = resolve_model(MINILM)
    assert (folder / "modules.json").is_file()


def test_static_minilm_is_distilled_once_and_known_by_its_recipe():
    folder = resolve_model(MINILM_STATIC)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "model2vec"
    before = (folder / "model.safetensors").stat().st_mtime_ns
    assert provision_static_minilm(models_dir() / MINILM_STATIC) is False
    assert (folder / "model.safetensors").stat().st_mtime_ns == before
    recipe = static_recipe()
    assert recipe["source_fingerprint"] == folder_fingerprint(resolve_model(MINILM))
    assert folder_fingerprint(folder) == recipe["fingerprint"]


def test_fingerprint_is_stable_and_short(smollm2_path):
    assert folder_fingerprint(smollm2_path) == folder_fingerprint(smollm2_path)
    assert len(folder_fingerprint(smollm2_path)) == 16


def test_two_folders_of_one_shape_with_other_weights_have_other_fingerprints(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLEET_CACHE_DIR", str(tmp_path / "cache"))
    for name, byte in (("first", b"\x01"), ("second", b"\x02")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text('{"model_type": "llama"}')
        (tmp_path / name / "model.safetensors").write_bytes(byte * 4096)
    first, second = folder_fingerprint(tmp_path / "first"), folder_fingerprint(tmp_path / "second")
    assert first != second, "same names and sizes, other weights"
    assert folder_fingerprint(tmp_path / "first") == first, "the cached digest gives the same answer"
    (tmp_path / "first" / "model.safetensors").write_bytes(b"\x03" * 4096)  # rewritten in place: a new mtime
    assert folder_fingerprint(tmp_path / "first") not in (first, second)


def test_a_registry_model_reference_resolves_to_its_published_folder(tmp_path):
    from rayfleet.registry import Registry

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    published = Registry(str(tmp_path / "registry"), kind="models").publish("tiny-int8", str(checkpoint), {})

    assert resolve_model(f"{tmp_path}/registry/models/tiny-int8@latest") == Path(published.uri)
    assert resolve_model(f"{tmp_path}/registry/models/tiny-int8@1") == Path(published.uri)
    with pytest.raises(LookupError, match="no version 2"):
        resolve_model(f"{tmp_path}/registry/models/tiny-int8@2")


def test_a_model_folder_copied_in_part_is_named_with_what_it_lacks(tmp_path, smollm2_path):
    """A folder without weights started Ray and failed in every training worker, four times over."""
    import shutil

    from rayfleet.assets import check_model

    check_model(str(smollm2_path))
    partial = tmp_path / "smollm2-partial"
    shutil.copytree(smollm2_path, partial, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelNotFoundError, match=r"smollm2-partial is not a whole model folder: it lacks weights"):
        check_model(str(partial))
    (partial / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (partial / "tokenizer.json").unlink()
    with pytest.raises(ModelNotFoundError, match=r"lacks a model_type in config.json; weights .*; a tokenizer"):
        check_model(str(partial))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="lacks config.json"):
        check_model(str(tmp_path / "empty"))
