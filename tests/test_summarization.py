"""Map-reduce summarization over a real engine (tiny Llama): nothing truncated, every level batched."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rayfleet.engines import EngineConfig, SamplingConfig, create_engine
from rayfleet.summarization import SAFETY_MARGIN_TOKENS, Summarizer, SummaryPrompts, ended_at_sentence


class RecordingEngine:
    """Wraps a real engine and records every call (a spy, not a fake: the engine really runs)."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[list] = []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, conversations, sampling):
        self.calls.append(list(conversations))
        return self.engine.generate(conversations, sampling)


@pytest.fixture(scope="module")
def engine(tiny_llama_path):
    return RecordingEngine(
        create_engine(EngineConfig(kind="transformers", model=str(tiny_llama_path), transformers_batch_size=16))
    )


LONG_TEXT = "\n\n".join(f"Section {i}. " + f"Fact {i} is about topic {i}. " * 40 for i in range(12))


def test_short_document_takes_one_call(engine, caplog):
    caplog.set_level("INFO", logger="rayfleet.summarization")
    summarizer = Summarizer(engine, SamplingConfig(max_tokens=8), SummaryPrompts(), max_model_len=512)
    engine.calls.clear()
    [result] = summarizer.summarize([("d1", "A short document about cats.")])
    assert (result.llm_calls, result.reduce_levels) == (1, 0)
    assert result.summary and result.completion_tokens >= 1
    assert len(engine.calls) == 1
    assert "map-reduce" not in caplog.text, "no progress lines for a batch of short documents"


def test_long_document_is_mapped_and_reduced_never_truncated(engine, caplog):
    caplog.set_level("INFO", logger="rayfleet.summarization")
    sampling = SamplingConfig(max_tokens=16)
    summarizer = Summarizer(engine, sampling, SummaryPrompts(), max_model_len=384)
    engine.calls.clear()
    results = summarizer.summarize([("long", LONG_TEXT), ("short", "Two words.")])
    long_result, short_result = results
    assert long_result.input_tokens > summarizer.piece_budget
    assert long_result.llm_calls > 2 and long_result.reduce_levels >= 1
    assert short_result.llm_calls == 1
    # Every prompt fits the context with room for the answer.
    for call in engine.calls:
        for conversation in call:
            assert len(engine.prompt_token_ids(conversation)) + sampling.max_tokens <= 384
    # The first level covers the whole document: every section reaches the model.
    first_level_text = " ".join(c[1]["content"] for c in engine.calls[0])
    assert all(f"Section {i}." in first_level_text for i in range(12))
    # The short document rode in the same first batch as the long one's pieces.
    assert any("Two words." in c[1]["content"] for c in engine.calls[0])
    # A progress line per level, the first one counting the pieces and both documents.
    levels = [record.getMessage() for record in caplog.records if "map-reduce level" in record.getMessage()]
    assert len(levels) == len(engine.calls)
    assert levels[0].startswith(f"map-reduce level 1: {len(engine.calls[0])} calls for 2 documents (1 long)")


def test_documents_done_while_a_long_one_goes_on_are_handed_over_at_once(engine):
    summarizer = Summarizer(engine, SamplingConfig(max_tokens=16), SummaryPrompts(), max_model_len=384)
    handed: list[tuple[int, list[str]]] = []
    engine.calls.clear()
    results = summarizer.summarize(
        [("short-1", "Two words."), ("long", LONG_TEXT), ("short-2", "Three more words.")],
        on_finished=lambda finished: handed.append((len(engine.calls), [result.doc_id for result in finished])),
    )
    assert handed == [(1, ["short-1", "short-2"])], "after the first level, while the long one is reduced"
    assert len(engine.calls) > 1 and [result.doc_id for result in results] == ["short-1", "long", "short-2"]
    handed.clear()
    summarizer.summarize([("a", "Two words."), ("b", "One more.")], on_finished=lambda done: handed.append(done))
    assert handed == [], "a batch that ends in one level hands nothing over early"


def test_budget_too_small_is_refused(engine):
    with pytest.raises(ValueError, match="Raise engine.max_model_len"):
        Summarizer(engine, SamplingConfig(max_tokens=200), SummaryPrompts(), max_model_len=256)


class FaultInjectionNeverShorterEngine(RecordingEngine):
    """Injects a fault: a model whose every answer is exactly as long as the token budget allows."""

    def generate(self, conversations, sampling):
        answers = self.engine.generate(conversations, sampling)
        return [replace(answer, text=" ".join(["cat"] * sampling.max_tokens)) for answer in answers]


def test_map_reduce_that_does_not_shrink_fails_the_document_instead_of_looping(engine):
    sampling = SamplingConfig(max_tokens=16)
    probe = Summarizer(engine, sampling, SummaryPrompts(), max_model_len=512)
    scaffolding = 512 - probe.piece_budget - sampling.max_tokens - SAFETY_MARGIN_TOKENS
    budget = 2 * sampling.max_tokens  # the smallest accepted: two answers and a separator do not fit
    summarizer = Summarizer(FaultInjectionNeverShorterEngine(engine.engine), sampling, SummaryPrompts(),
                            max_model_len=scaffolding + sampling.max_tokens + SAFETY_MARGIN_TOKENS
                            + budget)  # fmt: skip
    assert summarizer.piece_budget == budget
    with pytest.raises(ValueError, match="no shorter than what they summarize .* never end"):
        summarizer.summarize([("long", LONG_TEXT)])


@pytest.mark.parametrize("step", ["document", "part", "combine"])
def test_every_default_prompt_gives_its_instruction_after_the_text(step):
    template = getattr(SummaryPrompts(), step)
    before, after = template.split("{text}")
    assert before.endswith(":\n") and len(before) < 60, "only a label before the text: a long one would bury more"
    assert "summar" in after.lower() and after.strip().endswith("."), "the instruction comes after the text"


def test_prompt_without_placeholder_is_refused():
    with pytest.raises(ValueError, match="placeholder"):
        SummaryPrompts(document="Summarize please.")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The model is small. It was trained on the", "The model is small."),
        ('They say "it works." Then the', 'They say "it works."'),
        ("Is it new? Yes! And", "Is it new? Yes!"),
        ("Smith et al. show it, e.g. on tweets. The main", "Smith et al. show it, e.g. on tweets."),
        ("Accuracy rose from 3.5 to 4.2 points. Then", "Accuracy rose from 3.5 to 4.2 points."),
        ("第一句。第二句没有", "第一句。"),
        ("No sentence ends here", "No sentence ends here"),
        (". and nothing else", ". and nothing else"),
    ],
)
def test_ended_at_sentence_keeps_the_complete_sentences(text, expected):
    assert ended_at_sentence(text) == expected


@pytest.fixture(scope="module")
def smollm2_engine(smollm2_path):
    return create_engine(EngineConfig(kind="transformers", model=str(smollm2_path)))


def test_a_summary_cut_by_max_tokens_ends_at_its_last_complete_sentence(smollm2_engine):
    document = ("LoRA adapts a large model by training small low-rank matrices beside its frozen weights. "
                "It cuts the memory of fine-tuning several times and keeps the base model shared. ") * 3  # fmt: skip
    sampling = SamplingConfig(max_tokens=48)
    [cut] = Summarizer(smollm2_engine, sampling, SummaryPrompts(), 1024, end_at_sentence=False).summarize(
        [("d", document)]
    )
    [ended] = Summarizer(smollm2_engine, sampling, SummaryPrompts(), 1024).summarize([("d", document)])

    assert cut.finish_reason == ended.finish_reason == "length"
    assert not cut.summary.rstrip().endswith((".", "!", "?")), "precondition: greedy decoding cut this one mid-sentence"
    assert ended.summary.rstrip().endswith((".", "!", "?"))
    assert cut.summary.startswith(ended.summary) and len(ended.summary) < len(cut.summary)
    assert ended.completion_tokens == cut.completion_tokens, "the tokens generated are still counted"
