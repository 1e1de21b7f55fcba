"""Build a real documents dataset from the ACL papers of ``aclsum`` (human-written text).

    python -m jobs.demo_documents output=s3://rayfleet/demo/documents count=16

Writes one Parquet file of documents (``doc_id``, ``title``, ``text``, ``source``) plus
the papers' three human summaries (``reference_challenge``, ``reference_approach``,
``reference_outcome``) for evaluation. ``content=sections`` takes the abstract,
introduction and conclusion the human summaries were written from; ``content=abstract``
the abstract alone (short documents); ``content=full`` the whole paper body (long
documents, summarized map-reduce style).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Literal

import pyarrow as pa
from pydantic import Field

from rayfleet import storage
from rayfleet.config import BaseConfig, load_config
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


def main(config: DemoDocumentsConfig) -> str:
    storage.ensure_bucket(config.output)
    table = build_documents(config)
    target = storage.join(config.output, f"aclsum-{config.split}-{config.content}-{config.count}.parquet")
    write_table(target, table)
    logger.info("wrote %d documents to %s", table.num_rows, target)
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(load_config(DemoDocumentsConfig, sys.argv[1:]))
