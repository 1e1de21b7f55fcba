"""Q&A pieces without a model: lenient parsing, validation, near-duplicates, splits, user files."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from rayfleet.qa import (
    QaValidation,
    SplitConfig,
    check_pair,
    drop_near_duplicates,
    extract_pairs,
    read_user_qa,
    split_of,
)
from rayfleet.tables import write_table

CHUNK = (
    "The load command executes each line of the specified input file as if it had been typed in "
    "interactively. Files created by the save command can later be loaded."
)


def test_json_is_found_inside_prose_and_broken_json_is_skipped():
    output = (
        'Sure! Here they are:\n[{"question": "What does load execute?", "answer": "each line of the input file"},\n'
        '{"Question": "Which command creates files?", "Answer": "the save command"}] {"question": "broken'
    )
    assert extract_pairs(output) == [
        ("What does load execute?", "each line of the input file"),
        ("Which command creates files?", "the save command"),
    ]


def test_nested_json_and_qa_lines_fallback():
    assert extract_pairs('{"pairs": [{"q": "What is loaded?", "a": "files"}]}') == [("What is loaded?", "files")]
    lines = "1. Q: What does load execute?\nA: each line of the file\n2. Question: What creates files?\nAnswer: save"
    assert extract_pairs(lines) == [
        ("What does load execute?", "each line of the file"),
        ("What creates files?", "save"),
    ]
    assert extract_pairs("I cannot help with that. ]]}{") == []


def test_grounded_pair_is_kept_and_each_failure_has_its_reason():
    validation = QaValidation()
    assert (
        check_pair("What does the load command execute?", "each line of the specified input file", CHUNK, validation)
        is None
    )
    reasons = {
        ("Load?", "each line"): "question_length",
        ("What does the load command execute?", ""): "answer_length",
        ("What does the load command execute?", "a random forest with gradient boosting"): "ungrounded",
        ("Who won the football world cup final?", "the save command"): "off_topic",
        ("Which command creates files later loaded?", "command files"): "answer_in_question",
        ("Can files created by save be loaded?", "yes, they can"): "uninformative",
        ("The load command executes each line of the file.", "each line of the specified input file"): "not_a_question",
    }
    for (question, answer), reason in reasons.items():
        verdict = check_pair(question, answer, CHUNK, validation)
        assert verdict is not None and verdict.reason == reason, (question, answer, verdict)


def test_near_duplicates_within_a_document_are_dropped():
    pairs = [
        {"question": "What does the load command execute?", "doc_id": "d1"},
        {"question": "What does the load command execute ?", "doc_id": "d1"},
        {"question": "What does the load command execute exactly?", "doc_id": "d1"},
        {"question": "Which files can be loaded later?", "doc_id": "d1"},
        {"question": "Which files can be loaded later?", "doc_id": "d2"},
    ]
    kept, duplicates = drop_near_duplicates(pairs, 0.8)
    assert [pair["question"] for pair in kept] == [
        "What does the load command execute?",
        "Which files can be loaded later?",
    ]
    assert len(duplicates) == 3


def test_splits_are_by_document_stable_and_near_the_shares():
    splits = SplitConfig(validation=0.1, test=0.2)
    drawn = [split_of(f"doc-{i}", splits) for i in range(2000)]
    assert drawn == [split_of(f"doc-{i}", splits) for i in range(2000)]
    assert abs(drawn.count("test") / 2000 - 0.2) < 0.04 and abs(drawn.count("validation") / 2000 - 0.1) < 0.04
    assert split_of("doc-1", SplitConfig(seed="other")) in {"train", "validation", "test"}


def test_user_qa_files_are_validated_with_clear_errors(tmp_path):
    lines = [
        {"question": "What does load do?", "answer": "runs a file", "doc_id": "d1", "chunk_id": "d1-00000"},
        {"question": "No answer here?", "doc_id": "d1"},
        {"question": "Typo?", "anwser": "x", "doc_id": "d1"},
        {"question": 5, "answer": "five", "doc_id": "d2"},
    ]
    (tmp_path / "user.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    write_table(
        str(tmp_path / "user.parquet"), pa.table({"question": ["Q from parquet?"], "answer": ["A"], "doc_id": ["d3"]})
    )
    (tmp_path / "user.csv").write_text("question,answer\n")
    # pandas writes a filtered frame's index beside its columns (__index_level_0__); .pq is Parquet too
    filtered = pa.table({"question": ["From a filtered frame?"], "answer": ["B"], "doc_id": ["d4"],
                         "__index_level_0__": [7]})  # fmt: skip
    write_table(str(tmp_path / "pandas.pq"), filtered)

    pairs, errors = read_user_qa(str(tmp_path), "run")
    assert [(pair["question"], pair["chunk_id"]) for pair in pairs] == [
        ("From a filtered frame?", None),
        ("What does load do?", "d1-00000"),
        ("Q from parquet?", None),
    ]
    assert {row["doc_id"] for row in errors if row["source"].endswith("user.jsonl")} == {"d1", "d2", None}
    messages = {(row["source"].rsplit("/", 1)[-1], row["row"]): row["error"] for row in errors}
    assert messages[("user.jsonl", 1)] == "line 2: missing 'answer'"
    assert "unknown field(s) ['anwser']" in messages[("user.jsonl", 2)]
    assert "'question' must be a non-empty string, got int" in messages[("user.jsonl", 3)]
    assert "line 5: not valid JSON" in messages[("user.jsonl", 4)]
    assert "use .jsonl or .parquet" in messages[("user.csv", None)]


def test_prompt_shows_a_worked_example_before_the_request():
    from rayfleet.qa import QaPrompts

    conversation = QaPrompts().conversation("The valve opens at 3 bar.", 2)
    assert [message["role"] for message in conversation] == ["system", "user", "assistant", "user"]
    assert extract_pairs(conversation[2]["content"]) == [
        ("How often must the pump be serviced?", "every 6 months"),
        ("Which oil goes in the gearbox?", "grade 40 oil"),
    ]
    assert "The valve opens at 3 bar." in conversation[3]["content"]
    assert [m["role"] for m in QaPrompts(example_text=None).conversation("x", 1)] == ["system", "user"]


def test_answer_sentences_prefers_informative_sentences_in_text_order():
    from rayfleet.qa import answer_sentences

    text = (
        "See below. The valve opens at 3 bar when the pump starts in winter. "
        "This is it and that is so and it was. "
        "Grade 40 oil from Acme keeps the gearbox cool under heavy load. Too short."
    )
    assert answer_sentences(text, 2, 6, 40) == [
        "The valve opens at 3 bar when the pump starts in winter.",
        "Grade 40 oil from Acme keeps the gearbox cool under heavy load.",
    ]
    # 9 content words against 7: the oil sentence is the more informative one.
    assert answer_sentences(text, 1, 6, 40) == ["Grade 40 oil from Acme keeps the gearbox cool under heavy load."]
    assert answer_sentences("no sentence end here at all in this text", 3, 2, 40) == []


def test_answer_sentences_are_whole_sentences_within_one_paragraph_or_list_item():
    from rayfleet.qa import answer_sentences

    text = (
        "restarted worker picks up the last checkpoint and goes on from there.\n\n"  # the chunk starts mid-sentence
        "## Restarts\n\n"
        "```bash\nray job submit -- python -m jobs.finetune\n```\n\n"
        "The dispatcher retries a failed job three times with exponential backoff.\n"
        "- Rules select a job module by bucket, prefix and suffix of the new file.\n"
        "- The ledger records every event once, so a restart never submits twice."
    )
    assert answer_sentences(text, 5, 6, 40) == [
        "The dispatcher retries a failed job three times with exponential backoff.",
        "Rules select a job module by bucket, prefix and suffix of the new file.",
        "The ledger records every event once, so a restart never submits twice.",
    ]


def test_a_chunk_that_continues_a_document_loses_its_first_sentence():
    from rayfleet.qa import answer_sentences

    text = "IONAL_COLUMNS are kept when the chunk is written. The valve opens at 3 bar when the pump starts."
    assert answer_sentences(text, 2, 6, 40) == [
        "IONAL_COLUMNS are kept when the chunk is written.",
        "The valve opens at 3 bar when the pump starts."]  # fmt: skip
    assert answer_sentences(text, 2, 6, 40, skip_first=True) == ["The valve opens at 3 bar when the pump starts."]


def test_a_question_may_end_in_a_quote_or_a_full_width_mark():
    validation = QaValidation()
    for question in ('"What does the load command execute?"', "load コマンドは何を実行しますか？"):
        verdict = check_pair(question, "each line of the specified input file", CHUNK, validation)
        assert verdict is None or verdict.reason != "not_a_question", verdict
    assert check_pair("The load command executes.", "each line of the specified input file", CHUNK,
                      QaValidation(require_question_mark=False)) is None  # fmt: skip


def test_question_is_the_first_line_without_its_label():
    from rayfleet.qa import question_from_output

    assert (
        question_from_output('\nQuestion: "When does the valve open?"\nAnswer: at 3 bar') == "When does the valve open?"
    )
    assert question_from_output("1. Q: Who services the pump?") == "Who services the pump?"
    assert question_from_output("  \n ") == ""


def test_answer_first_prompt_shows_the_worked_example_then_the_request():
    from rayfleet.qa import AnswerFirstPrompts

    messages = AnswerFirstPrompts().conversation("The valve opens at 3 bar.", "The valve opens at 3 bar.")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "Answer: The valve opens at 3 bar." in messages[-1]["content"]
    with pytest.raises(ValueError, match="placeholders"):
        AnswerFirstPrompts(user="no placeholders")


def test_cjk_characters_count_as_words_so_cjk_pairs_can_pass_validation():
    from rayfleet.qa import answer_sentences, words

    assert words("Grade 40 oil 東京都 snake_case") == ["grade", "40", "oil", "東", "京", "都", "snake", "case"]
    chunk = "第三号ポンプは毎月点検が必要です。大阪城の入場料は六百円です。"
    answers = answer_sentences(chunk, 2, 8, 40)
    assert answers == ["第三号ポンプは毎月点検が必要です。", "大阪城の入場料は六百円です。"]
    assert check_pair("第三号ポンプはいつ点検しますか？", answers[0], chunk, QaValidation()) is None
    verdict = check_pair("東京タワーの高さは何メートルですか？", answers[0], chunk, QaValidation())
    assert verdict is not None and verdict.reason == "off_topic"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Die Pumpe muss alle sechs Monate von einem Techniker gewartet werden. Über die Wartung entscheidet allein "
         "der Betriebsleiter des Werks.", 2),
        ("Насос необходимо обслуживать каждые шесть месяцев сертифицированным техником. Используйте только масло "
         "класса сорок для редуктора насоса.", 2),
        ("يجب صيانة المضخة كل ستة أشهر بواسطة فني معتمد في الموقع. استخدم فقط زيت الدرجة أربعين في علبة التروس.", 2),
        ("हर छह महीने में पंप की सर्विस एक प्रमाणित तकनीशियन द्वारा की जानी चाहिए। "
         "मुख्य पंप इकाई के गियरबॉक्स में केवल ग्रेड चालीस तेल का उपयोग करें।", 2),
        ("Η αντλία συντηρείται κάθε έξι μήνες από πιστοποιημένο τεχνικό της εταιρείας. Ποιος αποφασίζει για τη "
         "συντήρηση της αντλίας\u037e Ο διευθυντής του εργοστασίου αποφασίζει για όλες τις εργασίες.", 3),
        ("کیا پمپ کی سروس ہر چھ ماہ بعد ایک مستند تکنیشن کو کرنی چاہیے؟ پمپ کی سروس ہر چھ ماہ بعد ایک مستند تکنیشن "
         "کرتا ہے۔ صرف گریڈ چالیس کا تیل گیئر باکس میں استعمال کریں۔", 3),
    ],
    ids=["german-umlaut", "russian", "arabic", "hindi-danda", "greek-question-mark", "urdu"],
)  # fmt: skip
def test_sentences_of_other_scripts_are_split_and_whole(text, expected):
    from rayfleet.qa import answer_sentences

    sentences = answer_sentences(text, 5, 4, 40)
    assert len(sentences) == expected and " ".join(sentences) == " ".join(text.split())


def test_an_english_sentence_still_does_not_end_before_a_lower_case_word():
    from rayfleet.qa import answer_sentences

    text = "The pump, e.g. the main unit, must be serviced every six months. Use only grade forty oil in the gearbox."
    assert answer_sentences(text, 5, 4, 40) == [
        "The pump, e.g. the main unit, must be serviced every six months.",
        "Use only grade forty oil in the gearbox.",
    ]


def test_hindi_words_keep_their_vowel_signs_and_arabic_words_match_without_theirs():
    from rayfleet.qa import words

    assert words("हिन्दी पंप की सर्विस") == ["हिन्दी", "पंप", "की", "सर्विस"]
    assert words("نصٌّ عَرَبِيّ") == words("نص عربي") == ["نص", "عربي"]


@pytest.mark.parametrize(
    "question, answer, chunk",
    [
        ("كم مرة يجب صيانة المضخة بواسطة الفني؟", "يجب صيانة المضخة كل ستة أشهر بواسطة فني معتمد.",
         "يجب صيانة المضخة كل ستة أشهر بواسطة فني معتمد."),
        ("Πόσο συχνά συντηρείται η αντλία από τεχνικό\u037e", "Η αντλία συντηρείται κάθε έξι μήνες από τεχνικό.",
         "Η αντλία συντηρείται κάθε έξι μήνες από τεχνικό."),
        ("Πόσο συχνά συντηρείται η αντλία από τεχνικό;", "Η αντλία συντηρείται κάθε έξι μήνες από τεχνικό.",
         "Η αντλία συντηρείται κάθε έξι μήνες από τεχνικό."),
        ("Ինչպե՞ս է սպասարկվում պոմպը տեխնիկի կողմից", "Պոմպը սպասարկվում է տեխնիկի կողմից ամեն վեց ամիսը մեկ։",
         "Պոմպը սպասարկվում է տեխնիկի կողմից ամեն վեց ամիսը մեկ։"),
    ],
    ids=["arabic", "greek-question-mark", "greek-semicolon", "armenian"],
)  # fmt: skip
def test_questions_of_other_scripts_count_as_questions(question, answer, chunk):
    assert check_pair(question, answer, chunk, QaValidation()) is None


def test_an_english_statement_ending_in_a_semicolon_is_not_a_question():
    verdict = check_pair("The load command executes each line;", "each line of the specified input file", CHUNK,
                         QaValidation())  # fmt: skip
    assert verdict is not None and verdict.reason == "not_a_question"


def _near_duplicates_by_every_pair(pairs, threshold):
    """The definition, question against every kept question of its document (quadratic)."""
    from rayfleet.qa import jaccard, words

    kept, duplicates, seen, kept_words = [], [], set(), {}
    for pair in pairs:
        normalized, question_words = " ".join(words(pair["question"])), set(words(pair["question"]))
        others = kept_words.setdefault(pair["doc_id"], [])
        if normalized in seen or any(jaccard(question_words, other) >= threshold for other in others):
            duplicates.append(pair)
            continue
        seen.add(normalized)
        others.append(question_words)
        kept.append(pair)
    return kept, duplicates


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.8, 1.0])
def test_near_duplicates_found_through_prefixes_are_those_of_every_pair_compared(threshold):
    import random

    draw = random.Random(threshold)
    vocabulary = [f"term{i}" for i in range(30)] + ["what", "does", "the"]
    pairs = [
        {
            "question": " ".join(draw.choice(vocabulary) for _ in range(draw.randint(1, 9))) + "?",
            "doc_id": draw.choice("ab"),
        }
        for _ in range(400)
    ]

    kept, duplicates = drop_near_duplicates(pairs, threshold)

    assert (kept, duplicates) == _near_duplicates_by_every_pair(pairs, threshold)
    assert kept and duplicates


def test_a_threshold_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        drop_near_duplicates([{"question": "What is it?", "doc_id": "a"}], 0)


def test_a_title_on_its_own_line_does_not_start_the_answer_sentence_after_it():
    from rayfleet.qa import answer_sentences

    notes = (
        "1. Q1 sales review\n"
        "Ben reported that Q1 unit sales reached 3,420 bicycles, twelve percent above the plan for the quarter.\n"
        "2. Any other business\n"
        "The annual Ride Day moves to the first Saturday of June because of the new trail opening."
    )
    assert answer_sentences(notes, 5, 6, 40) == [
        "Ben reported that Q1 unit sales reached 3,420 bicycles, twelve percent above the plan for the quarter.",
        "The annual Ride Day moves to the first Saturday of June because of the new trail opening.",
    ]
    wrapped = (  # hard-wrapped prose: its lines are one sentence, whatever starts the next line
        "The committee decided that the reserve fund would be\n"
        "Used only for the replacement of the workshop roof and\n"
        "Its gutters, after the survey of May."
    )
    assert answer_sentences(wrapped, 2, 6, 40) == [" ".join(wrapped.split())]


def test_a_question_another_sentence_of_the_chunk_answers_better_is_dropped(embedder):
    from rayfleet.qa import AnswerMatch

    chunk = (
        "Every employee who becomes a parent receives sixteen weeks of fully paid parental leave.\n\n"
        "Sick leave is paid from the first day for up to twelve days a year, with a doctor's note after three days.\n\n"
        "Unused vacation days can be carried over into the next calendar year, up to a maximum of five days."
    )
    parental, sick, _ = (" ".join(block.split()) for block in chunk.split("\n\n"))
    match = AnswerMatch(embedder.embed, min_words=8, margin=0.05)
    question = "How many days of paid sick leave does an employee get each year?"
    verdict = match.verdict(question, parental, chunk)
    assert verdict is not None and verdict.reason == "answer_mismatch" and "Sick leave is paid" in verdict.detail
    assert match.verdict(question, sick, chunk) is None
    assert match.verdict("How long is parental leave for a new parent?", parental, chunk) is None
    assert match.verdict(question, parental, parental) is None, "a chunk of one sentence has nothing to compare"
