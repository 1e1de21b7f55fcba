"""The RAG prompt shared by the serving path and the evaluation job, and its citations."""

import pytest
from transformers import AutoTokenizer

from rayfleet.assets import MINILM, resolve_model
from rayfleet.engines.templates import render_prompt_ids
from rayfleet.retrieval.rag import (
    EARLIER_QUERY_WORDS,
    MIN_PASSAGE_TOKENS,
    RAG_INSTRUCTIONS,
    PromptTooLong,
    chat_parts,
    citations_of,
    fit_grounded_prompt,
    fit_to_budget,
    grounded_conversation,
    passage_label,
    prompt_layout_id,
    recent_turns,
    retrieval_query,
)
from rayfleet.retrieval.retriever import Hit

TOKENIZER = AutoTokenizer.from_pretrained(str(resolve_model(MINILM)))


def hit(number: int, text: str, page: int | None = None, **names) -> Hit:
    names = {"heading": None, "source": None} | names
    return Hit(f"doc{number}#0", f"doc{number}", text, 0.5 + number / 10, page, page, **names)


def passage_tokens(number: int, passage: Hit) -> int:
    """Tokens a passage takes in the prompt: its ``[n] (label)`` and its text."""
    text = f"[{number}] ({passage_label(passage)}) {passage.text}"
    return len(TOKENIZER(text, add_special_tokens=False)["input_ids"])


def test_hits_are_kept_best_first_while_they_fit_the_budget():
    hits = [hit(1, "word " * 50), hit(2, "word " * 40), hit(3, "word " * 5)]
    both = passage_tokens(1, hits[0]) + passage_tokens(2, hits[1])
    assert [h.chunk_id for h in fit_to_budget(hits, TOKENIZER, both)] == ["doc1#0", "doc2#0"]
    assert [h.chunk_id for h in fit_to_budget(hits, TOKENIZER, 10)] == ["doc1#0"], "the best hit is always kept"


def test_the_budget_counts_the_passage_labels():
    hits = [hit(1, "word " * 50, 4, title="Valve manual"), hit(2, "word " * 40, 7, title="Pump manual")]
    assert [h.chunk_id for h in fit_to_budget(hits, TOKENIZER, 90 + 4)] == ["doc1#0"], "90 words of text, labels beyond"


def test_a_long_hit_is_skipped_and_a_shorter_lower_ranked_one_still_fits():
    hits = [hit(1, "word " * 50), hit(2, "word " * 60), hit(3, "word " * 5)]
    budget = passage_tokens(1, hits[0]) + passage_tokens(2, hits[2])
    assert [h.chunk_id for h in fit_to_budget(hits, TOKENIZER, budget)] == ["doc1#0", "doc3#0"]


def test_a_passage_quoting_special_tokens_is_counted_as_the_prompt_holds_it():
    quoting = hit(2, "[SEP] " * 30)  # as message text each "[SEP]" stays text: three tokens, not the one special
    hits = [hit(1, "word " * 5), quoting]
    with_it, without_it = (
        len(render_prompt_ids(TOKENIZER, grounded_conversation("Q?", kept, TOKENIZER, 768)))
        for kept in (hits, hits[:1])
    )
    assert with_it - without_it > 80
    budget = passage_tokens(1, hits[0]) + with_it - without_it - 10
    assert [h.chunk_id for h in fit_to_budget(hits, TOKENIZER, budget)] == ["doc1#0"]


def test_the_whole_prompt_fits_the_model_context_with_labels_and_conversation():
    hits = [hit(n, f"passage {n} " + "word " * 200, n, title=f"Manual {n}", heading="Maintenance") for n in (1, 2, 3)]
    history = [{"role": "user", "content": "earlier " * 100}, {"role": "assistant", "content": "answer " * 20}]
    full_ids = render_prompt_ids(TOKENIZER, grounded_conversation("What?", hits, TOKENIZER, 768, "Be brief.", history))
    for room in (len(full_ids), 500, 300):
        passages, conversation, prompt_ids = fit_grounded_prompt(
            "What?", hits, TOKENIZER, 768, room, "Be brief.", history
        )
        assert len(prompt_ids) <= room and passages == hits[: len(passages)] and passages
        assert prompt_ids == render_prompt_ids(TOKENIZER, conversation)
        assert all(f"({passage_label(p)})" in conversation[-1]["content"] for p in passages)
    assert len(fit_grounded_prompt("What?", hits, TOKENIZER, 768, len(full_ids), "Be brief.", history)[0]) == 3
    assert len(fit_grounded_prompt("What?", hits, TOKENIZER, 768, 300, "Be brief.", history)[0]) == 1


def test_a_question_that_leaves_no_room_for_passages_is_refused():
    hits = [hit(1, "word " * 200)]
    question = "why " * 400
    alone = len(render_prompt_ids(TOKENIZER, grounded_conversation(question, [], TOKENIZER, 0)))
    with pytest.raises(PromptTooLong, match=f"take {alone} prompt tokens .* fewer than {MIN_PASSAGE_TOKENS}"):
        fit_grounded_prompt(question, hits, TOKENIZER, 768, alone + MIN_PASSAGE_TOKENS - 10)


def test_passages_are_numbered_name_their_document_and_page_and_are_cut():
    conversation = grounded_conversation("What opens at 3 bar?",
                                         [hit(1, "the valve opens at 3 bar.", 4), hit(2, "x " * 100)],
                                         TOKENIZER, 8, system_prompt="Be brief.")  # fmt: skip
    assert conversation[0] == {"role": "system", "content": f"Be brief.\n\n{RAG_INSTRUCTIONS}"}
    user = conversation[1]["content"]
    assert user.startswith("Context:\n[1] (doc1, page 4) the valve opens at 3 bar.\n\n[2] (doc2) x x x")
    assert "(doc2) " + "x " * 7 + "x\n\nQuestion" in user and user.endswith("Question: What opens at 3 bar?")


@pytest.mark.parametrize(
    "names, label",
    [
        ({"title": "Valve manual", "source": "s3://b/raw/valves.pdf", "heading": "Pressure"},
         "Valve manual, page 4, section Pressure"),
        ({"title": "Valve manual", "heading": "Valve manual"}, "Valve manual, page 4"),
        ({"source": "s3://b/raw/valves.pdf"}, "valves.pdf, page 4"),
        ({"source": "s3://b/corpus/chunks/part-0.parquet"}, "doc1, page 4"),  # a chunk attributed to its table
        ({}, "doc1, page 4"),
    ],
)  # fmt: skip
def test_a_passage_is_named_by_its_title_else_its_file_else_its_id(names, label):
    assert passage_label(hit(1, "text", 4, **names)) == label


def test_citations_name_document_chunk_page_title_and_file():
    assert citations_of([hit(2, "text", 7, title="Valve manual", source="s3://b/raw/valves.pdf")]) == [
        {"doc_id": "doc2", "chunk_id": "doc2#0", "page": 7, "title": "Valve manual", "source": "s3://b/raw/valves.pdf",
         "score": 0.7}]  # fmt: skip


CHAT = [
    {"role": "system", "content": "You help pump engineers."},
    {"role": "user", "content": "What pressure opens the relief valve?"},
    {"role": "assistant", "content": "3 bar [1]."},
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "And when does it close?"},
]


def test_a_chat_splits_into_system_text_earlier_turns_and_the_question():
    system, earlier, question = chat_parts(CHAT)
    assert system == "You help pump engineers.\n\nAnswer briefly."
    assert earlier == CHAT[1:3] and question == "And when does it close?"
    assert chat_parts([{"role": "user", "content": "Hi"}]) == (None, [], "Hi")
    assert chat_parts([{"role": "assistant", "content": "Ask me."}]) == (None, [], "Ask me.")


def test_a_follow_up_is_searched_with_the_users_turn_before_it():
    _, earlier, question = chat_parts(CHAT)
    assert retrieval_query(question, earlier) == "And when does it close?\nWhat pressure opens the relief valve?"
    assert retrieval_query("What opens at 3 bar?", []) == "What opens at 3 bar?"


def test_a_long_earlier_turn_never_pushes_the_question_past_what_the_embedder_reads():
    earlier = [{"role": "user", "content": "Here is some background on our company history. " * 60 + "Thanks."}]
    question = "How often must the pump be serviced?"
    query = retrieval_query(question, earlier)
    read = TOKENIZER.decode(TOKENIZER(query)["input_ids"][:256])  # all-MiniLM-L6-v2 reads 256 tokens
    assert question.lower().rstrip("?") in read
    assert query.startswith(question) and query.endswith("company history. Thanks.")
    assert len(query.split()) == len(question.split()) + EARLIER_QUERY_WORDS
    chinese = [{"role": "user", "content": "水泵必须每六个月由认证技术人员进行维护。" * 100}]
    assert len(retrieval_query("多久？", chinese)) <= len("多久？") + 1 + 400, "text without spaces is capped too"


def test_earlier_turns_are_kept_newest_first_within_the_budget_starting_with_a_user_turn():
    turns = [{"role": "user", "content": "word " * 30}, {"role": "assistant", "content": "word " * 30},
             {"role": "user", "content": "word " * 10}, {"role": "assistant", "content": "word " * 10}]  # fmt: skip
    assert recent_turns(turns, TOKENIZER, 1000) == turns
    assert recent_turns(turns, TOKENIZER, 50) == turns[2:]
    assert recent_turns(turns, TOKENIZER, 15) == [], "an answer without its question is dropped too"
    assert recent_turns(turns, TOKENIZER, 0) == []


def test_the_grounded_question_follows_the_earlier_turns():
    _, earlier, question = chat_parts(CHAT)
    conversation = grounded_conversation(
        question, [hit(1, "it closes at two bar.")], TOKENIZER, 64, "Be brief.", earlier
    )
    assert [message["role"] for message in conversation] == ["system", "user", "assistant", "user"]
    assert conversation[1:3] == CHAT[1:3]
    assert conversation[-1]["content"].endswith("it closes at two bar.\n\nQuestion: And when does it close?")


def test_the_prompt_layout_id_is_stable_and_changes_with_the_layout(monkeypatch):
    import rayfleet.retrieval.rag as rag

    first = prompt_layout_id(TOKENIZER)
    assert prompt_layout_id(TOKENIZER) == first and len(first) == 8
    monkeypatch.setattr(rag, "RAG_INSTRUCTIONS", RAG_INSTRUCTIONS + " Be brief.")
    new_instructions = prompt_layout_id(TOKENIZER)
    monkeypatch.setattr(rag, "passage_label", lambda hit: hit.doc_id)
    assert len({first, new_instructions, prompt_layout_id(TOKENIZER)}) == 3
