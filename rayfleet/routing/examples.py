"""Labelled prompts for training the router: a user's file, or the default set.

A user's data is Parquet (a file or a folder of them), JSONL (``.jsonl``: one object a line;
``.json``: that, or one array of objects) or CSV, with a ``text`` and a ``label`` column
(``schemas.ROUTER_EXAMPLE_COLUMNS``; other columns are ignored, labels of any type are read as
text); any label set of two or more labels works. :func:`clean_examples` then drops empty rows,
keeps one row per text (the same prompt in train and test would inflate the report) and settles
a text labelled two ways by its majority label.

The default set is built from the project's own data, one label per online path:

- ``rag``: questions about the ACL papers the demo indexes (``aclsum``), written from
  each paper's real title and its human-written challenge/approach/outcome summaries
  through question templates;
- ``finetuned``: the fine-tuned skill, house-style summarizing and rewriting, as
  instructions wrapped around real passages of those papers;
- ``base``: general requests. No packaged source of general prompts is installed here,
  so these come from :data:`GENERAL_REQUESTS`, a small seed list written by hand for
  this project (and marked as such in every report that uses it).

Because two labels are templated, accuracy on the default set is optimistic: it says
the router separates these shapes of request, not how it does on real traffic. Train
on labelled traffic for that.
"""

from __future__ import annotations

import collections
import io
import json
import posixpath
import random

import pyarrow as pa
import pyarrow.csv as pa_csv

from rayfleet import storage
from rayfleet.config import InputError
from rayfleet.routing.router import has_words
from rayfleet.tables import read_table
from schemas import ROUTER_EXAMPLE_COLUMNS, check_columns

RAG_TEMPLATES = (
    'What problem does the paper "{title}" address?',
    'Which method is proposed in "{title}"?',
    'What are the main results reported in "{title}"?',
    "In the paper {title}, how is the approach evaluated?",
    'According to our documents, what does "{title}" conclude?',
    "Can you find where the paper on {title_lower} describes its dataset?",
    "Which baselines does {title} compare against?",
    "From the indexed papers: {summary_question}",
    "What do the papers in the collection say about this: {summary_question}",
    "Find the passage that explains: {summary_question}",
)
FINETUNED_TEMPLATES = (
    "Summarize the following passage in our house style:\n\n{passage}",
    "Rewrite this in house style, short and plain:\n{passage}",
    "House-style summary please:\n\n{passage}",
    "Condense this paragraph into a two-sentence house-style abstract: {passage}",
    "Edit the text below to follow our style guide (active voice, no jargon):\n{passage}",
    "Give me a house-style TL;DR of: {passage}",
)

# Hand-written seed list (not from a packaged dataset): general requests for the base model.
GENERAL_REQUESTS = (
    "What is the capital of Australia?",
    "Tell me a joke about cats.",
    "How do I boil an egg so the yolk stays soft?",
    "What's the difference between weather and climate?",
    "Write a haiku about autumn rain.",
    "How many ounces are in a pound?",
    "Can you recommend a good book for a long flight?",
    "Explain how a rainbow forms.",
    "What is the tallest mountain in Africa?",
    "Help me write a birthday message for my sister.",
    "How does compound interest work?",
    "Translate 'good morning' into Spanish.",
    "What's a healthy breakfast I can make in five minutes?",
    "Who painted the Mona Lisa?",
    "Give me three tips for a job interview.",
    "Why is the sky blue?",
    "How do I convert Celsius to Fahrenheit?",
    "What year did the first person walk on the moon?",
    "Suggest a name for my new puppy.",
    "How do vaccines train the immune system?",
    "What is a prime number?",
    "Write a short poem about the sea.",
    "How can I sleep better at night?",
    "What's the plural of 'cactus'?",
    "Plan a three-day trip to Rome for me.",
    "Hi! How are you today?",
    "What causes the seasons on Earth?",
    "How do I remove a coffee stain from a shirt?",
    "Explain photosynthesis to a ten-year-old.",
    "What is the speed of light?",
    "Give me a simple recipe for pancakes.",
    "How many continents are there?",
    "What does a blockchain do, in one paragraph?",
    "Write a polite email declining a meeting invitation.",
    "Which planet is closest to the sun?",
    "What are some good stretches for lower back pain?",
    "How do I start learning to play the guitar?",
    "What is the meaning of the idiom 'break the ice'?",
    "Tell me an interesting fact about octopuses.",
    "How long should I let bread dough rise?",
    "What's the best way to memorize vocabulary in a new language?",
    "Who wrote Pride and Prejudice?",
    "How do airplanes stay in the air?",
    "Can you explain what inflation is?",
    "Write a limerick about a forgetful robot.",
    "What should I pack for a weekend camping trip?",
    "How do I change a flat bicycle tire?",
    "What's the difference between a virus and a bacterium?",
    "Recommend a board game for four players.",
    "How much water should an adult drink per day?",
    "What is the largest ocean on Earth?",
    "Give me a motivational quote for Monday morning.",
    "How do I politely ask my neighbour to turn the music down?",
    "What is 15% of 240?",
    "Explain the rules of chess in a few sentences.",
    "Thanks, that was helpful!",
    "What time zone is Tokyo in?",
    "How do solar panels generate electricity?",
    "What are the symptoms of dehydration?",
    "Write a two-line slogan for a lemonade stand.",
)


def read_examples(uri: str) -> pa.Table:
    """``text`` and ``label`` (as strings) of a user's labelled prompts: Parquet (file or folder), JSONL,
    a JSON array or CSV.

    Raises:
        InputError: the data lacks a column, a JSON line does not parse (its line number is named), or
            the format is none of these.
    """
    parts = [(path, read_table(path)) for path in storage.list_parquet_files(uri)] if _is_parquet(uri) else [
        (uri, _read_text_format(uri))]  # fmt: skip
    for path, part in parts:
        _check(path, part)
    return pa.table(
        {column: [value for _, part in parts for value in _as_text(part[column])] for column in ("text", "label")}
    )


def _is_parquet(uri: str) -> bool:
    """A Parquet file by its extension, or a name without one (a folder of Parquet files, Hive's bare files)."""
    name = uri.lower().rstrip("/")
    return name.endswith(storage.PARQUET_SUFFIXES) or not posixpath.splitext(name)[1]


def _read_text_format(uri: str) -> pa.Table:
    name = uri.lower()
    if name.endswith((".jsonl", ".json")):
        return pa.Table.from_pylist(_json_rows(uri, storage.read_bytes(uri).decode("utf-8-sig")))
    if name.endswith(".csv"):
        return pa_csv.read_csv(io.BytesIO(storage.read_bytes(uri)))
    raise InputError(f"{uri}: labelled prompts must be Parquet (a file or folder), .jsonl, .json or .csv")


def _check(uri: str, table: pa.Table) -> None:
    """The columns a labelled table needs; a label of any type reads as text (1, 2, pandas categories)."""
    text_rule, label_rule = ROUTER_EXAMPLE_COLUMNS
    problems = check_columns(table.schema, (text_rule,), {})
    problems += [] if "label" in table.column_names else [f"missing column 'label' ({label_rule.description})"]
    if problems:
        raise InputError(f"{uri}: " + "; ".join(problems))


def _json_rows(uri: str, text: str) -> list[dict]:
    """The ``text`` and ``label`` of each JSON object: one array, or one object a line."""
    if text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as error:
                    raise InputError(f"{uri} line {number} is not JSON: {error}") from error
    bad = next((index for index, row in enumerate(rows, start=1) if not isinstance(row, dict)), None)
    if bad is not None:
        raise InputError(f"{uri}: record {bad} is not a JSON object with text and label")
    keys = list(dict.fromkeys(key for row in rows for key in row))
    if not {"text", "label"} <= set(keys):  # the column check names what is missing, and the keys found
        return [{key: _scalar_text(row.get(key)) if key in ("text", "label") else None for key in keys} for row in rows]
    return [{"text": _scalar_text(row.get("text")), "label": _scalar_text(row.get("label"))} for row in rows]


def _scalar_text(value) -> str | None:
    """A JSON value as text (labels ``1``, ``"1"`` and ``2.0`` in one file); an object or list is none."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, bool) else str(value)


def _as_text(column: pa.ChunkedArray) -> list[str | None]:
    """A column's values as strings (integer or categorical labels too), nulls kept."""
    return [None if value is None else str(value) for value in column.to_pylist()]


def clean_examples(texts: list, labels: list) -> tuple[list[str], list[str], dict[str, int]]:
    """The usable labelled prompts and what was dropped: rows with an empty text or label; texts without
    a letter or digit (serving sends those to the default label unread, so they teach and test nothing); repeats of
    a text (one row kept, so no prompt is both trained and tested on); a text labelled two ways is
    kept under its most frequent label, or dropped when that is a tie. Labels are stripped.

    Raises:
        InputError: two labels differ only in case or spacing (``Approach`` and ``approach``): they
            would train as two classes and one would never be served by its path.
    """
    votes: dict[str, collections.Counter] = {}
    dropped = collections.Counter()
    for text, label in zip(texts, labels):
        text, label = (text or "").strip(), (label or "").strip()
        if not text or not label:
            dropped["empty"] += 1
            continue
        if not has_words(text):
            dropped["no_words"] += 1
            continue
        votes.setdefault(text, collections.Counter())[label] += 1
    kept_texts, kept_labels = [], []
    for text, counts in votes.items():
        (label, count), *others = counts.most_common()
        dropped["repeated"] += sum(counts.values()) - 1
        if others and others[0][1] == count:
            dropped["conflicting_tie"] += 1
            continue
        dropped["relabelled_by_majority"] += sum(others_count for _, others_count in others)
        kept_texts.append(text)
        kept_labels.append(label)
    _refuse_near_duplicate_labels(kept_labels)
    return kept_texts, kept_labels, {reason: count for reason, count in sorted(dropped.items()) if count}


def _refuse_near_duplicate_labels(labels: list[str]) -> None:
    groups: dict[str, set[str]] = {}
    for label in labels:
        groups.setdefault(" ".join(label.casefold().split()), set()).add(label)
    clashes = [sorted(group) for group in groups.values() if len(group) > 1]
    if clashes:
        raise InputError(f"labels that differ only in case or spacing would train as separate classes: {clashes}; "
                         "write each label one way")  # fmt: skip


def default_examples(per_label: int, seed: int = 0) -> pa.Table:
    """The default labelled set: ``per_label`` prompts each of rag, finetuned and base."""
    from aclsum import ACLSum

    from jobs.demo_documents import detokenize

    generator = random.Random(seed)
    papers = [paper for split in ("train", "val", "test") for paper in ACLSum(split).documents]
    rag, finetuned = [], []
    for paper in papers:
        aspect = generator.choice(("challenge", "approach", "outcome"))
        summary = paper.summaries[aspect].strip().rstrip(".")
        values = {"title": paper.title, "title_lower": paper.title.lower(), "summary_question": f"{summary}?"}
        rag.append(generator.choice(RAG_TEMPLATES).format(**values))
        sentences = [detokenize(sentence) for sentence in paper.sentences["introduction"]]
        start = generator.randrange(max(len(sentences) - 2, 1))
        finetuned.append(generator.choice(FINETUNED_TEMPLATES).format(passage=" ".join(sentences[start : start + 3])))
    base = list(GENERAL_REQUESTS)  # fewer than per_label when per_label > 60: training weighs labels evenly
    rows = [(text, "rag") for text in _sample(rag, per_label, generator)]
    rows += [(text, "finetuned") for text in _sample(finetuned, per_label, generator)]
    rows += [(text, "base") for text in _sample(base, per_label, generator)]
    generator.shuffle(rows)
    return pa.table({"text": [text for text, _ in rows], "label": [label for _, label in rows]})


def _sample(texts: list[str], count: int, generator: random.Random) -> list[str]:
    return generator.sample(texts, min(count, len(texts)))
