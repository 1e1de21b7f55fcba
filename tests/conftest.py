"""Shared fixtures: a tiny random Llama, the provisioned SmolLM2, a local S3 and a local Ray.

The S3 server and the Ray instance are real (SeaweedFS and ``ray.init``), started once
per test session on private ports so they never touch a developer's running services.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

from cluster.local_s3 import LocalS3
from rayfleet.assets import SMOLLM2, models_dir, resolve_model

TEST_S3_PORT = 18433  # its derived ports (+1000..+25000) avoid a dev server on 8333


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The provisioned SmolLM2-135M-Instruct folder (``make setup`` provisions it)."""
    return resolve_model(SMOLLM2)


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory, smollm2_path) -> Path:
    """A tiny random-weight Llama with SmolLM2's tokenizer and chat template (fast unit tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,  # tied, a random model just repeats the last prompt token ("\n")
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory) -> LocalS3:
    """A real S3 API (SeaweedFS) for the session; the AWS_* variables point at it."""
    if not _port_is_free(TEST_S3_PORT):
        pytest.fail(f"port {TEST_S3_PORT} is taken: stop whatever holds it (an earlier test S3?)")
    server = LocalS3(tmp_path_factory.mktemp("s3"), s3_port=TEST_S3_PORT)
    server.start()
    os.environ.update(server.environment())
    yield server
    server.stop()


@pytest.fixture
def s3_prefix(local_s3) -> str:
    """A fresh ``s3://`` prefix in a test bucket."""
    local_s3.create_bucket("rayfleet-test")
    return f"s3://rayfleet-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def ray_cluster(local_s3, tmp_path_factory):
    """A real local Ray (2 CPUs, loopback, dashboard for the jobs API) that sees the test S3."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Jobs submitted to this Ray inherit this environment: our Python, the repo, the models.
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ["RAYFLEET_MODELS_DIR"] = str(models_dir())
    context = ray.init(
        num_cpus=2,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        logging_level="WARNING",
    )
    yield context
    ray.shutdown()


def chunk_rows(papers: int, max_tokens: int = 128, split: str = "test") -> list[dict]:
    """Chunks of real ACL papers (``jobs.demo_documents``) in the ingest job's chunks columns."""
    from transformers import AutoTokenizer

    from jobs.demo_documents import DemoDocumentsConfig, build_documents
    from rayfleet.assets import MINILM
    from rayfleet.text.chunking import split_by_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM)))
    rows = []
    for document in build_documents(DemoDocumentsConfig(output="unused", count=papers, split=split)).to_pylist():
        for ordinal, text in enumerate(split_by_tokens(tokenizer, document["text"], max_tokens)):
            rows.append({
                "chunk_id": f"{document['doc_id']}#{ordinal}", "doc_id": document["doc_id"], "ordinal": ordinal,
                "text": text, "token_count": len(tokenizer(text, add_special_tokens=False)["input_ids"]),
                "page_start": None, "page_end": None, "heading": text.split("\n", 1)[0] if ordinal == 0 else None,
                "source": document["source"],
            })  # fmt: skip
    return rows


@pytest.fixture(scope="session")
def acl_chunks() -> list[dict]:
    """About 130 chunks of 12 real ACL papers (abstract, introduction, conclusion)."""
    return chunk_rows(12)
