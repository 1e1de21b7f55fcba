"""Real artifacts for the serving tests: LoRA adapters in the registry, an index, a trained router (all in S3).

The adapter is a freshly initialised peft LoRA on SmolLM2 (random, non-zero B matrices,
so it visibly changes the base model's answers), published twice as ``qa`` (versions 1
and 2) through :class:`rayfleet.registry.Registry`, as the fine-tuning job publishes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow as pa
import pytest

API_KEY = "test-key-" + "s3cr3t"


@dataclass(frozen=True)
class ServeArtifacts:
    registry: str
    index: str
    router: str
    logs: str


def publish_random_adapters(smollm2_path, folder, registry_root: str, versions: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rayfleet.registry import Registry

    registry = Registry(registry_root, kind="adapters")
    for version in range(1, versions + 1):
        torch.manual_seed(version)
        model = AutoModelForCausalLM.from_pretrained(smollm2_path)
        lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False)
        adapter_folder = folder / f"qa-{version}"
        get_peft_model(model, lora).save_pretrained(adapter_folder)
        registry.publish("qa", str(adapter_folder), {"base_model": "smollm2-135m-instruct", "note": "random test adapter"})


def build_index(chunks: list[dict], root: str, version: str = "v1") -> None:
    from rayfleet.retrieval import Embedder, IndexParams, VectorIndex, store
    from rayfleet.retrieval.chunks import CHUNK_COLUMNS, chunks_version, embedding_keys
    from rayfleet.retrieval.store import IndexManifest

    embedder = Embedder()
    table = pa.Table.from_pylist(chunks, schema=CHUNK_COLUMNS)
    index = VectorIndex.create(embedder.dimension, IndexParams())
    index.add(embedder.embed(table["text"].to_pylist()))
    keys = embedding_keys(table, embedder.fingerprint)
    manifest = IndexManifest(
        version=version, created_at="2026-01-01T00:00:00+00:00", embedding_model=embedder.model_name,
        embedding_model_hash=embedder.fingerprint, dimension=embedder.dimension, row_count=len(index),
        source="test", source_chunks_version=chunks_version(table, keys), index_params=IndexParams(),
        faiss_version=store.faiss_version(), build_mode="full", added_rows=len(index),
    )  # fmt: skip
    store.save_version(root, index, table.append_column("embedding_key", pa.array(keys)), manifest)


@pytest.fixture(scope="session")
def serve_artifacts(local_s3, smollm2_path, tmp_path_factory) -> ServeArtifacts:
    from jobs.train_router import TrainRouterConfig, main as train_router

    from tests.conftest import chunk_rows

    local_s3.create_bucket("rayfleet-test")
    prefix = f"s3://rayfleet-test/serve-{uuid.uuid4().hex[:8]}"
    artifacts = ServeArtifacts(f"{prefix}/registry", f"{prefix}/index", f"{prefix}/router", f"{prefix}/request-logs")
    publish_random_adapters(smollm2_path, tmp_path_factory.mktemp("adapters"), artifacts.registry, versions=2)
    build_index(chunk_rows(4), artifacts.index)
    train_router(TrainRouterConfig(output=artifacts.router))
    return artifacts
