"""The text builder every parser shares: paragraphs, headings with their offsets, table rows."""

from __future__ import annotations

import datetime

from rayfleet.text.document import Heading, ParsedDocument, TextBuilder, table_row


def test_table_rows_read_as_a_person_writes_them():
    assert table_row([" impeller ", 1200.0, 2.5, None, datetime.datetime(2026, 3, 1), None, ""]) == (
        "impeller | 1200 | 2.5 |  | 2026-03-01"
    )
    assert table_row([None, ""]) == ""


def test_an_added_document_keeps_its_headings_deeper_and_at_their_new_offsets():
    inner = ParsedDocument("Parts\n\nimpeller | yearly\n\nSeals\n\nCheck monthly.", None, "text/plain", "test",
                           headings=[Heading(0, 1, "Parts"), Heading(26, 2, "Seals")])  # fmt: skip
    builder = TextBuilder()
    builder.add_heading(1, "Message")
    builder.add_paragraph("Body.")
    builder.add_document(inner, deeper=2)
    text = builder.text()
    assert text == "Message\n\nBody.\n\nParts\n\nimpeller | yearly\n\nSeals\n\nCheck monthly."
    assert [(h.level, h.title) for h in builder.headings] == [(1, "Message"), (3, "Parts"), (4, "Seals")]
    assert all(text[h.offset :].startswith(h.title) for h in builder.headings)
