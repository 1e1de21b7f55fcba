"""The quantization job: SmolLM2 -> W8A8 served by vLLM and published to a registry in real S3 (slow); the tiny
Llama through the transformers engine into a local registry; what is refused before any work; the quality gate."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import torch

import jobs.quantize as quantize_job
from jobs.quantize import QuantizeConfig, job_fingerprint, main, publish_if_passed
from rayfleet.assets import ModelNotFoundError, folder_fingerprint, resolve_model
from rayfleet.config import InputError, load_config
from rayfleet.quantization import AlreadyQuantizedError, OutputFolderError, quantize_model
from rayfleet.registry import Registry, RegistryError
from rayfleet.storage import OutputLocationError, s3_failure
from rayfleet.tables import write_table

REPO = Path(__file__).resolve().parents[2]
CPU_PRESET = REPO / "jobs" / "configs" / "quantize" / "smollm2_w8a8_cpu.yaml"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the method may be runnable")
def test_gpu_method_stops_at_once_on_cpu_and_says_what_it_needs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.quantize", "method=w4a16_gptq", f"registry={tmp_path / 'registry'}"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error: method=w4a16_gptq needs an NVIDIA GPU" in result.stderr
    assert "loading" not in result.stderr.lower()  # refused before any model was read
    assert not (tmp_path / "registry").exists()


@pytest.mark.slow
def test_quantize_verify_and_publish_to_s3_registry(s3_prefix, monkeypatch):
    registry_root = f"{s3_prefix}/registry"
    config = load_config(QuantizeConfig, [
        f"config={CPU_PRESET}", f"registry={registry_root}", "calibration.papers=4", "calibration.samples=16",
        "heldout.papers=1", "heldout.max_tokens=24", "quality_gate.publish_anyway=true",
    ])  # fmt: skip
    report = main(config)

    assert report["published"] == f"{registry_root}/models/smollm2-135m-instruct-w8a8-int8@1"
    assert report["size_ratio"] < 0.45
    assert report["f1_full"] > 0 and report["f1_quantized"] >= report["f1_full"] - 0.1, report
    assert 0 <= report["prefix_agreement"] <= 1 and report["completion_tokens_quantized"] > 0
    artifact = Registry(registry_root, kind="models").resolve("smollm2-135m-instruct-w8a8-int8@latest")
    metadata = artifact.metadata
    assert metadata["method"] == "w8a8_int8"
    assert metadata["calibration_sha256"] is None is report["calibration_sha256"]  # w8a8_int8 calibrates on nothing
    assert metadata["quantization"]["calibration"]["used_by_method"] is False
    gate = metadata["quality_gate"]  # README: the default gate fails SmolLM2's W8A8 on greedy agreement
    assert gate["published_anyway"] is (not gate["passed"]) and gate == report["quality_gate"]
    assert metadata["metrics"]["engine"] == "vllm" and metadata["source"]["model"] == "smollm2-135m-instruct"

    served = resolve_model(report["published"])  # what engine.model=<reference> loads
    quantization = json.loads((served / "config.json").read_text())["quantization_config"]
    assert quantization["format"] == "int-quantized"

    # The same job resubmitted (an event delivered twice): no work, no copy, the published version's figures.
    def quantizing_that_must_not_start(*arguments, **options):
        raise AssertionError("a published checkpoint was quantized again")

    monkeypatch.setattr(quantize_job, "quantize_model", quantizing_that_must_not_start)
    again = main(config)
    assert again["published"] == report["published"] and again["already_published"] is True
    assert {key: again[key] for key in report if key != "seconds"} == {
        key: value for key, value in report.items() if key != "seconds"
    } | {"already_published": True}
    assert Registry(registry_root, kind="models").versions("smollm2-135m-instruct-w8a8-int8") == [1]


def test_registry_reference_as_source_needs_a_registry():
    with pytest.raises(ValueError, match="registry reference: set registry="):
        main(load_config(QuantizeConfig, ["model=acme-merged@3", "method=w8a8_int8"]))


def tiny_job(tiny_llama_path: Path, tmp_path: Path, *overrides: str) -> QuantizeConfig:
    """The job on the tiny Llama, verified with the transformers engine on one paper's three questions (~20 s)."""
    return load_config(QuantizeConfig, [
        f"model={tiny_llama_path}", f"registry={tmp_path / 'registry'}", "engine.kind=transformers",
        "heldout.papers=1", "heldout.max_tokens=8", *overrides,
    ])  # fmt: skip


def test_w8a8_job_reads_no_calibration_data_and_publishes_the_gates_verdict(tmp_path, tiny_llama_path):
    config = tiny_job(tiny_llama_path, tmp_path, f"calibration.chunks={tmp_path / 'no-such-chunks'}",
                      "name=tiny-w8a8")  # fmt: skip
    report = main(config)  # the chunks table does not exist: w8a8_int8 must not read it

    assert report["calibration_sha256"] is None and report["published"].endswith("/models/tiny-w8a8@1")
    metadata = Registry(str(tmp_path / "registry"), kind="models").resolve("tiny-w8a8@1").metadata
    calibration = metadata["quantization"]["calibration"]
    assert calibration == {"source": None, "sha256": None, "samples": 0, "used_by_method": False}
    assert metadata["quality_gate"] == report["quality_gate"] and metadata["quality_gate"]["passed"] is True
    assert metadata["quality_gate"]["min_prefix_agreement"] == 0.0 and metadata["quality_gate"]["max_f1_drop"] == 0.05
    assert metadata["source"]["fingerprint"] == folder_fingerprint(tiny_llama_path)

    # Rerun with a folder to keep the checkpoint in: written there, but no copy published.
    kept = main(tiny_job(tiny_llama_path, tmp_path, f"calibration.chunks={tmp_path / 'no-such-chunks'}",
                         "name=tiny-w8a8", f"output={tmp_path / 'kept'}"))  # fmt: skip
    assert kept["published"] == report["published"] and kept["already_published"] is True
    assert (tmp_path / "kept" / "config.json").exists()
    assert Registry(str(tmp_path / "registry"), kind="models").versions("tiny-w8a8") == [1]


def test_the_job_fingerprint_follows_what_decides_the_checkpoint_and_its_verdict_not_where_it_goes(
    tmp_path, monkeypatch
):
    from rayfleet.quantization.quality import QaPair

    pairs = [QaPair("Which dataset?", "Penn Treebank.")]

    def fingerprint(*overrides: str, source: str = "f00d", qa: list = pairs) -> str:
        return job_fingerprint(load_config(QuantizeConfig, list(overrides)), source, qa, None, {})

    same = fingerprint()
    assert fingerprint(f"output={tmp_path}", "overwrite=true", "name=other", f"registry={tmp_path}") == same
    changed = [fingerprint(source="beef"), fingerprint(qa=[QaPair("Which dataset?", "WSJ.")]),
               fingerprint("heldout.max_tokens=12"), fingerprint("quality_gate.max_f1_drop=0.2"),
               fingerprint("engine.kind=transformers"), fingerprint("lora_check.max_f1_drop=0.3")]  # fmt: skip
    monkeypatch.setattr(quantize_job, "installed_version", lambda name: "9.9" if name == "vllm" else None)
    changed.append(fingerprint())  # a library upgraded: the rerun is new work
    assert same not in changed and len(set(changed)) == len(changed)


def test_a_failed_quality_gate_publishes_nothing_unless_told_to(tmp_path, tiny_llama_path):
    checkpoint = tmp_path / "checkpoint"
    quantize_model(tiny_llama_path, checkpoint, "w8a8_int8")
    verdict = {"passed": False, "failures": ["greedy agreement 0.123 with the full-precision model is below 0.500"]}
    registry = Registry(str(tmp_path / "registry"), kind="models")

    strict = tiny_job(tiny_llama_path, tmp_path)
    refused = publish_if_passed(strict, {"model": "tiny"}, checkpoint, {"quality_gate": verdict})
    assert refused["published"] is None and registry.names() == []
    assert refused["refused"].startswith("not published: the quality gate failed (greedy agreement 0.123")
    assert "quality_gate.publish_anyway=true" in refused["refused"]

    anyway = tiny_job(tiny_llama_path, tmp_path, "quality_gate.publish_anyway=true")
    published = publish_if_passed(anyway, {"model": "tiny"}, checkpoint, {"quality_gate": verdict})
    assert published["published"].endswith("/models/tiny-w8a8-int8@1")
    assert registry.resolve("tiny-w8a8-int8@1").metadata["quality_gate"] == verdict


def test_a_qa_file_without_usable_rows_is_refused_before_any_work(tmp_path, tiny_llama_path):
    qa = tmp_path / "qa.parquet"
    write_table(str(qa), pa.table({"question": ["q1", "q2"], "answer": pa.array([None, " "], pa.string())}))
    blank = tmp_path / "blank-questions.parquet"
    write_table(str(blank), pa.table({"question": pa.array([None, "  "], pa.string()), "answer": ["a1", "a2"]}))
    output = tmp_path / "checkpoint"
    with pytest.raises(InputError, match="qa.parquet has no usable row"):  # run_job: one error line, exit 1
        main(tiny_job(tiny_llama_path, tmp_path, f"heldout.qa={qa}", f"output={output}"))
    with pytest.raises(InputError, match=r"blank-questions.parquet has no usable row.*'no question': 2"):
        main(tiny_job(tiny_llama_path, tmp_path, f"heldout.qa={blank}", f"output={output}"))
    assert not output.exists()


def test_a_registry_that_cannot_be_written_is_refused_before_any_work(tmp_path, tiny_llama_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    output = tmp_path / "checkpoint"
    refusals = {tmp_path / "a-file" / "registry": "a file is in the way",
                "/proc/rayfleet-registry": "cannot make the folder /proc/rayfleet-registry/models"}  # fmt: skip
    for registry, reason in refusals.items():
        with pytest.raises(OutputLocationError, match=reason):
            main(tiny_job(tiny_llama_path, tmp_path, f"registry={registry}", f"output={output}"))
    assert not output.exists(), "refused before quantizing"

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(OSError) as unreachable:
        main(tiny_job(tiny_llama_path, tmp_path, "registry=s3://rayfleet/registry", f"output={output}"))
    assert "cannot reach S3 at http://127.0.0.1:9" in s3_failure(unreachable.value)  # what run_job prints
    assert not output.exists()

    writable = tmp_path / "registry"
    Registry(str(writable), kind="models").check_writable()
    assert not writable.exists(), "the probe file is removed, and with it the folders made for it"


def test_a_default_name_the_registry_refuses_is_refused_before_any_work(tmp_path, tiny_llama_path, monkeypatch):
    output = tmp_path / "checkpoint"
    for folder in ("My Model", "modèle", "Llama-3.1-8B+lora"):
        (tmp_path / folder).symlink_to(tiny_llama_path)
        with pytest.raises(InputError, match=f"registry name '{re.escape(folder)}-w8a8-int8' derived from "
                                             r".*: pass name=<registry name>"):  # fmt: skip
            main(tiny_job(tmp_path / folder, tmp_path, f"output={output}"))
        assert not output.exists(), "refused before quantizing"
    monkeypatch.chdir(tiny_llama_path)
    with pytest.raises(InputError, match=r"registry name '\.-w8a8-int8' derived from model=\."):
        main(tiny_job(Path("."), tmp_path, f"output={output}"))
    assert not output.exists() and not (tmp_path / "registry").exists()


def test_a_model_folder_without_its_tokenizer_is_refused_before_any_work(tmp_path, tiny_llama_path):
    source = shutil.copytree(tiny_llama_path, tmp_path / "model", ignore=shutil.ignore_patterns("tokenizer*"))
    output = tmp_path / "checkpoint"
    with pytest.raises(ModelNotFoundError, match=r"lacks a tokenizer \(tokenizer.json, tokenizer.model"):
        main(tiny_job(source, tmp_path, f"output={output}"))
    assert not output.exists()


def test_an_output_over_the_source_a_reused_output_or_a_quantized_source_is_refused_before_any_work(
    tmp_path, tiny_llama_path
):
    source = shutil.copytree(tiny_llama_path, tmp_path / "model")
    before = folder_fingerprint(source)
    with pytest.raises(OutputFolderError, match="is the source model's folder"):
        main(tiny_job(source, tmp_path, f"output={source}"))
    assert folder_fingerprint(source) == before

    reused = tmp_path / "reused"
    reused.mkdir()
    (reused / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="is not empty"):
        main(tiny_job(source, tmp_path, f"output={reused}"))

    quantize_model(source, tmp_path / "quantized", "w8a8_int8")
    with pytest.raises(AlreadyQuantizedError, match="already a quantized checkpoint"):
        main(tiny_job(tmp_path / "quantized", tmp_path, f"output={tmp_path / 'twice'}"))
    assert not (tmp_path / "twice").exists() and not (tmp_path / "registry").exists()


def test_adapters_are_resolved_before_any_work_and_one_trained_on_another_base_is_refused(tmp_path, tiny_llama_path):
    adapters = Registry(str(tmp_path / "registry"), kind="adapters")
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    adapters.publish("other-base", str(folder), {"base_model": {"name": "smollm2", "hash": "0123456789abcdef"}})
    output = tmp_path / "checkpoint"
    with pytest.raises(
        InputError, match=r"adapter other-base@1 was trained on smollm2 \(hash 0123456789abcdef\), not on the source"
    ):
        main(tiny_job(tiny_llama_path, tmp_path, "adapters=[other-base@1]", f"output={output}"))
    with pytest.raises(RegistryError, match="adapters 'missing' has no version 1"):
        main(tiny_job(tiny_llama_path, tmp_path, "adapters=[missing@1]", f"output={output}"))
    assert not output.exists(), "refused before quantizing"
    with pytest.raises(ValueError, match="bad registry name"):
        tiny_job(tiny_llama_path, tmp_path, "name=bad name/x")
