"""Shared fixtures: a tiny random Llama, the provisioned SmolLM2, a local S3 and a local Ray.

The S3 server and the Ray instance are real (SeaweedFS and ``ray.init``), started once
per test session on private ports so they never touch a developer's running services.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cluster.local_ray import stop_head
from cluster.local_s3 import LocalS3
from rayfleet.assets import SMOLLM2, models_dir, resolve_model

# Candidate S3 ports for the test server; each shifts all of SeaweedFS's ports, and the
# first candidate whose ports are all free wins (a dev server on 8333 or a parallel
# test session keep theirs).
TEST_S3_PORTS = range(18433, 18433 + 40 * 50, 50)


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


def unstarted_local_s3(data_dir: Path) -> LocalS3:
    """A SeaweedFS server (not started) on the first candidate port set nothing listens on."""
    candidates = (LocalS3(data_dir, s3_port=port) for port in TEST_S3_PORTS)
    server = next((c for c in candidates if all(_port_is_free(p) for p in c.all_ports())), None)
    if server is None:
        pytest.fail(f"no free port set for a test S3 among {list(TEST_S3_PORTS)}")
    return server


@pytest.fixture(scope="session")
def local_s3(tmp_path_factory) -> LocalS3:
    """A real S3 API (SeaweedFS) for the session; the AWS_* variables point at it."""
    server = unstarted_local_s3(tmp_path_factory.mktemp("s3"))
    server.start()
    os.environ.update(server.environment())
    yield server
    server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used the S3 server shows the server's last errors (its own log says why a
    request failed; the client sees only "InternalError")."""
    outcome = yield
    report = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("local_s3")
    if report.failed and server is not None and (errors := server.error_lines()):
        report.sections.append(("SeaweedFS's last errors", "\n".join(errors)))


@pytest.fixture
def s3_prefix(local_s3) -> str:
    """A fresh ``s3://`` prefix in a test bucket."""
    local_s3.create_bucket("rayfleet-test")
    return f"s3://rayfleet-test/{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ray_head(temp_dir: Path) -> tuple[subprocess.CompletedProcess, int]:
    """``ray start --head`` (2 CPUs, loopback, jobs API) on free ports of its own, its files in ``temp_dir``:
    the command's result and the head's GCS port."""
    gcs_port = free_port()
    ports = [
        f"--port={gcs_port}", f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}", f"--ray-client-server-port={free_port()}",
    ]  # fmt: skip
    ray_cli = str(Path(sys.executable).parent / "ray")
    started = subprocess.run(
        [ray_cli, "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
         "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports],
        capture_output=True, text=True,
    )  # fmt: skip
    return started, gcs_port


@pytest.fixture(scope="session")
def ray_cluster(local_s3, tmp_path_factory):
    """A real local Ray head (2 CPUs, loopback, jobs API) on free ports, seeing the test S3.

    Started with ``ray start`` on ports of its own, so it never collides with a
    developer's head (``make ray-up``) or another test session: ``ray.init`` alone
    would put every cluster's dashboard agent on the same fixed port.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray 2.60 turns token auth on for local clusters when ~/.ray/auth_token exists, and
    # clients then disagree about it; this loopback-only test head runs without it.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # On a busy 2-core machine the raylet's default 15 s wait for its dashboard agent runs out.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    # Jobs submitted to this Ray inherit this environment: our Python, the repo, the models.
    os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ["RAYFLEET_MODELS_DIR"] = str(models_dir())
    temp_dir = tmp_path_factory.mktemp("ray")
    started, gcs_port = start_ray_head(temp_dir)
    if started.returncode != 0:
        stop_head(str(temp_dir))
        pytest.fail(f"`ray start` failed ({started.returncode}):\n{started.stdout[-3000:]}\n{started.stderr[-3000:]}")
    try:
        context = ray.init(address=f"127.0.0.1:{gcs_port}", logging_level="WARNING")
        yield context
    finally:
        ray.shutdown()
        stop_head(str(temp_dir))


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
                "source": document["source"], "title": document["title"],
            })  # fmt: skip
    return rows


@pytest.fixture(scope="session")
def acl_chunks() -> list[dict]:
    """About 130 chunks of 12 real ACL papers (abstract, introduction, conclusion)."""
    return chunk_rows(12)


@pytest.fixture(scope="session")
def acl_chunk_table(acl_chunks):
    """:func:`acl_chunks` as a table of the index's chunk columns (``CHUNK_COLUMNS``)."""
    import pyarrow as pa

    from rayfleet.retrieval.chunks import CHUNK_COLUMNS

    return pa.Table.from_pylist(acl_chunks, schema=CHUNK_COLUMNS)


@pytest.fixture(scope="session")
def refcard_chunk_table():
    """The chunks ``jobs.ingest`` makes of the real GNU Octave reference card (2 dense pages),
    in the index's chunk columns."""
    import pyarrow as pa

    from rayfleet import storage
    from rayfleet.ingestion import ChunkingConfig, FileIngester
    from rayfleet.retrieval.chunks import CHUNK_COLUMNS
    from tests.text.samples import PDFS

    ingester = FileIngester(ChunkingConfig(), max_file_bytes=1 << 24, run_id="test")
    [entry] = storage.list_entries(str(PDFS / "refcard-a4.pdf"))
    return pa.Table.from_pylist(ingester.ingest(entry, {}).chunks, schema=CHUNK_COLUMNS)


@pytest.fixture(scope="session")
def embedder():
    """The index's embedder (all-MiniLM-L6-v2), loaded once."""
    from rayfleet.retrieval import Embedder

    return Embedder()
