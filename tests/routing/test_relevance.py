"""The relevance gate over real indexes: ACL papers and the Octave reference card, real MiniLM.

The questions and general requests here are none of the router's seed list, which sets the
automatic threshold.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from rayfleet.retrieval.chunks import CHUNK_COLUMNS
from rayfleet.routing.relevance import AUTO_FLOOR, RelevanceGate
from tests.retrieval.index_versions import write_index_version

OCTAVE_QUESTIONS = [
    "How do I find the eigenvalues of a matrix in Octave?",
    "Which Octave command clears all variables?",
    "How do I get help on a function in Octave?",
]
GENERAL = [
    "Who discovered penicillin?",
    "Write a short story about a dragon who loves tea.",
    "What is the population of Canada?",
]


def test_questions_about_the_documents_go_to_rag_and_general_requests_to_base(
    tmp_path, acl_chunk_table, refcard_chunk_table, embedder
):
    write_index_version(str(tmp_path), pa.concat_tables([acl_chunk_table, refcard_chunk_table]), embedder)
    gate = RelevanceGate(str(tmp_path), refresh_s=0)
    title = acl_chunk_table["title"][0].as_py()

    for question in OCTAVE_QUESTIONS + [f'What dataset does "{title}" evaluate on?']:
        label, score = gate.settle("base", question)
        assert (label, score >= gate.threshold()) == ("rag", True), (question, score, gate.threshold())
    for request in GENERAL:
        label, score = gate.settle("rag", request)
        assert (label, score < gate.threshold()) == ("base", True), (request, score, gate.threshold())


def test_the_gate_leaves_other_labels_and_waits_for_a_first_version(tmp_path, refcard_chunk_table, embedder):
    gate = RelevanceGate(str(tmp_path), refresh_s=0)
    assert gate.settle("base", OCTAVE_QUESTIONS[0]) == ("base", None), "no version yet: the classifier's label stands"
    assert gate.threshold() is None

    write_index_version(str(tmp_path), refcard_chunk_table, embedder)
    gate.index.refresh()
    assert gate.settle("finetuned", OCTAVE_QUESTIONS[0]) == ("finetuned", None), "a task is not the index's to decide"
    assert gate.settle("base", OCTAVE_QUESTIONS[0])[0] == "rag"


def test_a_new_version_makes_new_documents_relevant(tmp_path, acl_chunk_table, refcard_chunk_table, embedder):
    write_index_version(str(tmp_path), acl_chunk_table, embedder, version="v1")
    gate = RelevanceGate(str(tmp_path), refresh_s=0)
    assert [gate.settle("base", question)[0] for question in OCTAVE_QUESTIONS] == ["base"] * 3

    write_index_version(str(tmp_path), pa.concat_tables([acl_chunk_table, refcard_chunk_table]), embedder, version="v2")
    assert gate.index.refresh()
    assert [gate.settle("base", question)[0] for question in OCTAVE_QUESTIONS] == ["rag"] * 3
    assert set(gate.thresholds.by_version) == {"v1", "v2"}, "each version is calibrated when it is loaded"


def test_a_tiny_index_gets_the_floor_as_its_threshold(tmp_path, embedder):
    text = "Facilities. The boiler room key is kept at the front desk of building C. Sign it out with security."
    page = pa.Table.from_pylist(
        [{"chunk_id": "p-0", "doc_id": "p", "text": text, "title": "Boiler room"}], schema=CHUNK_COLUMNS
    )
    write_index_version(str(tmp_path), page, embedder)
    gate = RelevanceGate(str(tmp_path), refresh_s=0)
    assert gate.threshold() == AUTO_FLOOR, "no general request comes close to one page: the floor holds"
    assert gate.settle("base", "Where is the boiler room key kept?")[0] == "rag"
    assert gate.settle("rag", GENERAL[1])[0] == "base"


def test_a_fixed_threshold_is_used_as_given(tmp_path, refcard_chunk_table, embedder):
    write_index_version(str(tmp_path), refcard_chunk_table, embedder)
    assert RelevanceGate(str(tmp_path), min_score=0.99, refresh_s=0).settle("rag", OCTAVE_QUESTIONS[0])[0] == "base"
    assert RelevanceGate(str(tmp_path), min_score=-1.0, refresh_s=0).settle("base", GENERAL[0])[0] == "rag"


@pytest.mark.parametrize(
    "options, complaint",
    [({"min_score": 1.5}, "cosine similarity"), ({"relevant_label": "base"}, "both 'base'")],
)
def test_bad_settings_fail_at_once(tmp_path, options, complaint):
    with pytest.raises(ValueError, match=complaint):
        RelevanceGate(str(tmp_path), **options)
