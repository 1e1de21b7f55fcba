"""Grounded question-answer pairs from chunks: prompting, lenient parsing, validation, dedup, splits.

Two ways to get pairs. Answer-first (the default): :func:`answer_sentences` picks whole,
informative sentences of a chunk as answers and the model writes a question for each
(:func:`question_from_output`). Free: the model is asked for a JSON list of
``{"question", "answer"}`` objects; small models often wrap it in prose, break the JSON
or fall back to "Q: ... A: ..." lines, so :func:`extract_pairs` takes any JSON value
found in the text, and those lines as a last resort. Every proposed pair is then checked
(:func:`check_pair`): sizes, that the question is one (small models often write a
statement), and grounding (most of the answer's content words must appear in the chunk, and the
question must be about the chunk). Near-duplicate questions are removed
(:func:`drop_near_duplicates`) and documents are assigned to train / validation /
test by a hash of their id (:func:`split_of`), so no document spans two splits and a
document keeps its split when more are added.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import regex
from pydantic import Field, field_validator, model_validator

from rayfleet.config import BaseConfig
from rayfleet.engines.base import Conversation
from rayfleet.text.scripts import CJK, CJK_SENTENCE_ENDS, SENTENCE_MARKS

# The three questions the demo asks of every ACL paper; its human summaries (aclsum's three
# aspects) answer them. ``{paper}`` names the paper: 'the paper "<title>"' when a question
# stands alone, "this paper" when the paper's text comes with it.
PAPER_ASPECT_QUESTIONS = {
    "challenge": "What problem does {paper} address?",
    "approach": "What approach does {paper} take?",
    "outcome": "What are the results of {paper}?",
}


def paper_questions(paper: str) -> dict[str, str]:
    """:data:`PAPER_ASPECT_QUESTIONS` about ``paper``, by aspect."""
    return {aspect: question.format(paper=paper) for aspect, question in PAPER_ASPECT_QUESTIONS.items()}


# A word: a run of letters or digits with their combining marks (Hindi's vowel signs belong to the word),
# except that each CJK character counts as one (no spaces there). ``regex`` knows Unicode's categories.
WORD = regex.compile(f"[{CJK}]|(?:(?![{CJK}])[\\p{{L}}\\p{{N}}]\\p{{M}}*)+")
# Arabic's short-vowel signs and shadda are optional in writing: a question with them matches a chunk without.
ARABIC_OPTIONAL_MARKS = regex.compile("[\u064b-\u065f\u0670]")
# Words too common to show that an answer comes from a chunk.
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this that "
    "these those there here what which who whom whose when where why how do does did can could should would "
    "will may might must not no yes than then so such into about over under between each all any some you your "
    "we our they their he she his her i me my".split()
)
QA_LINES = re.compile(
    r"^\s*(?:\d+[.)]\s*)?(?:Q|Question)\s*\d*\s*[:.-]\s*(?P<question>.+?)\s*\n+"
    r"\s*(?:A|Answer)\s*\d*\s*[:.-]\s*(?P<answer>.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)


class QaPrompts(BaseConfig):
    """Prompt templates; ``user`` must contain ``{text}`` and ``{count}``.

    A worked example (one user turn and the reply wanted) goes before the real request:
    small models follow a shown JSON reply far more often than a described one.
    """

    system: str = Field(
        "You write quiz questions about a text. Every answer is copied from the text. Reply with JSON only.",
        description="System message of every generation call.",
    )
    user: str = Field(
        "Text:\n{text}\n\nWrite {count} questions about the text, each answered by words copied from the text. "
        "Reply with JSON only.",
        description="User message; {text} is the chunk, {count} the number of pairs asked for.",
    )
    example_text: str | None = Field(
        "The pump must be serviced every 6 months. Use only grade 40 oil in the gearbox.",
        description="Text of the worked example shown before each request; null for no example.",
    )
    example_reply: str = Field(
        '[{"question": "How often must the pump be serviced?", "answer": "every 6 months"}, '
        '{"question": "Which oil goes in the gearbox?", "answer": "grade 40 oil"}]',
        description="The reply wanted for the worked example (two pairs, as JSON).",
    )

    @field_validator("user")
    @classmethod
    def _has_placeholders(cls, template: str) -> str:
        if "{text}" not in template or "{count}" not in template:
            raise ValueError("the Q&A prompt must contain the {text} and {count} placeholders")
        return template

    def request(self, text: str, count: int) -> str:
        return self.user.replace("{text}", text).replace("{count}", str(count))

    def conversation(self, text: str, count: int) -> Conversation:
        messages: Conversation = [{"role": "system", "content": self.system}]
        if self.example_text:
            messages += [
                {"role": "user", "content": self.request(self.example_text, 2)},
                {"role": "assistant", "content": self.example_reply},
            ]
        return messages + [{"role": "user", "content": self.request(text, count)}]


# A sentence starts with a capital or a digit, or a letter of a script without capitals (Arabic, Hindi, ...).
SENTENCE_END = regex.compile(
    f"(?<=[{SENTENCE_MARKS}])\\s+(?=[\"'(\\[¿¡«„]?[\\p{{Lu}}\\p{{Lt}}\\p{{Lo}}\\p{{N}}])|(?<=[{CJK_SENTENCE_ENDS}])"
)
# Blocks no sentence spans: paragraphs, and the items of a list (one per line).
BLOCK_BREAK = re.compile(r"\n\s*\n|\n(?=\s*(?:[-*+•]|\d+[.)])\s)")
LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
# A title or label on a line of its own ("Q1 sales review", "Any other business"): a few words without
# closing punctuation, shorter than half the block's widest line, and a line starting with a capital or a
# digit after it. Hard-wrapped prose breaks its lines near one width, so its lines are not taken for one.
TITLE_LINE_MAX_WORDS = 6
TITLE_LINE_FOLLOWER = regex.compile(r"\s*[\"'(\[¿¡«„]?[\p{Lu}\p{Lt}\p{N}]")
CLAUSE_MARKS = ",;:-–—("
SENTENCE_ENDINGS = (*SENTENCE_MARKS, *CJK_SENTENCE_ENDS)
# Question marks: Latin, full-width, Arabic (؟), Greek (U+037E), Ethiopic (፧). Armenian's ՞ sits on the
# word asked about and Greek is mostly typed with a plain semicolon: see :func:`ends_like_a_question`.
QUESTION_MARKS = ("?", "？", "\u061f", "\u037e", "\u1367")
ARMENIAN_QUESTION_MARK = "\u055e"
GREEK = regex.compile(r"\p{Greek}")


class AnswerFirstPrompts(BaseConfig):
    """Prompts of the answer-first strategy: the answer is a sentence of the chunk, the model writes its question.

    ``user`` must contain ``{text}`` (the chunk) and ``{answer}`` (the chosen sentence).
    Small models write vague JSON quizzes but can phrase one question for a given
    answer; the answer is then grounded by construction.
    """

    system: str = Field(
        "You turn an answer into the question it answers. "
        "Reply with one question that ends with a question mark, nothing else.",
        description="System message of every question-writing call.",
    )
    user: str = Field(
        "Text: {text}\n\nAnswer: {answer}\n\nWrite the question that this answer answers.",
        description="User message; {text} is the chunk, {answer} the sentence the question must be answered by.",
    )
    example_text: str | None = Field(
        "The pump must be serviced every 6 months by a certified technician. Use only grade 40 oil.",
        description="Text of the worked example shown before each request; null for no example.",
    )
    example_answer: str = Field(
        "The pump must be serviced every 6 months by a certified technician.",
        description="Answer sentence of the worked example.",
    )
    example_question: str = Field(
        "How often must the pump be serviced, and by whom?", description="The question wanted for the worked example."
    )
    min_answer_words: int = Field(8, ge=1, description="Shortest sentence (in words) chosen as an answer.")
    max_answer_words: int = Field(40, ge=1, description="Longest sentence (in words) chosen as an answer.")

    @field_validator("user")
    @classmethod
    def _has_placeholders(cls, template: str) -> str:
        if "{text}" not in template or "{answer}" not in template:
            raise ValueError("the answer-first prompt must contain the {text} and {answer} placeholders")
        return template

    def conversation(self, text: str, answer: str) -> Conversation:
        messages: Conversation = [{"role": "system", "content": self.system}]
        if self.example_text:
            messages += [
                {"role": "user", "content": self._request(self.example_text, self.example_answer)},
                {"role": "assistant", "content": self.example_question},
            ]
        return messages + [{"role": "user", "content": self._request(text, answer)}]

    def _request(self, text: str, answer: str) -> str:
        return self.user.replace("{text}", text).replace("{answer}", answer)


def answer_sentences(text: str, count: int, min_words: int, max_words: int, skip_first: bool = False) -> list[str]:
    """Up to ``count`` sentences of ``text`` worth asking about, in text order.

    Sentences never span a paragraph break or a list item. Text before the first sentence
    end is left out when ``skip_first`` (a chunk that may start mid-sentence) or when it
    starts like the rest of a sentence (lower case, closing punctuation). Sentences of the
    allowed length are ranked by how many distinct content words they carry (facts, names
    and figures rather than transitions), and the best ``count`` kept.
    """
    sentences = sentences_of(text)
    usable = [
        (index, sentence) for index, sentence in enumerate(sentences)
        if min_words <= len(words(sentence)) <= max_words and is_whole_sentence(sentence)
        and not (skip_first and index == 0)
    ]  # fmt: skip
    best = sorted(usable, key=lambda item: len(content_words(item[1])), reverse=True)[:count]
    return [sentence for _, sentence in sorted(best)]


def sentences_of(text: str) -> list[str]:
    """The sentences of ``text`` in order, with their white space collapsed: none spans a paragraph break, a
    list item or a title line (:func:`apart_from_title_lines`)."""
    return [
        " ".join(sentence.split())
        for block in BLOCK_BREAK.split(text)
        for piece in apart_from_title_lines(LIST_MARKER.sub("", block))
        for sentence in SENTENCE_END.split(piece)
    ]


def apart_from_title_lines(block: str) -> list[str]:
    """``block`` cut after each title or label line (:data:`TITLE_LINE_MAX_WORDS`), which would otherwise
    start the sentence after it ("Q1 sales review Ben reported that...")."""
    lines = block.split("\n")
    widest = max(len(line.strip()) for line in lines)
    pieces, start = [], 0
    for index, (line, following) in enumerate(zip(lines, lines[1:]), 1):
        line = line.strip()
        if (
            line
            and len(line) * 2 <= widest
            and len(words(line)) <= TITLE_LINE_MAX_WORDS
            and not line.endswith((*SENTENCE_ENDINGS, *CLAUSE_MARKS))
            and TITLE_LINE_FOLLOWER.match(following)
        ):
            pieces.append("\n".join(lines[start:index]))
            start = index
    return pieces + ["\n".join(lines[start:])]


def is_whole_sentence(text: str) -> bool:
    """Whether ``text`` ends like a sentence and does not start like the rest of one."""
    return text.endswith(SENTENCE_ENDINGS) and not text[0].islower() and text[0] not in ",;:)]}"


def question_from_output(output: str) -> str:
    """The question in a model's reply: its first non-empty line, without a "Question:" label."""
    for line in output.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]\s*)?(?:Q|Question)\s*[:.-]\s*", "", line, flags=re.IGNORECASE).strip()
        if line:
            return line.strip('"')
    return ""


class QaValidation(BaseConfig):
    """What a generated pair must satisfy to be kept."""

    min_question_words: int = Field(3, ge=1, description="Fewest words in a question.")
    max_question_words: int = Field(40, ge=1, description="Most words in a question.")
    max_answer_words: int = Field(60, ge=1, description="Most words in an answer.")
    require_question_mark: bool = Field(
        True, description="Drop a 'question' that does not end with ? (small models often write a statement instead)."
    )
    min_answer_grounding: float = Field(
        0.7, ge=0, le=1, description="Share of the answer's content words that must appear in the chunk."
    )
    min_question_grounding: float = Field(
        0.3, ge=0, le=1, description="Share of the question's content words that must appear in the chunk."
    )
    answer_match_model: str | None = Field(
        "all-minilm-l6-v2",
        description="Sentence-embedding model of the round-trip check (AnswerMatch) of answer_first pairs: one is "
        "kept only if no other sentence of its chunk is closer to its question than its answer (by "
        "answer_match_margin); null turns the check off. User pairs and the free strategy's are not checked.",
    )
    answer_match_margin: float = Field(
        0.05, ge=0, le=2, description="How much closer (cosine) another sentence may be before the pair is dropped."
    )
    near_duplicate_similarity: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Questions of one document whose word-set Jaccard similarity reaches this are duplicates.",
    )


class AnswerMatch:
    """The round-trip check of a generated pair (Alberti et al., 2019, "Synthetic QA corpora generation with
    roundtrip consistency"): of the chunk's sentences that could be answers, the one closest in meaning to the
    question must be the pair's answer, or come no more than ``margin`` (cosine) above it. A small model asked
    to write the question for a given answer often asks about a neighbouring sentence instead ("What about
    sick leave?" for the parental-leave sentence); such a pair teaches and scores a wrong answer.

    Args:
        embed: texts to unit vectors (:class:`rayfleet.retrieval.Embedder`'s ``embed``).
        min_words: the fewest words of a sentence compared with the answer (titles and labels are not answers).
        margin: how much closer another sentence may be before the pair is dropped.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], min_words: int, margin: float):
        self.embed, self.min_words, self.margin = embed, min_words, margin
        self._chunk: tuple[str, list[str], np.ndarray] = ("", [], np.zeros((0, 0), np.float32))

    def verdict(self, question: str, answer: str, chunk_text: str) -> Verdict | None:
        """None when no other sentence of the chunk answers ``question`` clearly better than ``answer``."""
        sentences, vectors = self.candidate_answers(chunk_text)
        answer_key = " ".join(answer.split())
        others = [index for index, sentence in enumerate(sentences) if sentence != answer_key]
        if not others:
            return None
        question_vector = self.embed([question])[0]
        answer_vector = vectors[sentences.index(answer_key)] if answer_key in sentences else self.embed([answer_key])[0]
        answer_similarity = float(answer_vector @ question_vector)
        similarity = vectors[others] @ question_vector
        closest = int(similarity.argmax())
        if similarity[closest] <= answer_similarity + self.margin:
            return None
        return Verdict(
            "answer_mismatch",
            f"another sentence of the chunk is closer to the question ({similarity[closest]:.2f} against the "
            f"answer's {answer_similarity:.2f}): {sentences[others[closest]][:120]}",
        )

    def candidate_answers(self, chunk_text: str) -> tuple[list[str], np.ndarray]:
        """The chunk's sentences that could be answers, and their vectors: embedded once for the chunk's pairs,
        which come one after another."""
        if self._chunk[0] != chunk_text:
            sentences = [
                sentence for sentence in dict.fromkeys(sentences_of(chunk_text))
                if len(words(sentence)) >= self.min_words and is_whole_sentence(sentence)
            ]  # fmt: skip
            self._chunk = (chunk_text, sentences, self.embed(sentences))
        return self._chunk[1], self._chunk[2]


class SplitConfig(BaseConfig):
    """Shares of documents held out; the rest is training data."""

    validation: float = Field(0.1, ge=0, lt=1, description="Share of documents in the validation split.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of documents in the test split.")
    seed: str = Field("rayfleet", description="Salt of the document hash; change it to draw other splits.")

    @model_validator(mode="after")
    def _leaves_training_data(self) -> "SplitConfig":
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must leave a share for training")
        return self


@dataclass(frozen=True)
class Verdict:
    """Why a pair is dropped: a short code for counting and the reason in words."""

    reason: str
    detail: str


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased (Unicode NFC, Arabic's optional vowel signs left out)."""
    return [ARABIC_OPTIONAL_MARKS.sub("", word.lower()) for word in WORD.findall(unicodedata.normalize("NFC", text))]


def ends_like_a_question(text: str) -> bool:
    """Whether ``text`` is punctuated as a question: a question mark at the end (after closing quotes), Greek
    text's semicolon, or Armenian's ՞ (written on the word asked about, wherever it stands)."""
    text = text.rstrip(" \"'”’»")
    if text.endswith(QUESTION_MARKS):
        return True
    if text.endswith(";") and GREEK.search(text):
        return True
    return ARMENIAN_QUESTION_MARK in text


def content_words(text: str) -> set[str]:
    """The words of ``text`` that carry meaning (no stopwords)."""
    return {word for word in words(text) if word not in STOPWORDS}


def extract_pairs(output: str) -> list[tuple[str, str]]:
    """Every ``(question, answer)`` found in a model's output: JSON anywhere in it, else Q:/A: lines."""
    pairs: list[tuple[str, str]] = []
    decoder = json.JSONDecoder()
    position = 0
    while position < len(output):
        if output[position] in "[{":
            try:
                value, position = decoder.raw_decode(output, position)
                pairs += _pairs_in(value)
                continue
            except json.JSONDecodeError:
                pass
        position += 1
    if not pairs:
        pairs = [(match["question"], match["answer"]) for match in QA_LINES.finditer(output)]
    return [(question.strip(), answer.strip()) for question, answer in pairs]


def _pairs_in(value) -> list[tuple[str, str]]:
    """Pairs in a decoded JSON value: objects with question/answer keys, at any depth."""
    if isinstance(value, list):
        return [pair for item in value for pair in _pairs_in(item)]
    if not isinstance(value, dict):
        return []
    keys = {str(key).lower(): item for key, item in value.items()}
    question, answer = keys.get("question", keys.get("q")), keys.get("answer", keys.get("a"))
    if isinstance(question, str) and isinstance(answer, (str, int, float)):
        return [(question, str(answer))]
    return [pair for item in value.values() if isinstance(item, (list, dict)) for pair in _pairs_in(item)]


def grounding(text: str, chunk_words: set[str]) -> float:
    """Share of the content words of ``text`` that appear in the chunk (1.0 when it has none)."""
    found = content_words(text)
    return len(found & chunk_words) / len(found) if found else 1.0


def check_pair(question: str, answer: str, chunk_text: str, validation: QaValidation) -> Verdict | None:
    """None when the pair may be kept, else why it is dropped."""
    question_words, answer_words = len(words(question)), len(words(answer))
    if not validation.min_question_words <= question_words <= validation.max_question_words:
        return Verdict("question_length", f"question has {question_words} words")
    if validation.require_question_mark and not ends_like_a_question(question):
        return Verdict("not_a_question", "the question does not end with a question mark")
    if answer_words == 0 or answer_words > validation.max_answer_words:
        return Verdict("answer_length", f"answer has {answer_words} words")
    if not content_words(answer):
        return Verdict("uninformative", "the answer has only stopwords (yes/no and the like)")
    if content_words(answer) <= content_words(question):
        return Verdict("answer_in_question", "the answer only repeats words of the question")
    chunk_words = set(words(chunk_text))
    answer_share = grounding(answer, chunk_words)
    if answer_share < validation.min_answer_grounding:
        return Verdict("ungrounded", f"{answer_share:.0%} of the answer's content words are in the chunk")
    question_share = grounding(question, chunk_words)
    if question_share < validation.min_question_grounding:
        return Verdict("off_topic", f"{question_share:.0%} of the question's content words are in the chunk")
    return None


def jaccard(first: set[str], second: set[str]) -> float:
    return len(first & second) / len(first | second) if first | second else 1.0


def drop_near_duplicates(pairs: Iterable[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """Split ``pairs`` (dicts with ``question`` and ``doc_id``) into kept and near-duplicates.

    A question is a duplicate when its word set reaches ``threshold`` Jaccard
    similarity with a kept question of the same document (the first one wins), or is
    the same text as any kept question. Only kept questions sharing a word of the
    question's prefix (:func:`similarity_prefix`) are compared, so a document with
    thousands of questions costs about linear time, not a comparison of every pair.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    kept: list[dict] = []
    duplicates: list[dict] = []
    seen_text: set[str] = set()
    kept_words: dict[str, list[set[str]]] = {}
    prefix_index: dict[str, dict[str, list[int]]] = {}  # per document: prefix word -> its kept questions
    for pair in pairs:
        normalized = " ".join(words(pair["question"]))
        question_words = set(words(pair["question"]))
        others, index = kept_words.setdefault(pair["doc_id"], []), prefix_index.setdefault(pair["doc_id"], {})
        prefix = similarity_prefix(question_words, threshold)
        candidates = {position for word in prefix for position in index.get(word, ())}
        similar = any(jaccard(question_words, others[position]) >= threshold for position in candidates)
        if normalized in seen_text or similar:
            duplicates.append(pair)
            continue
        seen_text.add(normalized)
        for word in prefix:
            index.setdefault(word, []).append(len(others))
        others.append(question_words)
        kept.append(pair)
    return kept, duplicates


def similarity_prefix(question_words: set[str], threshold: float) -> list[str]:
    """The first ``n - ceil(threshold * n) + 1`` of ``n`` words in one fixed order (a hash of each word).

    Two sets of Jaccard similarity at least ``threshold`` share at least ``ceil(threshold * n)`` words
    of each one's ``n``, so their prefixes in a common order share a word (prefix filtering).
    """
    ordered = sorted(question_words, key=lambda word: (zlib.crc32(word.encode()), word))
    return ordered[: len(ordered) - math.ceil(threshold * len(ordered) - 1e-9) + 1]


def split_of(doc_id: str, splits: SplitConfig) -> str:
    """The split of a document: a stable hash of its id against the configured shares."""
    digest = hashlib.sha256(f"{splits.seed}:{doc_id}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    if draw < splits.test:
        return "test"
    if draw < splits.test + splits.validation:
        return "validation"
    return "train"


def sft_messages(question: str, answer: str, system: str | None) -> list[dict[str, str]]:
    """One chat-format training example."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def validate_user_row(row: dict) -> str | None:
    """None when a user-written row fits the Q&A schema, else what is wrong with it."""
    from schemas import USER_QA_OPTIONAL, USER_QA_REQUIRED

    unknown = sorted(set(row) - set(USER_QA_REQUIRED) - set(USER_QA_OPTIONAL))
    if unknown:
        return f"unknown field(s) {unknown}; expected {list(USER_QA_REQUIRED)} and optionally {list(USER_QA_OPTIONAL)}"
    for name in USER_QA_REQUIRED:
        if name not in row or row[name] is None:
            return f"missing {name!r}"
        if not isinstance(row[name], str) or not row[name].strip():
            return f"{name!r} must be a non-empty string, got {type(row[name]).__name__} {row[name]!r:.60}"
    chunk_id = row.get("chunk_id")
    if chunk_id is not None and (not isinstance(chunk_id, str) or not chunk_id.strip()):
        return f"'chunk_id' must be a non-empty string or absent, got {chunk_id!r:.60}"
    return None


def without_pandas_index(table):
    """``table`` without the unnamed index pandas writes beside the data of a filtered frame
    (``__index_level_0__``), which is no field of a row (a named index, such as ``doc_id``, is kept)."""
    return table.drop_columns([name for name in table.column_names if name.startswith("__index_level_")])


def read_user_qa(uri: str, run_id: str) -> tuple[list[dict], list[dict]]:
    """User-written pairs from JSONL or Parquet files at ``uri``, validated row by row.

    Returns:
        ``(pairs, errors)``: valid rows as ``{question, answer, doc_id, chunk_id}``, and
        errors-table rows naming the file, the line (JSONL) or row (Parquet) and what
        is wrong.
    """
    from rayfleet import storage
    from rayfleet.tables import error_row, read_table

    pairs, errors = [], []
    for source in storage.list_files(uri):
        if source.endswith((".jsonl", ".json")):
            rows = []
            for index, line in enumerate(storage.read_bytes(source).decode("utf-8", errors="replace").splitlines()):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    errors.append(
                        error_row(source, f"line {index + 1}: not valid JSON: {error.msg}", "user_qa", run_id, index)
                    )
                    continue
                rows.append((index, f"line {index + 1}", value))
        elif source.lower().endswith(storage.PARQUET_SUFFIXES):
            try:
                rows = [(index, f"row {index}", value) for index, value in enumerate(without_pandas_index(
                    read_table(source)).to_pylist())]  # fmt: skip
            except Exception as error:  # an unreadable file is this file's error
                errors.append(error_row(source, f"unreadable Parquet file: {error}", "user_qa", run_id))
                continue
        else:
            errors.append(error_row(source, "unsupported Q&A file type: use .jsonl or .parquet (.parq, .pq)",
                                    "user_qa", run_id))  # fmt: skip
            continue
        for index, label, value in rows:
            problem = (
                validate_user_row(value)
                if isinstance(value, dict)
                else f"expected an object, got {type(value).__name__}"
            )
            if problem:
                doc_id = value.get("doc_id") if isinstance(value, dict) else None
                errors.append(error_row(source, f"{label}: {problem}", "user_qa", run_id, index,
                                        doc_id if isinstance(doc_id, str) else None))  # fmt: skip
            else:
                pairs.append({"question": value["question"].strip(), "answer": value["answer"].strip(),
                              "doc_id": value["doc_id"], "chunk_id": value.get("chunk_id")})  # fmt: skip
    return pairs, errors
