"""The router server over a real trained router and a real index, with and without the relevance gate."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest

from serve_apps.config import RelevanceConfig, RouterConfig
from serve_apps.router_server import RouterServer
from tests.retrieval.index_versions import write_index_version

PATHS = ["base", "finetuned", "rag"]
QUESTION = "How do I find the eigenvalues of a matrix in Octave?"  # the default router was trained on ACL papers only
GENERAL = "Who discovered penicillin?"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, acl_chunk_table, refcard_chunk_table, embedder) -> tuple[str, str]:
    from jobs.train_router import TrainRouterConfig, main as train_router

    folder = tmp_path_factory.mktemp("router")
    train_router(TrainRouterConfig(output=str(folder / "router")))
    write_index_version(str(folder / "index"), pa.concat_tables([acl_chunk_table, refcard_chunk_table]), embedder)
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


def test_labels_that_name_no_path_of_the_app_are_warned_of_at_start(artifacts, caplog):
    router, _ = artifacts
    with caplog.at_level("WARNING"):
        server = RouterServer(RouterConfig(model=router), ["base", "rag"])  # this app has no fine-tuned path
    assert server.warn_of_unserved_labels() == ["finetuned"]
    assert "router labels ['finetuned'] name no path of this app" in caplog.text
    assert RouterServer(RouterConfig(model=router), PATHS).warn_of_unserved_labels() == []
