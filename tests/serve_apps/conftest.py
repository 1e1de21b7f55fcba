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
        lora = LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False
        )
        adapter_folder = folder / f"qa-{version}"
        get_peft_model(model, lora).save_pretrained(adapter_folder)
        registry.publish(
            "qa", str(adapter_folder), {"base_model": "smollm2-135m-instruct", "note": "random test adapter"}
        )


def build_index(chunks: list[dict], root: str, version: str = "v1") -> None:
    from rayfleet.retrieval import Embedder
    from rayfleet.retrieval.chunks import CHUNK_COLUMNS
    from tests.retrieval.index_versions import write_index_version

    write_index_version(root, pa.Table.from_pylist(chunks, schema=CHUNK_COLUMNS), Embedder(), version)


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
