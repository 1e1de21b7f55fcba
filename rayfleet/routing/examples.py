"""Labelled prompts for training the router: a user's file, or the default set.

A user's file is Parquet or JSONL (``.jsonl``/``.json``, one object a line) with a
``text`` and a ``label`` column (``schemas.ROUTER_EXAMPLE_COLUMNS``); any label set of
two or more labels works.

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

import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq

from rayfleet import storage
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
    """``text`` and ``label`` of a Parquet or JSONL file of labelled prompts.

    Raises:
        ValueError: the file lacks a column, has one of the wrong type, or is not Parquet/JSONL.
    """
    data = storage.read_bytes(uri)
    if uri.endswith((".jsonl", ".json")):
        table = pa.Table.from_pylist([json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()])
    elif uri.endswith((".parquet", ".parq", ".pq")):
        table = pq.read_table(io.BytesIO(data))
    else:
        raise ValueError(f"{uri}: labelled prompts must be a .parquet or .jsonl file")
    problems = check_columns(table.schema, ROUTER_EXAMPLE_COLUMNS, {})
    if problems:
        raise ValueError(f"{uri}: " + "; ".join(problems))
    return table.select(["text", "label"]).cast(pa.schema([("text", pa.string()), ("label", pa.string())]))


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
