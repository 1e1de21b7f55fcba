"""The router server over a real trained router and a real index, with and without the relevance gate."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from rayfleet.retrieval import Embedder
from rayfleet.retrieval.chunks import CHUNK_COLUMNS
from serve_apps.config import RelevanceConfig, RouterConfig
from serve_apps.router_server import RouterServer
from tests.retrieval.index_versions import write_index_version

PATHS = ["base", "finetuned", "rag"]
QUESTION = "How do I find the eigenvalues of a matrix in Octave?"  # the default router was trained on ACL papers only
GENERAL = "Who discovered penicillin?"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, acl_chunks, refcard_chunks) -> tuple[str, str]:
    from jobs.train_router import TrainRouterConfig, main as train_router

    folder = tmp_path_factory.mktemp("router")
    train_router(TrainRouterConfig(output=str(folder / "router")))
    chunks = pa.concat_tables([
        pa.Table.from_pylist(acl_chunks, schema=CHUNK_COLUMNS),
        pa.Table.from_pylist(refcard_chunks).select(CHUNK_COLUMNS.names).cast(CHUNK_COLUMNS),
    ])  # fmt: skip
    write_index_version(str(folder / "index"), chunks, Embedder())
    return str(folder / "router"), str(folder / "index")


def route(server: RouterServer, text: str):
    return asyncio.run(server.route(text))


def test_the_gate_sends_questions_about_indexed_documents_to_rag(artifacts):
    router, index = artifacts
    classifier_only = RouterServer(RouterConfig(model=router), PATHS)
    gated = RouterServer(RouterConfig(model=router, relevance=RelevanceConfig(index=index, refresh_s=0)), PATHS)

    assert route(classifier_only, QUESTION).path == "base", "the classifier alone knows only the ACL papers"
    choice = route(gated, QUESTION)
    assert choice.path == "rag" and choice.relevance >= gated.gate.threshold()
    assert choice.label == "base" and choice.confidence is not None, "the classifier's own verdict is still reported"
    general = route(gated, GENERAL)
    assert general.path == "base" and general.relevance < gated.gate.threshold()


def test_the_gate_alone_routes_without_a_trained_router(artifacts):
    _, index = artifacts
    server = RouterServer(RouterConfig(relevance=RelevanceConfig(index=index, refresh_s=0)), PATHS)
    assert [route(server, text).path for text in (QUESTION, GENERAL)] == ["rag", "base"]
    assert route(server, QUESTION).confidence is None
