"""Quantize a base or merged fine-tuned model, verify the serving engine loads it, publish it.

Run it anywhere the same way::

    python -m jobs.quantize registry=s3://rayfleet/registry                       # provisioned SmolLM2, w8a8_int8
    python -m jobs.quantize model=acme-merged@3 registry=s3://rayfleet/registry    # a merged model from the registry
    python -m jobs.quantize config=jobs/configs/quantize/smollm2_w8a8_cpu.yaml registry=... adapters=[acme-qa@promoted]
    ray job submit --working-dir . -- \\
        python -m jobs.quantize config=jobs/configs/quantize/smollm2_w4a16_gpu.yaml registry=...

Steps: resolve the source model (provisioned name, local folder, or ``name@version`` of kind
``models`` in ``registry``) and refuse at once what cannot work (a method this machine cannot
run, held-out QA without usable rows, a source folder without weights or tokenizer, an already
quantized source, an output folder that is the source, overlaps it or is not empty without
``overwrite=true``, a registry that cannot be written, a default name it cannot take);
draw the calibration sample from our own chunks and hash it (only for a method that
calibrates); write the checkpoint with the chosen method (``rayfleet.quantization.methods``),
staged and moved into place; generate the held-out QA answers with the serving engine on
the full-precision and the quantized checkpoint (each in its own process: this is the load
check, and it measures size, peak memory, tokens/s, token F1 and greedy agreement); judge
them with ``quality_gate``; check each listed LoRA adapter against the quantized base
(``rayfleet.quantization.lora``); publish the checkpoint as the next version of ``name``
with all of it in its metadata, unless the quality gate failed (then nothing is published,
the report says why and the job exits with status 1; ``quality_gate.publish_anyway=true``
publishes it with the failed verdict recorded). A rerun of a published job (the same source, settings
and held-out pairs: ``job_fingerprint`` in the metadata) publishes no copy of it. Serve it with
``engine.model=<registry>/models/<name>@<version>`` (see ``rayfleet.assets.resolve_model``).

A single-process job: it needs no Ray cluster, and under ``ray job submit`` the
entrypoint runs where the job's resources put it (``entrypointNumGpus`` for the GPU method).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from pydantic import Field, field_validator

from rayfleet.assets import check_model_folder, folder_fingerprint, resolve_model
from rayfleet.config import BaseConfig, InputError, describe, run_job
from rayfleet.engines import EngineConfig, SamplingConfig
from rayfleet.quantization import (
    METHODS,
    QuantizationMethod,
    calibration_sample,
    check_output_folder,
    quantize_model,
    read_chunk_texts,
    require_runnable,
    require_unquantized_source,
)
from rayfleet.quantization.calibration import CalibrationSample
from rayfleet.quantization.compare import compare_models
from rayfleet.quantization.lora import LoraCheckConfig, check_lora_compatibility
from rayfleet.quantization.quality import (
    QaPair,
    QualityGateConfig,
    qa_pairs_from_papers,
    quality_verdict,
    read_qa_pairs,
)
from rayfleet.registry import NAME_RULE, ArtifactVersion, Registry, RegistryError, check_name

logger = logging.getLogger("jobs.quantize")


class CalibrationConfig(BaseConfig):
    """Where the calibration sample comes from and how big it is."""

    chunks: str | None = Field(
        None,
        description="Chunks table of jobs.ingest (Parquet file or folder, local or s3://); "
        "none: chunks of the first `papers` aclsum train papers.",
    )
    papers: int = Field(16, ge=1, le=100, description="aclsum train papers to chunk when `chunks` is not given.")
    chunk_tokens: int = Field(256, ge=16, description="Tokens per chunk when chunking the aclsum papers.")
    samples: int = Field(64, ge=1, description="Chunks in the sample.")
    seed: int = Field(0, description="Seed of the sample's draw (same chunks + seed = same sample and hash).")
    max_tokens: int = Field(512, ge=16, description="Longest calibration sequence, in tokens (GPTQ).")


class HeldoutConfig(BaseConfig):
    """The held-out QA the checkpoint and the adapters are judged on."""

    qa: str | None = Field(
        None,
        description="QA Parquet with question, answer and optional context (e.g. jobs.make_qa's qa/test.parquet); "
        "none: questions on `papers` aclsum test papers answered by their human summaries.",
    )
    papers: int = Field(4, ge=1, le=100, description="aclsum test papers (3 questions each) when `qa` is not given.")
    max_tokens: int = Field(48, ge=1, description="Most new tokens per answer.")


class QuantizeConfig(BaseConfig):
    """Which model, which method, how it is checked and where it is published."""

    model: str = Field(
        "smollm2-135m-instruct",
        description="Source model: provisioned name, local HF folder, `name@version|latest|promoted` of kind models "
        "in `registry`, or a full `<root>/models/name@version` reference.",
    )
    method: QuantizationMethod = Field(
        "w8a8_int8", description="w8a8_int8 (CPU and GPU, no calibration) or w4a16_gptq (NVIDIA GPU + llmcompressor)."
    )
    registry: str | None = Field(None, description="Registry root (local or s3://); none: nothing is published.")
    name: str | None = Field(
        None, description="Registry name of the quantized model; default `<source name>-<method>`."
    )
    output: str | None = Field(
        None,
        description="Local folder that keeps the checkpoint (new or empty; not the source, not inside it, not "
        "holding it); default a temporary folder.",
    )
    overwrite: bool = Field(False, description="Replace everything in a non-empty `output` folder.")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig, description="Calibration sample.")
    heldout: HeldoutConfig = Field(default_factory=HeldoutConfig, description="Held-out QA for the quality figures.")
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(kind="auto", max_model_len=1024, max_num_seqs=16, cpu_kv_cache_gib=1.0),
        description="Serving engine the checkpoint is verified with (its `model` is set by the job).",
    )
    adapters: list[str] = Field(
        default_factory=list,
        description="LoRA adapters trained on the source to check on the quantized base: local folders or "
        "`name@version` of kind adapters in `registry`.",
    )
    quality_gate: QualityGateConfig = Field(
        default_factory=QualityGateConfig,
        description="What the checkpoint must keep of the source's answers to be published.",
    )
    lora_check: LoraCheckConfig = Field(default_factory=LoraCheckConfig, description="What an adapter must pass.")

    @field_validator("name")
    @classmethod
    def _registry_name(cls, name: str | None) -> str | None:
        try:
            return name if name is None else check_name(name)
        except RegistryError as error:  # refused before any slow step, not at publishing
            raise ValueError(str(error)) from error


def resolve_source(config: QuantizeConfig) -> tuple[Path, dict]:
    """The source model's local folder and what is recorded about it."""
    if "@" in config.model and "/" not in config.model:
        if config.registry is None:
            raise InputError(f"model={config.model} is a registry reference: set registry=<root>")
        registry = Registry(config.registry, kind="models")
        artifact = registry.resolve(config.model)
        return Path(registry.fetch(artifact)), {"model": artifact.ref, "registry": config.registry, "kind": "models"}
    return resolve_model(config.model), {"model": config.model}


def resolve_adapter(reference: str, registry_root: str | None, source_folder: Path) -> str:
    """A local folder for an adapter given as a folder or as a registry reference of kind adapters.

    Raises:
        InputError: the registry recorded that the adapter was trained on another base model than the
            source (a merged model, another model): its answers would differ for that reason, not quantization's.
    """
    if Path(reference).expanduser().is_dir():
        return str(Path(reference).expanduser().resolve())
    if registry_root is None:
        raise InputError(f"adapter {reference!r} is not a local folder and no registry is set")
    registry = Registry(registry_root, kind="adapters")
    artifact = registry.resolve(reference)
    trained_on = (artifact.metadata.get("base_model") or {}).get("hash")
    if trained_on and trained_on != folder_fingerprint(source_folder):
        raise InputError(f"adapter {artifact.ref} was trained on {artifact.metadata['base_model'].get('name')} (hash "
                         f"{trained_on}), not on the source {source_folder} "
                         f"(hash {folder_fingerprint(source_folder)}): "
                         "check it on the base it was trained on")  # fmt: skip
    return registry.fetch(artifact)


def calibration_for(method: str, config: CalibrationConfig, tokenizer_folder: Path) -> CalibrationSample | None:
    """The calibration sample when ``method`` calibrates; None (nothing read or tokenized) when it does not."""
    if not METHODS[method].needs_calibration:
        logger.info("method=%s needs no calibration data: none drawn", method)
        return None
    calibration = draw_calibration(config, tokenizer_folder)
    logger.info(
        "calibration sample %s: %d texts from %s", calibration.sha256[:16], len(calibration.texts), calibration.source
    )
    return calibration


def draw_calibration(config: CalibrationConfig, tokenizer_folder: Path) -> CalibrationSample:
    """The calibration sample: from the given chunks table, or from chunked aclsum train papers."""
    if config.chunks is not None:
        texts, source = read_chunk_texts(config.chunks), config.chunks
    else:
        texts, source = aclsum_chunk_texts(config.papers, config.chunk_tokens, tokenizer_folder)
    return calibration_sample(texts, config.samples, config.seed, source, config.max_tokens)


def aclsum_chunk_texts(papers: int, chunk_tokens: int, tokenizer_folder: Path) -> tuple[list[str], str]:
    """Chunks of real ACL papers (train split: disjoint from the test papers held out for QA)."""
    from transformers import AutoTokenizer

    from jobs.demo_documents import DemoDocumentsConfig, build_documents
    from rayfleet.text.chunking import split_by_tokens

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    documents = build_documents(DemoDocumentsConfig(output="unused", count=papers, split="train"))
    texts = [
        chunk
        for text in documents.column("text").to_pylist()
        for chunk in split_by_tokens(tokenizer, text, chunk_tokens)
    ]
    return texts, f"aclsum:train[:{papers}] chunks of {chunk_tokens} tokens"


def heldout_pairs(config: HeldoutConfig) -> tuple[list[QaPair], str]:
    """The held-out QA pairs and where they came from."""
    if config.qa is not None:
        pairs, dropped = read_qa_pairs(config.qa)
        note = f" ({sum(dropped.values())} rows dropped: {dict(dropped)})" if dropped else ""
        return pairs, config.qa + note
    from jobs.demo_documents import DemoDocumentsConfig, build_documents

    papers = DemoDocumentsConfig(output="unused", count=config.papers, split="test", content="abstract")
    source = f"aclsum:test[:{config.papers}] abstracts, human summaries as answers"
    return qa_pairs_from_papers(build_documents(papers).to_pylist()), source


def default_name(config: QuantizeConfig, source: dict) -> str:
    """``<source name>-<method>``, the source name without its version."""
    base = source["model"].partition("@")[0].rstrip("/").rsplit("/", 1)[-1]
    return f"{base}-{config.method.replace('_', '-')}"


def publish_name(config: QuantizeConfig, source: dict) -> str:
    """The registry name the checkpoint is published under: ``name``, else :func:`default_name`.

    Raises:
        InputError: the default name is no registry name (a folder ``My Model``, ``.``, ``modèle``): it is
            refused, not rewritten, so the published name is always the one asked for or the documented one.
    """
    if config.name is not None:
        return config.name
    name = default_name(config, source)
    try:
        return check_name(name)
    except RegistryError:
        raise InputError(f"the registry name {name!r} derived from model={config.model} is not one "
                         f"({NAME_RULE}): pass name=<registry name>") from None  # fmt: skip


def main(config: QuantizeConfig) -> dict:
    """Quantize, verify, gate, check adapters and publish; returns the report (also printed as one JSON line).

    The report's ``published`` is the published reference, or None when the quality gate
    refused it (``refused`` then says why). A rerun (same source, settings and held-out pairs:
    :func:`job_fingerprint`) publishes no copy: ``already_published`` is then true, and without
    ``output`` it does no work, reporting the figures that version was published with.
    """
    started = time.monotonic()
    logger.info("config:\n%s", describe(config))
    require_runnable(config.method)  # before any slow step: say at once what this machine lacks
    pairs, qa_source = heldout_pairs(config.heldout)  # a bad QA file fails here, not after the engine runs
    source_folder, source = resolve_source(config)
    check_model_folder(source_folder)  # a missing tokenizer failed only after quantizing, in the engine
    require_unquantized_source(source_folder)
    if config.output is not None:
        check_output_folder(source_folder, Path(config.output), config.overwrite)
    if config.registry is not None:  # publishing failed only after quantizing and verifying
        publish_name(config, source)
        Registry(config.registry, kind="models").check_writable()
    adapter_folders = {
        reference: resolve_adapter(reference, config.registry, source_folder) for reference in config.adapters
    }
    calibration = calibration_for(config.method, config.calibration, source_folder)
    fingerprint = job_fingerprint(config, folder_fingerprint(source_folder), pairs, calibration, adapter_folders)
    if config.registry is not None and config.output is None:  # with an output, the checkpoint is written there
        if earlier := published_with(config, source, fingerprint):
            report = already_published_report(config, earlier, time.monotonic() - started)
            print(json.dumps(report), flush=True)
            return report
    with tempfile.TemporaryDirectory(prefix="quantize-") as scratch:
        output = Path(config.output or Path(scratch) / "checkpoint")
        manifest = quantize_model(source_folder, output, config.method, calibration, overwrite=config.overwrite)
        metrics = compare_models(
            source_folder, output, pairs, config.engine, SamplingConfig(max_tokens=config.heldout.max_tokens)
        )
        logger.info("verified with %s: %s", config.engine.kind, metrics)
        verdict = judge_quality(metrics, config)
        adapters = [
            check_lora_compatibility(
                source_folder, output, folder, pairs, config.lora_check, on_gpu=torch.cuda.is_available(),
            ).record() | {"reference": reference}
            for reference, folder in adapter_folders.items()
        ]  # fmt: skip
        for adapter in adapters:
            log = logger.info if adapter["compatible"] else logger.error
            log("adapter %s on the quantized base: %s", adapter["reference"], adapter["reason"])
        calibration_sha256 = calibration.sha256 if calibration else None
        metadata = {
            "source": source | {"fingerprint": manifest["source_fingerprint"]},  # taken before anything was written
            "method": config.method,
            "quantization": manifest,
            "calibration_sha256": calibration_sha256,
            "heldout_qa": qa_source,
            "metrics": metrics,
            "quality_gate": verdict,
            "lora_compatibility": adapters,
            "job_fingerprint": fingerprint,
        }
        report = {"method": config.method, "calibration_sha256": calibration_sha256, **metrics, "quality_gate": verdict}
        if config.registry is not None:
            report |= publish_if_passed(config, source, output, metadata)
        report |= {
            "adapters_refused": [adapter["reference"] for adapter in adapters if not adapter["compatible"]],
            "seconds": round(time.monotonic() - started, 1),
        }
    print(json.dumps(report), flush=True)
    return report


def judge_quality(metrics: dict, config: QuantizeConfig) -> dict:
    """The quality gate's verdict on the figures, with whether it will be published in spite of failing."""
    verdict = quality_verdict(metrics, config.quality_gate)
    if not verdict["passed"]:
        logger.warning("quality gate failed: %s", "; ".join(verdict["failures"]))
    published_anyway = not verdict["passed"] and config.quality_gate.publish_anyway and config.registry is not None
    return verdict | {"published_anyway": published_anyway}


def publish_if_passed(config: QuantizeConfig, source: dict, output: Path, metadata: dict) -> dict:
    """Publish the checkpoint when the quality gate passed (or ``publish_anyway``); what the report says about it."""
    verdict = metadata["quality_gate"]
    if not verdict["passed"] and not config.quality_gate.publish_anyway:
        refused = (
            f"not published: the quality gate failed ({'; '.join(verdict['failures'])}); set "
            "quality_gate.publish_anyway=true to publish it anyway, or change the method or the quality_gate thresholds"
            + ("" if config.output else "; set output=<folder> to keep the checkpoint")
        )
        logger.error(refused)
        return {"published": None, "refused": refused}
    fingerprint = metadata.get("job_fingerprint")  # None: no run's settings to match
    if fingerprint and (earlier := published_with(config, source, fingerprint)):
        return {"published": reference_of(config, earlier), "already_published": True}
    published = Registry(config.registry, kind="models").publish(publish_name(config, source), str(output), metadata)
    return {"published": reference_of(config, published), "already_published": False}


def reference_of(config: QuantizeConfig, artifact: ArtifactVersion) -> str:
    return f"{config.registry.rstrip('/')}/models/{artifact.ref}"


def job_fingerprint(
    config: QuantizeConfig,
    source_fingerprint: str,
    pairs: list[QaPair],
    calibration: CalibrationSample | None,
    adapter_folders: dict[str, str],
) -> str:
    """A hash of what decides the checkpoint and its verdict: the source's weights, the method, the calibration
    sample, the held-out pairs, the engine that verifies (and whether a GPU runs it), the gate, the adapters
    checked (by their files) and the versions of the libraries that quantize and serve. Where a copy is kept
    (``output``) and the registry's name and root are not in it."""
    settings = config.model_dump(mode="json", include={"method", "calibration", "heldout", "engine", "quality_gate",
                                                       "lora_check"})  # fmt: skip
    record = {
        "source": source_fingerprint,
        "settings": settings,
        "gpu": torch.cuda.is_available(),
        "libraries": {name: installed_version(name) for name in FINGERPRINTED_LIBRARIES},
        "heldout_pairs": [[pair.question, pair.answer, pair.context] for pair in pairs],
        "calibration": calibration.sha256 if calibration else None,
        "adapters": {reference: folder_fingerprint(Path(folder)) for reference, folder in adapter_folders.items()},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


# The libraries whose upgrade may change a checkpoint or its figures: a rerun after one is new work.
FINGERPRINTED_LIBRARIES = ("torch", "transformers", "compressed-tensors", "llmcompressor", "vllm", "peft")


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def published_with(config: QuantizeConfig, source: dict, fingerprint: str) -> ArtifactVersion | None:
    """The version of the checkpoint's registry name that a run with the same ``fingerprint`` published, if any:
    a rerun (a resubmitted job, an event delivered twice) publishes no copy of it."""
    registry, name = Registry(config.registry, kind="models"), publish_name(config, source)
    for version in reversed(registry.versions(name)):
        try:
            artifact = registry.get(name, version)
        except (RegistryError, ValueError) as error:  # deleted meanwhile, or its metadata damaged
            logger.warning("%s@%d could not be read (%s): not compared", name, version, error)
            continue
        if artifact.metadata.get("job_fingerprint") == fingerprint:
            logger.info("%s was published by a run with these settings on this source: nothing new to publish",
                        artifact.ref)  # fmt: skip
            return artifact
    return None


def already_published_report(config: QuantizeConfig, earlier: ArtifactVersion, seconds: float) -> dict:
    """The report of a rerun that found its checkpoint published: the figures that version was published with."""
    metadata = earlier.metadata
    return {
        "method": config.method, "calibration_sha256": metadata["calibration_sha256"], **metadata["metrics"],
        "quality_gate": metadata["quality_gate"], "published": reference_of(config, earlier), "already_published": True,
        "adapters_refused": [a["reference"] for a in metadata["lora_compatibility"] if not a["compatible"]],
        "seconds": round(seconds, 1),
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(1 if run_job(__spec__, "QuantizeConfig").get("refused") else 0)
