"""The evaluation job's handling of users' own inputs and of the gate, without Ray or a model:
a Q&A set made by hand, several references, a summaries table, and which adapter version the
gate promotes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs.evaluate import (
    EvaluateConfig,
    apply_gate,
    held_out_documents_trained_on,
    judge_agreement,
    load_questions,
    rag_prompts,
    score_summaries,
    summarize_scores,
    tokenizer_of,
)
from rayfleet.engines.templates import render_prompt_ids
from rayfleet.config import load_config
from rayfleet.registry import Registry
from rayfleet.tables import write_table
from tests.retrieval.index_versions import write_index_version


def config_for(tmp_path, *overrides: str) -> EvaluateConfig:
    return load_config(EvaluateConfig, [f"qa={tmp_path}/qa", f"registry={tmp_path}/registry", *overrides])


def test_a_hand_made_q_and_a_set_without_split_or_chunk_ids_is_read_and_bad_pairs_dropped(tmp_path, caplog):
    rows = [
        {"question": "What is the capital?", "answer": "Paris", "doc_id": "d1"},
        {"question": None, "answer": "x", "doc_id": "d1"},
        {"question": "No answer?", "answer": None, "doc_id": "d1"},
        {"question": "Blank answer?", "answer": " ", "doc_id": "d1"},
        {"question": "No document?", "answer": "y", "doc_id": None},
    ]
    (tmp_path / "qa").mkdir()
    write_table(str(tmp_path / "qa" / "mine.pq"), pa.Table.from_pylist(rows[:1]))  # a .pq file is Parquet too
    write_table(str(tmp_path / "qa" / "more.parquet"), pa.Table.from_pylist(rows[1:]))
    with caplog.at_level("WARNING"):
        items = load_questions(config_for(tmp_path))
    assert [(item["question"], item["references"], item["chunk_id"]) for item in items] == [
        ("What is the capital?", ["Paris"], None)]  # fmt: skip
    assert "no split column" in caplog.text and "dropped 4 of the 5" in caplog.text


def test_several_reference_answers_per_question_are_kept(tmp_path):
    (tmp_path / "qa").mkdir()
    rows = [{"question": "Which city?", "answer": ["Lyon", " ", "Lugdunum"], "doc_id": "d2"},
            {"question": "Blank?", "answer": [" "], "doc_id": "d2"}]  # fmt: skip
    write_table(str(tmp_path / "qa" / "multi.parquet"), pa.Table.from_pylist(rows))
    (item,) = load_questions(config_for(tmp_path))
    assert item["references"] == ["Lyon", "Lugdunum"]


def test_only_the_chosen_split_is_scored_and_a_missing_column_is_named(tmp_path):
    (tmp_path / "qa").mkdir()
    splits = ["test", "train"]
    rows = [{"question": f"q{i}", "answer": "ok", "doc_id": "d", "split": split} for i, split in enumerate(splits)]
    write_table(str(tmp_path / "qa" / "part.parquet"), pa.Table.from_pylist(rows))
    assert [item["question"] for item in load_questions(config_for(tmp_path))] == ["q0"]
    write_table(
        str(tmp_path / "qa" / "bad.parquet"), pa.Table.from_pylist([{"question": "q", "reply": "a", "doc_id": "d"}])
    )
    with pytest.raises(ValueError, match=r"bad.parquet lacks column\(s\) \['answer'\]"):
        load_questions(config_for(tmp_path))


def test_numbers_one_or_several_answers_in_different_files_and_pairs_without_a_split_read_as_users_mean(
    tmp_path, caplog
):
    (tmp_path / "qa").mkdir()
    write_table(
        str(tmp_path / "qa" / "ints.parquet"),
        pa.Table.from_pylist([{"question": "How many?", "answer": 42, "doc_id": 17}]),
    )
    write_table(
        str(tmp_path / "qa" / "year.parquet"),
        pa.Table.from_pylist([{"question": 1984, "answer": "Orwell", "doc_id": "o"}]),
    )
    write_table(str(tmp_path / "qa" / "lists.parquet"),
                pa.Table.from_pylist([{"question": "Which city?", "answer": ["Lyon", "Lugdunum"],
                                       "doc_id": "d2"}]))  # fmt: skip
    items = {item["question"]: item for item in load_questions(config_for(tmp_path))}
    assert (items["How many?"]["references"], items["How many?"]["doc_id"]) == (["42"], "17")
    assert items["Which city?"]["references"] == ["Lyon", "Lugdunum"] and items["1984"]["references"] == ["Orwell"]
    write_table(str(tmp_path / "qa" / "split.parquet"),
                pa.Table.from_pylist([{"question": "Held out?", "answer": "yes", "doc_id": "d3",
                                       "split": "test"}]))  # fmt: skip
    with caplog.at_level("WARNING"):
        assert [item["question"] for item in load_questions(config_for(tmp_path))] == ["Held out?"]
    assert "3 pairs of" in caplog.text and "have no split while the others have one" in caplog.text
    with pytest.raises(ValueError, match=r"no usable 'validation' pairs \(pairs by split: no split: 3, 'test': 1\)"):
        load_questions(config_for(tmp_path, "split=validation"))


def test_files_typing_chunk_ids_and_splits_apart_combine_and_a_struct_answer_is_named(tmp_path, caplog):
    """pandas writes a category column dictionary-encoded and an id column of numbers as int64; another
    file has them as plain text. A SQuAD export's ``answers`` struct renamed ``answer`` is no answer."""
    (tmp_path / "qa").mkdir()
    write_table(str(tmp_path / "qa" / "pandas.parquet"), pa.table({
        "question": ["Who?"], "answer": ["Ada"], "doc_id": ["d1"], "chunk_id": pa.array([7]),
        "split": pa.array(["test"]).dictionary_encode()}))  # fmt: skip
    write_table(str(tmp_path / "qa" / "plain.parquet"), pa.Table.from_pylist([
        {"question": "When?", "answer": "1843", "doc_id": "d2", "chunk_id": "d2-0", "split": "test"},
        {"question": "Which letter?", "answer": "A", "doc_id": "d2", "chunk_id": "d2-1",
         "split": "test"}]))  # fmt: skip
    with caplog.at_level("WARNING"):
        items = {item["question"]: item for item in load_questions(config_for(tmp_path))}
    assert (items["Who?"]["chunk_id"], items["When?"]["chunk_id"]) == ("7", "d2-0")
    assert "Which letter?" not in items, "'A' is an article once normalised: an empty answer would score 1"
    assert "answer is only articles or punctuation once normalised" in caplog.text

    squad_answers = pa.array([{"text": ["Paris"], "answer_start": [0]}])
    write_table(str(tmp_path / "qa" / "squad.parquet"),
                pa.table({"question": ["Where?"], "answer": squad_answers, "doc_id": ["d3"]}))  # fmt: skip
    with pytest.raises(ValueError, match=r"squad.parquet: column 'answer' has type struct<.*>; expected text or num"):
        load_questions(config_for(tmp_path))


def test_a_question_that_leaves_no_room_to_answer_is_dropped_not_sent_to_fail_the_batch(tmp_path, caplog):
    (tmp_path / "qa").mkdir()
    rows = [{"question": "What is 2+2?", "answer": "4", "doc_id": "m"},
            {"question": "Summarize: " + "the cat sat on the mat. " * 700, "answer": "the mat",
             "doc_id": "long"}]  # fmt: skip
    write_table(str(tmp_path / "qa" / "qa.parquet"), pa.Table.from_pylist(rows))
    with caplog.at_level("WARNING"):
        items = load_questions(config_for(tmp_path, "judge.enabled=false"))
    assert [item["doc_id"] for item in items] == ["m"]
    assert "'too long for the context': 1" in caplog.text


def test_a_long_question_keeps_less_rag_passage_text_as_the_serving_path_does_not_dropped(
    tmp_path, embedder, acl_chunk_table
):
    write_index_version(str(tmp_path / "index"), acl_chunk_table, embedder)
    (tmp_path / "qa").mkdir()
    long_question = "Which of these findings holds? " + " ".join(acl_chunk_table["text"].to_pylist()[:12])
    rows = [{"question": "What do the authors propose?", "answer": "a model", "doc_id": "a"},
            {"question": long_question[:6000], "answer": "the first", "doc_id": "b"}]  # fmt: skip
    write_table(str(tmp_path / "qa" / "qa.parquet"), pa.Table.from_pylist(rows))
    config = config_for(tmp_path, f"index={tmp_path}/index", "judge.enabled=false")
    tokenizer = tokenizer_of(config.engine.model)
    room = config.engine.max_model_len - config.sampling.max_tokens
    question_tokens = len(tokenizer(rows[1]["question"])["input_ids"])
    assert question_tokens + config.max_context_tokens > room > question_tokens + 100  # only fewer passages fit
    items = load_questions(config)
    assert sorted(item["doc_id"] for item in items) == ["a", "b"]
    prompts = {item["doc_id"]: prompt for item, prompt in zip(items, rag_prompts(config, items))}
    assert all(len(render_prompt_ids(tokenizer, prompt.conversation)) <= room for prompt in prompts.values())
    assert prompts["a"].passages and prompts["b"].passages
    assert rows[1]["question"] in prompts["b"].conversation[-1]["content"]


def test_without_the_judge_no_reply_is_counted_unparsed():
    records = [{"scores": {"base": {"judge": None, "f1": f1}}} for f1 in (0.1, 0.5, 0.9)]
    assert judge_agreement(records, judged=False)["unparsed_judge_replies"] is None
    assert judge_agreement(records, judged=True)["unparsed_judge_replies"] == 3


def test_a_gate_on_the_judge_needs_the_judge():
    with pytest.raises(ValueError, match="gate uses the judge"):
        load_config(EvaluateConfig, ["judge.enabled=false", "gate.guard_metric=judge"])


def test_an_answer_budget_the_context_cannot_hold_is_refused_when_the_config_is_read_not_blamed_on_the_questions():
    with pytest.raises(
        ValueError, match="sampling.max_tokens 4000 leaves no room for a question in engine.max_model_len 2048"
    ):
        load_config(EvaluateConfig, ["sampling.max_tokens=4000"])
    with pytest.raises(ValueError, match="judge.engine.max_model_len 512 holds"):
        load_config(
            EvaluateConfig, ["sampling.max_tokens=500", "engine.max_model_len=1024", "judge.engine.max_model_len=512"]
        )
    load_config(EvaluateConfig, ["sampling.max_tokens=500", "judge.enabled=false", "judge.engine.max_model_len=512"])


def records_of(scores_by_candidate: dict[str, list[float]], documents: int = 10) -> list[dict]:
    count = len(next(iter(scores_by_candidate.values())))
    return [{"doc_id": f"d{index % documents}",
             "scores": {name: {"exact_match": 0.0, "f1": values[index], "rouge_l": values[index], "judge": None}
                        for name, values in scores_by_candidate.items()}}
            for index in range(count)]  # fmt: skip


def publish_two_versions(tmp_path) -> tuple[Registry, str, str]:
    registry = Registry(str(tmp_path / "registry"))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    first = registry.publish("qa", str(tmp_path / "adapter"), {}).ref
    second = registry.publish("qa", str(tmp_path / "adapter"), {}).ref
    return registry, first, second


@pytest.mark.parametrize("worse_first", [True, False])
def test_the_best_of_two_passing_versions_is_promoted_whatever_their_order(tmp_path, worse_first):
    registry, better, worse = publish_two_versions(tmp_path)
    candidates = [{"name": "better", "kind": "adapter", "adapter": better},
                  {"name": "worse", "kind": "adapter", "adapter": worse}]  # fmt: skip
    candidates = [{"name": "base", "kind": "base"}] + (candidates[::-1] if worse_first else candidates)
    config = config_for(tmp_path, f"candidates={candidates}")
    records = records_of({"base": [0.2, 0.25] * 20, "better": [0.4, 0.45] * 20, "worse": [0.39, 0.44] * 20})
    adapters = {"better": registry.resolve(better), "worse": registry.resolve(worse)}
    decisions = apply_gate(
        config,
        adapters,
        records,
        {
            name: {k: v["mean"] if v else None for k, v in metrics.items()}
            for name, metrics in summarize_scores(config, records).items()
        },
    )
    assert registry.resolve("qa@promoted").ref == better
    by_candidate = {decision["candidate"]: decision for decision in decisions}
    assert by_candidate[better]["promote"] is True and by_candidate[better]["gain_interval"]["low"] > 0
    assert by_candidate[worse]["promote"] is False and by_candidate[worse]["incumbent"] == "better"


def test_a_gain_within_noise_is_refused_and_a_missing_metric_is_a_recorded_refusal(tmp_path):
    registry, first, _ = publish_two_versions(tmp_path)
    candidates = [{"name": "base", "kind": "base"}, {"name": "lucky", "kind": "adapter", "adapter": first}]
    config = config_for(tmp_path, f"candidates={candidates}")
    # +0.05 on average, but from one document of ten: a different draw of documents would show nothing.
    records = records_of({"base": [0.2] * 20, "lucky": [0.2] * 18 + [0.7, 0.7]}, documents=10)
    adapters = {"lucky": registry.resolve(first)}
    scores = {name: {"exact_match": 0.0, "f1": sum(v) / len(v), "rouge_l": sum(v) / len(v), "judge": None}
              for name, v in {"base": [0.2] * 20, "lucky": [0.2] * 18 + [0.7, 0.7]}.items()}  # fmt: skip
    (decision,) = apply_gate(config, adapters, records, scores)
    assert decision["promote"] is False and "within noise" in decision["reason"]
    judge_gate = config_for(tmp_path, f"candidates={candidates}", "gate.guard_metric=judge")
    (refused,) = apply_gate(judge_gate, adapters, records, scores)
    assert refused["promote"] is False and "no decision possible" in refused["reason"]
    assert refused["reason"] in [recorded["reason"] for recorded in registry.decisions("qa", 1)]
    assert registry.promoted("qa") is None


def test_a_gain_on_questions_from_one_document_is_refused(tmp_path):
    registry, first, _ = publish_two_versions(tmp_path)
    candidates = [{"name": "base", "kind": "base"}, {"name": "tuned", "kind": "adapter", "adapter": first}]
    config = config_for(tmp_path, f"candidates={candidates}")
    values = {"base": [0.2, 0.3] * 15, "tuned": [0.25, 0.33] * 15}  # better on every question, all of one document
    scores = {name: {"exact_match": 0.0, "f1": sum(v) / len(v), "rouge_l": sum(v) / len(v), "judge": None}
              for name, v in values.items()}  # fmt: skip
    (decision,) = apply_gate(config, {"tuned": registry.resolve(first)}, records_of(values, documents=1), scores)
    assert decision["promote"] is False and decision["gain_interval"]["documents"] == 1
    assert "1 document(s)" in decision["reason"] and registry.promoted("qa") is None


def test_an_adapter_trained_on_held_out_documents_is_warned_of_counted_and_refused_by_the_gate(tmp_path, caplog):
    """A change of jobs.make_qa's splits after fine-tuning moves trained documents into the test split."""
    registry = Registry(str(tmp_path / "registry"))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    leaked_id, clean_id = "a" * 64, "b" * 64
    leaked = registry.publish("qa", str(tmp_path / "adapter"), {"dataset": {"train_documents": [leaked_id[:16]]}})
    clean = registry.publish("qa", str(tmp_path / "adapter"), {"dataset": {"train_documents": ["c" * 16]}})
    unknown = registry.publish("qa", str(tmp_path / "adapter"), {})
    items = [{"doc_id": leaked_id, "question": "q1"}, {"doc_id": clean_id, "question": "q2"}]
    with caplog.at_level("WARNING"):
        counts = held_out_documents_trained_on(items, {"leaked": leaked, "clean": clean, "unknown": unknown})
    assert counts == {"leaked": 1, "clean": 0, "unknown": None}
    assert "candidate 'leaked' (qa@1) was trained on 1 of the 2 held-out documents" in caplog.text

    candidates = [{"name": "base", "kind": "base"}, {"name": "leaked", "kind": "adapter", "adapter": leaked.ref}]
    config = config_for(tmp_path, f"candidates={candidates}")
    values = {"base": [0.2, 0.25] * 20, "leaked": [0.6, 0.65] * 20}  # far better: it saw the answers
    scores = {name: {"exact_match": 0.0, "f1": sum(v) / len(v), "rouge_l": sum(v) / len(v), "judge": None}
              for name, v in values.items()}  # fmt: skip
    (decision,) = apply_gate(config, {"leaked": leaked}, records_of(values), scores, counts)
    assert decision["promote"] is False and "trained on 1 of the held-out documents" in decision["reason"]
    assert registry.promoted("qa") is None
    (passed,) = apply_gate(config, {"leaked": leaked}, records_of(values), scores, {"leaked": 0})
    assert passed["promote"] is True, "the same figures, nothing trained on: promoted"

    # Now promoted, it is the incumbent: had it trained on held-out documents, no version compares fairly with it.
    both = [*candidates, {"name": "clean", "kind": "adapter", "adapter": clean.ref}]
    values["clean"] = [0.3, 0.35] * 20
    scores["clean"] = {"exact_match": 0.0, "f1": 0.325, "rouge_l": 0.325, "judge": None}
    decisions = apply_gate(config_for(tmp_path, f"candidates={both}"), {"leaked": leaked, "clean": clean},
                           records_of(values), scores, {"leaked": 1, "clean": 0})  # fmt: skip
    refused = next(decision for decision in decisions if decision["candidate"] == clean.ref)
    assert refused["promote"] is False and "qa@1 was trained on 1 of the held-out documents" in refused["reason"]


def test_summaries_are_scored_only_against_documents_with_references(tmp_path):
    write_table(str(tmp_path / "summaries.parquet"), pa.Table.from_pylist(
        [{"doc_id": "a", "summary": "We parse trees fast."}, {"doc_id": "b", "summary": "Anything."}]))  # fmt: skip
    write_table(str(tmp_path / "documents.parquet"), pa.Table.from_pylist(
        [{"doc_id": "a", "reference_challenge": "We parse trees fast."},
         {"doc_id": "b", "reference_challenge": None}]))  # fmt: skip
    config = config_for(tmp_path, "judge.enabled=false", f"summaries.summaries={tmp_path}/summaries.parquet",
                        f"summaries.documents={tmp_path}/documents.parquet")  # fmt: skip
    result = score_summaries(config)
    assert result["documents"] == 1 and result["without_references"] == 1 and result["rouge_l"]["mean"] == 1.0


def test_a_chat_set_given_as_the_q_and_a_set_is_named_as_one(tmp_path):
    (tmp_path / "qa").mkdir()
    chat = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "doc_id": "d"}]
    write_table(str(tmp_path / "qa" / "test.parquet"), pa.Table.from_pylist(chat))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['question', 'answer'\].*a chat \(SFT\) set.* qa/"):
        load_questions(config_for(tmp_path))
