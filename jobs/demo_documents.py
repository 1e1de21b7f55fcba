"""Build a real documents dataset from the ACL papers of ``aclsum`` (human-written text).

    python -m jobs.demo_documents output=s3://rayfleet/demo/documents count=16
    python -m jobs.demo_documents output=.data/demo/documents qa_output=.data/demo/qa chunks_output=.data/demo/chunks

Writes one Parquet file of documents (``doc_id``, ``title``, ``text``, ``source``) plus
the papers' three human summaries (``reference_challenge``, ``reference_approach``,
``reference_outcome``) for evaluation. With ``qa_output``, it also writes a Q&A table
(``schemas.QA_SCHEMA``): three questions per paper (its problem, approach and results,
:data:`DEMO_QUESTIONS`) answered by those human summaries, in the split the papers come
from; ``jobs.finetune`` trains on the same kind of pairs from the train split. With
``chunks_output``, the documents' section-aware chunks (for ``jobs.build_index``).
``content=sections`` takes the abstract, introduction and conclusion the human summaries
were written from; ``content=abstract`` the abstract alone (short documents);
``content=full`` the whole paper body (long documents, summarized map-reduce style).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import pyarrow as pa
from pydantic import Field

from rayfleet import storage
from rayfleet.config import BaseConfig, run_job
from rayfleet.qa import paper_questions
from rayfleet.tables import write_table

logger = logging.getLogger("jobs.demo_documents")


class DemoDocumentsConfig(BaseConfig):
    """Which papers to take and where to write them."""

    output: str = Field(..., description="Folder/prefix for the documents Parquet (local or s3://).")
    count: int = Field(16, ge=1, le=250, description="Number of papers.")
    split: Literal["train", "val", "test"] = Field("test", description="aclsum split to take papers from.")
    content: Literal["abstract", "sections", "full"] = Field(
        "sections", description="The abstract alone, abstract+introduction+conclusion, or the full body."
    )
    qa_output: str | None = Field(None, description="Also write the papers' Q&A pairs (schemas.QA_SCHEMA) here.")
    chunks_output: str | None = Field(None, description="Also write the documents' chunks (for jobs.build_index) here.")
    chunk_tokens: int = Field(256, ge=16, description="Chunk size in embedding-model (MiniLM) tokens.")


# One question per human summary of a paper; its answer is that summary.
DEMO_QUESTIONS = paper_questions('the paper "{title}"')  # by aspect; format(title=...) per paper
QA_SPLITS = {"train": "train", "val": "validation", "test": "test"}


SECTIONS = {"abstract": ("abstract",), "sections": ("abstract", "introduction", "conclusion")}


def detokenize(text: str) -> str:
    """Undo the tokenized spacing of aclsum sentences ("word , word ( x )" -> "word, word (x)")."""
    text = re.sub(r"\s+([.,;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    return re.sub(r"\s+'s\b", "'s", text)


def paper_text(document, content: str) -> str:
    """The text of one paper: its key sections, or its whole parsed body with headings."""
    if content in SECTIONS:
        return "\n\n".join(
            f"{section.title()}\n" + detokenize(" ".join(document.sentences[section])) for section in SECTIONS[content]
        )
    parse = document.get_fulltext_parse()
    paragraphs, heading = [], None
    abstract = parse["pdf_parse"].get("abstract") or []
    paragraphs += ["Abstract\n" + " ".join(p["text"] for p in abstract)] if abstract else []
    for paragraph in parse["pdf_parse"]["body_text"]:
        if paragraph["section"] != heading:
            heading = paragraph["section"]
            paragraphs.append(f"{heading}\n{paragraph['text']}")
        else:
            paragraphs.append(paragraph["text"])
    return "\n\n".join(paragraphs)


def build_documents(config: DemoDocumentsConfig) -> pa.Table:
    """The first ``count`` papers of the split as a documents table."""
    from aclsum import ACLSum

    papers = ACLSum(config.split).documents[: config.count]
    return pa.Table.from_pylist(
        [
            {
                "doc_id": f"acl-{paper.id}",
                "title": paper.title,
                "text": paper_text(paper, config.content),
                "source": f"aclsum:{config.split}/{paper.id}",
                "reference_challenge": paper.summaries["challenge"],
                "reference_approach": paper.summaries["approach"],
                "reference_outcome": paper.summaries["outcome"],
            }
            for paper in papers
        ]
    )


def qa_pairs(documents: pa.Table, split: str) -> list[dict]:
    """Three question-answer pairs per paper, answered by its human summaries (``schemas.QA_SCHEMA`` rows)."""
    return [
        {
            "question": question.format(title=paper["title"]),
            "answer": paper[f"reference_{aspect}"],
            "chunk_id": None,
            "doc_id": paper["doc_id"],
            "origin": "user",
            "split": QA_SPLITS[split],
        }  # fmt: skip
        for paper in documents.to_pylist()
        for aspect, question in DEMO_QUESTIONS.items()
    ]


def chunk_rows(documents: pa.Table, max_tokens: int) -> list[dict]:
    """The documents' section-aware chunks, sized in MiniLM tokens (the index's embedding model)."""
    from transformers import AutoTokenizer

    from rayfleet.assets import MINILM, resolve_model
    from rayfleet.text.chunking import chunk_document

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM)))
    return [
        {
            "chunk_id": f"{document['doc_id']}#{chunk.ordinal}",
            "doc_id": document["doc_id"],
            "text": chunk.text,
            "heading": document["title"],
            "source": document["source"],
            "title": document["title"],
        }  # fmt: skip
        for document in documents.to_pylist()
        for chunk in chunk_document(tokenizer, document["text"], max_tokens)
    ]


def main(config: DemoDocumentsConfig) -> str:
    from schemas import QA_SCHEMA

    storage.ensure_bucket(config.output)
    table = build_documents(config)
    name = f"aclsum-{config.split}-{config.content}-{config.count}.parquet"
    target = storage.join(config.output, name)
    write_table(target, table)
    logger.info("wrote %d documents to %s", table.num_rows, target)
    if config.qa_output:
        pairs = qa_pairs(table, config.split)
        write_table(storage.join(config.qa_output, name), pa.Table.from_pylist(pairs, QA_SCHEMA))
        logger.info("wrote %d Q&A pairs to %s", len(pairs), config.qa_output)
    if config.chunks_output:
        chunks = chunk_rows(table, config.chunk_tokens)
        write_table(storage.join(config.chunks_output, name), pa.Table.from_pylist(chunks))
        logger.info("wrote %d chunks to %s", len(chunks), config.chunks_output)
    return target


if __name__ == "__main__":
    run_job(__spec__, "DemoDocumentsConfig")
