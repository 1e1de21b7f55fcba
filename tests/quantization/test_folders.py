"""Where a checkpoint may be written: never over, inside or around its source, never among stale files;
and an already quantized checkpoint is not quantized again."""

from __future__ import annotations

import json
import shutil

import pytest

from rayfleet.assets import folder_fingerprint
from rayfleet.quantization import (
    MANIFEST_FILE,
    AlreadyQuantizedError,
    OutputFolderError,
    quantize_model,
)


@pytest.fixture
def source(tmp_path, tiny_llama_path):
    """A copy of the tiny Llama this test may lose (a refusal that fails would overwrite it)."""
    return shutil.copytree(tiny_llama_path, tmp_path / "model")


def test_the_source_folder_is_refused_as_output_and_left_as_it_was(source):
    before = folder_fingerprint(source)
    with pytest.raises(OutputFolderError, match="is the source model's folder"):
        quantize_model(source, source, "w8a8_int8")
    assert folder_fingerprint(source) == before
    assert "quantization_config" not in json.loads((source / "config.json").read_text())


def test_an_output_inside_the_source_or_holding_it_is_refused(source):
    with pytest.raises(OutputFolderError, match="inside the source model's folder"):
        quantize_model(source, source / "w8a8", "w8a8_int8")
    with pytest.raises(OutputFolderError, match="holds the source model"):
        quantize_model(source, source.parent, "w8a8_int8", overwrite=True)
    assert not (source / "w8a8").exists() and not (source / MANIFEST_FILE).exists()


def test_a_reused_output_is_refused_and_overwrite_leaves_only_the_new_checkpoint(source, tmp_path):
    output = tmp_path / "w8a8"
    output.mkdir()
    stale = ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "adapter_config.json"]
    for name in stale:
        (output / name).write_text("{}")
    with pytest.raises(OutputFolderError, match="is not empty .*overwrite=true"):
        quantize_model(source, output, "w8a8_int8")
    assert sorted(path.name for path in output.iterdir()) == sorted(stale)

    fingerprint = folder_fingerprint(source)
    manifest = quantize_model(source, output, "w8a8_int8", overwrite=True)
    names = {path.name for path in output.iterdir()}
    assert not names & set(stale) and {"model.safetensors", "config.json", MANIFEST_FILE} <= names
    assert manifest["source_fingerprint"] == fingerprint == folder_fingerprint(source)
    assert [path.name for path in tmp_path.iterdir() if ".staging-" in path.name] == []


def test_an_empty_output_folder_is_used_and_a_failed_write_leaves_nothing_behind(source, tmp_path):
    (tmp_path / "empty").mkdir()
    quantize_model(source, tmp_path / "empty", "w8a8_int8")
    assert (tmp_path / "empty" / MANIFEST_FILE).is_file()
    for tokenizer_file in source.glob("tokenizer*"):
        tokenizer_file.unlink()  # the weights are written, then saving the tokenizer fails
    with pytest.raises(ValueError, match="tokenizer"):
        quantize_model(source, tmp_path / "never", "w8a8_int8")
    assert not (tmp_path / "never").exists()
    assert [path.name for path in tmp_path.iterdir() if ".staging-" in path.name] == []


def test_an_already_quantized_checkpoint_is_refused_as_a_source(tiny_w8a8, tmp_path):
    with pytest.raises(AlreadyQuantizedError, match="already a quantized checkpoint \\(int-quantized\\)"):
        quantize_model(tiny_w8a8, tmp_path / "twice", "w8a8_int8")
    assert not (tmp_path / "twice").exists()
