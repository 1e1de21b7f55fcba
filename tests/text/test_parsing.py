"""Parsing every supported format, on the real PDFs and on small files built here."""

from __future__ import annotations

import io
import random
import re

import pytest

from rayfleet.text.formats.pdf import without_running_lines
from rayfleet.text.parsing import (
    MIME_CSV,
    MIME_DOCX,
    MIME_EMAIL,
    MIME_EPUB,
    MIME_HTML,
    MIME_ODP,
    MIME_ODS,
    MIME_ODT,
    MIME_PDF,
    MIME_PPTX,
    MIME_RTF,
    MIME_TEXT,
    MIME_TSV,
    MIME_XLSX,
    OLE_MAGIC,
    ParseError,
    detect_mime_type,
    parse_file,
)
from tests.text.samples import (
    PDFS,
    blank_pdf,
    damaged_member,
    docx_bytes,
    eml_bytes,
    encrypted_odt,
    encrypted_pdf,
    epub_bytes,
    odf_bytes,
    odf_row,
    odf_table,
    odp_bytes,
    ods_bytes,
    odt_bytes,
    pptx_bytes,
    rtf_bytes,
    with_member,
    xlsx_bytes,
)


@pytest.fixture(scope="module")
def manual():
    return parse_file("gnuplot.pdf", (PDFS / "gnuplot.pdf").read_bytes())


@pytest.fixture(scope="module")
def refcard():
    return parse_file("refcard-a4.pdf", (PDFS / "refcard-a4.pdf").read_bytes())


def page_text(document, page: int) -> str:
    """Text of 1-based ``page``."""
    offsets = document.page_offsets + [len(document.text)]
    return document.text[offsets[page - 1] : offsets[page]]


def test_manual_pages_and_known_phrases(manual):
    assert manual.page_count == 311
    assert manual.mime_type == MIME_PDF and manual.title == "gnuplot documentation"
    assert "An Interactive Plotting Program" in page_text(manual, 1)
    assert "The load command executes each line of the specified input file" in page_text(manual, 101)
    assert manual.page_offsets == sorted(manual.page_offsets)


def test_manual_headings_come_from_the_outline_at_their_line(manual):
    assert len(manual.headings) > 300
    load = next(heading for heading in manual.headings if heading.title == "Load")
    assert manual.text[load.offset :].startswith("Load")
    assert manual.page_offsets[100] <= load.offset < manual.page_offsets[101]


def test_the_manuals_running_headers_are_kept_once_not_on_every_page(manual):
    # Left pages start "<n> gnuplot 5.4", right pages end "gnuplot 5.4 <n>": 283 of the 311 pages.
    running = re.findall(r"(?m)^(\d+ gnuplot 5\.4|gnuplot 5\.4 \d+)$", manual.text)
    assert len(running) == 2, running


def test_running_headers_and_footers_differing_only_in_numbers_are_kept_where_they_first_appear():
    pages = [f"ACME Report 2026\nBody text {n} of the page.\nMore body.\nPage {n} of 6" for n in range(1, 7)]
    pages[2] = "ACME Report 2026\nA page whose footer is missing.\nThe pump was replaced."
    cleaned = without_running_lines(pages)
    assert cleaned[0] == pages[0], "the first of each is kept"
    assert cleaned[1] == "Body text 2 of the page.\nMore body."
    assert cleaned[2] == "A page whose footer is missing.\nThe pump was replaced."
    assert without_running_lines(pages[:3]) == pages[:3], "three pages are too few to tell"
    words = ["arrow", "border", "clip", "dgrid", "encoding", "fit"]
    body = [f"{word.title()}\nSets the {word}.\nSyntax:\nset {word}\nSee {word}s.\nEnd of {word}." for word in words]
    assert without_running_lines(body) == body, "a line repeated mid-page is content"


def test_refcard_pages_and_phrases(refcard):
    # The A4 card: two dense pages of reference plus a third with the last sections and the copyright.
    assert refcard.page_count == 3
    assert "Octave Quick Reference" in page_text(refcard, 1)
    assert "Arithmetic and Increment Operators" in page_text(refcard, 2)
    assert "Copyright 1996-2022" in page_text(refcard, 3)
    assert "\r" not in refcard.text


def test_html_keeps_visible_text_and_headings():
    html = b"""<!doctype html><html><head><title>Valve guide</title><style>p {color: red}</style></head>
    <body><nav>Home | About</nav><h1>Valves</h1><p>A valve &amp; its <b>seat</b> wear
    together.</p><!-- a comment --><script>var hidden = 1;</script>
    <h2>Checks</h2><ul><li>Listen for leaks.</li><li>Measure the pressure.</li></ul></body></html>"""
    document = parse_file("guide.html", html)
    assert document.title == "Valve guide" and document.mime_type == MIME_HTML
    assert "A valve & its seat wear together." in document.text
    assert "Listen for leaks.\n\nMeasure the pressure." in document.text
    for hidden in ("hidden", "color", "Home | About", "a comment"):
        assert hidden not in document.text
    assert [(h.level, h.title) for h in document.headings] == [(1, "Valves"), (2, "Checks")]
    assert all(document.text[h.offset :].startswith(h.title) for h in document.headings)


def test_html_data_tables_are_rows_and_layout_tables_are_walked():
    html = b"""<html><body><h1>Parts</h1><table><caption>Service intervals</caption>
    <thead><tr><th>part</th><th>interval</th></tr></thead>
    <tbody><tr><td>impeller</td><td>yearly <b>or</b> 5000 h</td></tr><tr><td>seals</td><td></td></tr></tbody></table>
    <table><tr><td><p>Layout cell one.</p><p>Second paragraph.</p></td><td><div>Sidebar</div></td></tr></table>
    </body></html>"""
    assert parse_file("parts.html", html).text.split("\n\n") == [
        "Parts", "Service intervals", "part | interval", "impeller | yearly or 5000 h", "seals",
        "Layout cell one.", "Second paragraph.", "Sidebar"]  # fmt: skip


def test_markdown_headings_by_line():
    text = "Intro line.\n\n# Setup guide\n\nInstall it.\n\n## Ports\n\nOpen port 8333.\n\n```\n# not a heading\n```\n"
    document = parse_file("guide.md", text.encode())
    assert document.title == "Setup guide"
    assert [(h.level, h.title) for h in document.headings] == [(1, "Setup guide"), (2, "Ports")]
    assert all(document.text[h.offset :].startswith("#" * h.level + " " + h.title) for h in document.headings)


def test_markdown_front_matter_is_no_heading_and_its_title_is_the_documents():
    text = '---\ntitle: "Field guide"\nauthor: me\n---\n\nIntro.\n\n## Tools\n\nA wrench.\n'
    document = parse_file("guide.md", text.encode())
    assert document.title == "Field guide"
    assert [(h.level, h.title) for h in document.headings] == [(2, "Tools")]
    assert document.text[document.headings[0].offset :].startswith("## Tools")


def test_docx_merged_cells_once_and_nested_tables_kept():
    import io

    import docx

    document = docx.Document()
    table = document.add_table(rows=2, cols=3)
    table.cell(0, 0).merge(table.cell(0, 2)).text = "Merged header"
    table.cell(1, 0).text, table.cell(1, 2).text = "left", "right"
    table.cell(1, 1).add_table(rows=1, cols=2).rows[0].cells[0].text = "nested1"
    table.cell(1, 1).tables[0].rows[0].cells[1].text = "nested2"
    buffer = io.BytesIO()
    document.save(buffer)
    assert parse_file("t.docx", buffer.getvalue()).text.split("\n\n") == [
        "Merged header",
        "left | nested1 | nested2 | right",
    ]


def test_docx_headers_and_footers_in_effect_follow_the_body_once_each():
    import io

    import docx
    from docx.enum.section import WD_SECTION

    document = docx.Document()
    document.add_paragraph("Body of the first section.")
    first = document.sections[0]
    first.header.paragraphs[0].text = "Acme Corp - Confidential"
    first.footer.add_table(rows=1, cols=2, width=first.page_width).rows[0].cells[0].text = "Policy HR-7"
    first.different_first_page_header_footer = True
    first.first_page_header.paragraphs[0].text = "Cover page header"
    second = document.add_section(WD_SECTION.NEW_PAGE)  # linked to the first: its header is the same
    document.add_paragraph("Body of the second section.")
    second.even_page_header.paragraphs[0].text = "Even pages are not turned on"
    buffer = io.BytesIO()
    document.save(buffer)

    paragraphs = parse_file("policy.docx", buffer.getvalue()).text.split("\n\n")

    assert paragraphs == ["Body of the first section.", "Body of the second section.", "Acme Corp - Confidential",
                          "Policy HR-7", "Cover page header"]  # fmt: skip


W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
TEXT_BOX_RUN = f"""<w:r xmlns:w="{W_NS}" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"
  xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" xmlns:v="urn:schemas-microsoft-com:vml">
  <mc:AlternateContent>
    <mc:Choice Requires="wps"><w:drawing><wps:wsp><wps:txbx><w:txbxContent>
      <w:p><w:r><w:t>Call 555-0100 for the form.</w:t></w:r></w:p><w:p><w:r><w:t>Deadline: 1 March.</w:t></w:r></w:p>
    </w:txbxContent></wps:txbx></wps:wsp></w:drawing></mc:Choice>
    <mc:Fallback><w:pict><v:shape><v:textbox><w:txbxContent>
      <w:p><w:r><w:t>Call 555-0100 for the form.</w:t></w:r></w:p><w:p><w:r><w:t>Deadline: 1 March.</w:t></w:r></w:p>
    </w:txbxContent></v:textbox></v:shape></w:pict></mc:Fallback>
  </mc:AlternateContent></w:r>"""
FOOTNOTES = f"""<w:footnotes xmlns:w="{W_NS}">
  <w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>
  <w:footnote w:id="1"><w:p><w:r><w:t>Source: the 2025 staff survey.</w:t></w:r></w:p></w:footnote>
</w:footnotes>"""


def with_footnotes(docx_data: bytes) -> bytes:
    """The DOCX with a footnotes part (python-docx cannot add one): the part, its relationship, its type."""
    import zipfile

    source, target = zipfile.ZipFile(io.BytesIO(docx_data)), io.BytesIO()
    with zipfile.ZipFile(target, "w") as package:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "word/_rels/document.xml.rels":
                data = data.replace(b"</Relationships>", b'<Relationship Id="rIdNotes" Target="footnotes.xml" Type='
                                    b'"http://schemas.openxmlformats.org/officeDocument/2006/relationships/footnotes"/>'
                                    b"</Relationships>")  # fmt: skip
            elif item.filename == "[Content_Types].xml":
                data = data.replace(b"</Types>", b'<Override PartName="/word/footnotes.xml" ContentType='
                                    b'"application/vnd.openxmlformats-officedocument.wordprocessingml.footnotes+xml"/>'
                                    b"</Types>")  # fmt: skip
            package.writestr(item, data)
        package.writestr("word/footnotes.xml", FOOTNOTES)
    return target.getvalue()


def test_docx_text_boxes_follow_their_paragraph_once_and_footnotes_follow_the_body():
    import docx
    from docx.oxml import parse_xml

    document = docx.Document()
    anchor = document.add_paragraph("Staff who want the new badge should apply.")
    anchor._p.append(parse_xml(TEXT_BOX_RUN))
    document.add_paragraph("Badges are issued within a week.")
    buffer = io.BytesIO()
    document.save(buffer)

    paragraphs = parse_file("notice.docx", with_footnotes(buffer.getvalue())).text.split("\n\n")

    assert paragraphs == [
        "Staff who want the new badge should apply.",
        "Call 555-0100 for the form.",
        "Deadline: 1 March.",
        "Badges are issued within a week.",
        "Source: the 2025 staff survey.",
    ]


@pytest.mark.parametrize(
    "text, encoding",
    [
        ("Le café était fermé. Les élèves ont mangé à la crêperie près de la gare, déçus. Après le dîner, "
         "nous sommes allés au théâtre où la pièce était très appréciée.\n" * 3, "cp1252"),
        ("Съешь же ещё этих мягких французских булок, да выпей чаю. Программа читает файлы в разных кодировках.\n" * 3,
         "cp1251"),
        ("Les élèves de l'école sont allés à la bibliothèque où ils ont lu des livres.\n" * 4, "cp1252"),
        ('He said “hello” – €5 … déjà vu\n', "cp1252"),
        ("city;country\nGenève;Suisse\nZürich;Schweiz\n", "cp1252"),
        ("Příliš žluťoučký kůň úpěl ďábelské ódy. Česká republika je stát ve střední Evropě.\n" * 3, "cp1250"),
        ("Notes from Notepad: café, 東京, emoji 🙂\nsecond line\n", "utf-16"),  # the codec writes the mark
        ("\ufeffBig-endian with its mark: Zürich\n", "utf-16-be"),
        ("UTF-32 with its mark: Ελλάδα\n", "utf-32"),
        ("Excel's Unicode text without a mark: Genève\tSuisse\n" * 3, "utf-16-le"),
        ("没有字节顺序标记的UTF-16中文文本，第二句话在这里。\n第二行。\n", "utf-16-le"),  # few zero bytes
        ("没有字节顺序标记的UTF-16中文文本，第二句话在这里。\n第二行。\n", "utf-16-be"),
    ],
)  # fmt: skip
def test_text_in_a_legacy_encoding_is_decoded_and_the_encoding_named(text, encoding):
    data = text.encode(encoding)
    document = parse_file("notes.txt", data)
    assert document.text == text.lstrip("\ufeff")
    kind, _, read_as = document.parser.partition(":")
    assert kind == "text" and data.decode(read_as) == document.text, f"{document.parser} is how it was read"


def test_plain_utf8_text_is_named_as_such():
    assert parse_file("notes.txt", "Café notes\n".encode()).parser == "text:utf-8"


def test_docx_paragraphs_tables_and_headings():
    document = parse_file("pump.docx", docx_bytes())
    assert document.mime_type == MIME_DOCX and document.title == "Pump maintenance"
    assert "Check the seals every month." in document.text
    assert "impeller | yearly" in document.text
    assert [(h.level, h.title) for h in document.headings] == [(1, "Pump maintenance"), (2, "Parts")]


def test_docx_reads_as_it_stands_now_tracked_changes_and_content_controls_included():
    import docx
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    def element(tag: str, *children, text: str | None = None, **attributes):
        made = OxmlElement(tag)
        for key, value in attributes.items():
            made.set(qn(f"w:{key}"), value)
        if text is not None:
            made.text = text
            made.set(qn("xml:space"), "preserve")
        made.extend(children)
        return made

    def run(text: str, tag: str = "w:t"):
        return element("w:r", element(tag, text=text))

    change = {"id": "1", "author": "Ann", "date": "2026-01-01T00:00:00Z"}
    document = docx.Document()
    edited = document.add_paragraph("The pump ")
    edited._p.extend([element("w:ins", run("was replaced "), **change),
                      element("w:del", run("is broken ", "w:delText"), **change)])  # fmt: skip
    edited.add_run("in May.")
    form = document.add_paragraph("Inspector:")
    form._p.extend([element("w:r", element("w:tab")), element("w:sdt", element("w:sdtContent", run("Bo Lind")))])
    unfilled = element("w:sdt", element("w:sdtPr", element("w:showingPlcHdr")),
                       element("w:sdtContent", run("Click or tap here to enter text.")))  # fmt: skip
    document.add_paragraph("Witness: ")._p.append(unfilled)
    cover = element("w:sdt", element("w:sdtContent", element("w:p", run("Cover page: plant 7"))))
    document.element.body.insert(0, cover)
    fields = document.add_table(rows=2, cols=2)
    fields.cell(0, 0).text = "Pressure"
    fields.cell(0, 1)._tc.append(element("w:sdt", element("w:sdtContent", element("w:p", run("4.2 bar")))))
    fields.cell(1, 0).text, fields.cell(1, 1).text = "Flow", "12 l/s"
    repeated_row = fields._tbl.tr_lst[1]
    fields._tbl.remove(repeated_row)
    fields._tbl.append(element("w:sdt", element("w:sdtContent", repeated_row)))  # a repeating section
    buffer = io.BytesIO()
    document.save(buffer)

    text = parse_file("report.docx", buffer.getvalue()).text

    expected = "Cover page: plant 7\n\nThe pump was replaced in May.\n\nInspector:\tBo Lind\n\nWitness:"
    assert text == expected + "\n\nPressure | 4.2 bar\n\nFlow | 12 l/s", "an unfilled field's placeholder is no text"


def test_pptx_slide_numbers_and_dates_are_left_out_and_a_footer_is_read_once():
    from pptx import Presentation
    from pptx.enum.shapes import PP_PLACEHOLDER

    furniture = {PP_PLACEHOLDER.FOOTER: "ACME | Confidential", PP_PLACEHOLDER.DATE: "03/12/2026"}
    presentation = Presentation()
    layout = presentation.slide_layouts[5]  # title only, with date, footer and slide number placeholders
    for number, title in enumerate(["Pumps", "Valves", "Seals"], 1):
        slide = presentation.slides.add_slide(layout)
        slide.shapes.title.text = title
        for placeholder in layout.placeholders:
            kind = placeholder.placeholder_format.type
            if kind in (*furniture, PP_PLACEHOLDER.SLIDE_NUMBER):
                slide.shapes.clone_placeholder(placeholder)
        for placeholder in slide.placeholders:
            kind = placeholder.placeholder_format.type
            if kind != PP_PLACEHOLDER.TITLE:
                placeholder.text = furniture.get(kind, f"Slide {number}")
    buffer = io.BytesIO()
    presentation.save(buffer)

    document = parse_file("deck.pptx", buffer.getvalue())

    assert page_text(document, 1).split() == ["Pumps", "ACME", "|", "Confidential"]
    assert [page_text(document, page).strip() for page in (2, 3)] == ["Valves", "Seals"]


def test_pptx_slides_are_pages_read_top_to_bottom_with_titles_tables_and_notes():
    document = parse_file("review.pptx", pptx_bytes())
    assert document.mime_type == MIME_PPTX and document.title == "Quarterly pump review"
    assert document.page_count == 3
    assert [(h.level, h.title) for h in document.headings] == [
        (1, "Quarterly pump review"), (1, "Findings"), (1, "Costs")]  # fmt: skip
    assert "Plant operations, Q3" in page_text(document, 1)
    findings = page_text(document, 2)
    order = ["Findings", "Three pumps were rebuilt.", "Two impellers were replaced.", "Grouped: vibration is down.",
             "Seal failures fell by a third.", "Mention the new supplier."]  # fmt: skip
    assert [findings.index(text) for text in order] == sorted(findings.index(text) for text in order)
    assert "seals | 1200 EUR" in page_text(document, 3) and "Findings" not in page_text(document, 3)
    assert all(document.text[heading.offset :].startswith(heading.title) for heading in document.headings)


def test_xlsx_sheets_are_pages_of_rows_and_empty_sheets_are_left_out():
    document = parse_file("costs.xlsx", xlsx_bytes())
    assert document.mime_type == MIME_XLSX and document.title == "Plant costs"
    assert document.page_count == 2
    assert [(h.level, h.title) for h in document.headings] == [(1, "Costs"), (1, "Staff")]
    assert page_text(document, 1).split("\n\n") == ["Costs", "item | cost", "seals | 1200", "ordered | 2026-03-01", ""]
    assert page_text(document, 2).split("\n\n") == ["Staff", "name | role", "Ann | maintenance engineer"]


@pytest.mark.parametrize(
    "name, data, mime_type",
    [
        ("staff.csv", b'name,role\nAnn,engineer\n"Bo, Jr","lead\nfitter"\n', MIME_CSV),
        ("staff.csv", "name;role\r\nAnn;engineer\r\nBo, Jr;lead fitter\r\n".encode("cp1252"), MIME_CSV),
        ("staff.tsv", b"name\trole\nAnn\tengineer\nBo, Jr\tlead fitter\n", MIME_TSV),
    ],
)
def test_delimited_rows_whatever_the_delimiter(name, data, mime_type):
    document = parse_file(name, data)
    assert document.mime_type == mime_type and document.title is None, "a header row is no title"
    assert document.text.split("\n\n") == ["name | role", "Ann | engineer", "Bo, Jr | lead fitter"]


def test_csv_cells_may_be_larger_than_the_csv_module_default():
    long_cell = "word " * 40_000
    assert parse_file("dump.csv", f'id,text\n1,"{long_cell}"\n'.encode()).text.endswith("word")


def test_email_headers_body_and_readable_attachments():
    document = parse_file("review.eml", eml_bytes())
    assert document.mime_type == MIME_EMAIL and document.title == "Pump réview notes"
    assert [(h.level, h.title) for h in document.headings] == [  # an attachment's own headings nest under its name
        (1, "Pump réview notes"), (2, "pump.docx"), (3, "Pump maintenance"), (4, "Parts"),
        (2, "Supplier quote.eml"), (3, "Supplier quote")]  # fmt: skip
    assert "From: Ann <ann@example.com>\nTo: ops@example.com\nDate: Mon, 30 Nov 2026" in document.text
    assert "Attachments: pump.docx, photo.png, Supplier quote.eml" in document.text
    assert "The seals on pump 3 are worn." in document.text and "HTML copy" not in document.text
    assert "impeller | yearly" in document.text  # from the attached DOCX
    assert "The quote for new seals is 1200 EUR." in document.text  # from the forwarded message
    assert all(document.text[h.offset :].startswith(h.title) for h in document.headings)


def test_email_attachments_compressed_or_zipped_are_read_as_the_files_inside():
    import gzip
    from email.message import EmailMessage

    from tests.test_archives import zipped

    message = EmailMessage()
    message["Subject"], message["From"] = "Minutes", "ann@example.com"
    message.set_content("Minutes attached.")
    minutes = zipped({"notes.md": b"# Decisions\n\nThe pump is replaced in May.\n", "pump.docx": docx_bytes(),
                      "__MACOSX/._notes.md": b"\x00\x05"})  # fmt: skip
    message.add_attachment(minutes, maintype="application", subtype="zip", filename="minutes.zip")
    message.add_attachment(gzip.compress(b"Valve 7 leaks."), maintype="application", subtype="gzip",
                           filename="log.txt.gz")  # fmt: skip
    message.add_attachment(b"PK\x03\x04 broken", maintype="application", subtype="zip", filename="broken.zip")

    document = parse_file("minutes.eml", message.as_bytes())

    assert "Attachments: minutes.zip, log.txt.gz, broken.zip" in document.text
    headings = [h.title for h in document.headings if h.level == 2]
    assert headings == ["minutes.zip/notes.md", "minutes.zip/pump.docx", "log.txt"]
    assert "The pump is replaced in May." in document.text and "impeller | yearly" in document.text
    assert "Valve 7 leaks." in document.text


def test_email_attachments_that_are_tar_archives_are_read_as_the_files_inside():
    from email.message import EmailMessage

    from tests.test_archives import tarred

    message = EmailMessage()
    message["Subject"], message["From"] = "Minutes", "ann@example.com"
    message.set_content("Minutes attached.")
    notes = b"# Decisions\n\nThe pump is replaced in May.\n"
    minutes = tarred({"./notes.md": notes, "./pump.docx": docx_bytes()}, "gz")
    message.add_attachment(minutes, maintype="application", subtype="gzip", filename="minutes.tar.gz")
    message.add_attachment(tarred({"log.txt": b"Valve 7 leaks."}), maintype="application", subtype="x-tar",
                           filename="log.tar")  # fmt: skip
    message.add_attachment(b"not a tar " * 100, maintype="application", subtype="x-tar", filename="broken.tar")

    document = parse_file("minutes.eml", message.as_bytes())

    headings = [h.title for h in document.headings if h.level == 2]
    assert headings == ["minutes.tar/notes.md", "minutes.tar/pump.docx", "log.tar/log.txt"]
    assert "The pump is replaced in May." in document.text and "impeller | yearly" in document.text
    assert "Valve 7 leaks." in document.text


def test_email_with_only_an_html_body_gives_its_text():
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"], message["From"] = "Outage", "ops@example.com"
    message.set_content("<html><body><p>Pump 3 is <b>down</b> until Friday.</p><script>x()</script></body></html>",
                        subtype="html")  # fmt: skip
    document = parse_file("outage.eml", message.as_bytes())
    assert document.text.endswith("Pump 3 is down until Friday.") and "x()" not in document.text


def test_odt_headings_paragraphs_lists_and_tables_in_order():
    document = parse_file("pump.odt", odt_bytes())
    assert document.mime_type == MIME_ODT and document.title == "Pump maintenance"
    assert document.text.split("\n\n") == ["Pump maintenance", "Check the seals every month.", "Drain the pump.",
                                            "Open the casing.", "Parts", "part | interval",
                                            "impeller | yearly"]  # fmt: skip
    assert [(h.level, h.title) for h in document.headings] == [(1, "Pump maintenance"), (2, "Parts")]
    assert all(document.text[h.offset :].startswith(h.title) for h in document.headings)


def test_ods_sheets_are_pages_and_repeated_empty_cells_add_nothing():
    document = parse_file("costs.ods", ods_bytes())
    assert document.mime_type == MIME_ODS and document.page_count == 1, "the empty sheet is left out"
    assert document.title is None, "a sheet name is no title"
    assert document.text.split("\n\n") == ["Costs", "item | cost", "seals | 1200"]


def test_odf_table_merged_cells_keep_columns_cell_paragraphs_and_nested_tables_are_read_once():
    from odf import table, text
    from odf.opendocument import OpenDocumentText

    document = OpenDocumentText()
    grid = table.Table(name="Plan")
    header = table.TableHeaderRows()
    header.addElement(odf_row(["pump", "from", "to"]))
    grid.addElement(header)
    merged = table.TableRow()  # LibreOffice's layout of "P1" spanning two columns
    first = table.TableCell(numbercolumnsspanned=2)
    first.addElement(text.P(text="P1 (whole week)"))
    merged.addElement(first)
    merged.addElement(table.CoveredTableCell())
    last = table.TableCell()
    last.addElement(text.P(text="Friday"))
    last.addElement(text.P(text="noon"))
    merged.addElement(last)
    grid.addElement(merged)
    nested = table.TableRow()
    holder = table.TableCell()
    holder.addElement(odf_table("Inner", [("seal", "ring")]))
    nested.addElement(holder)
    grid.addElement(nested)
    document.text.addElement(grid)
    parsed = parse_file("plan.odt", odf_bytes(document))
    assert parsed.text.split("\n\n") == ["pump | from | to", "P1 (whole week) |  | Friday noon", "seal ring"]


def test_odp_slides_are_pages_with_their_titles_text_and_notes():
    document = parse_file("review.odp", odp_bytes())
    assert document.mime_type == MIME_ODP and document.page_count == 2
    assert [(h.level, h.title) for h in document.headings] == [(1, "Findings"), (1, "Costs")]
    assert page_text(document, 1).split("\n\n")[:3] == [
        "Findings",
        "Three pumps were rebuilt.",
        "Mention the new supplier.",
    ]
    assert page_text(document, 2) == "Costs\n\nSeals cost 1200 EUR."


def test_epub_chapters_are_pages_in_reading_order_with_their_headings():
    document = parse_file("handbook.epub", epub_bytes())
    assert document.mime_type == MIME_EPUB and document.title == "Pump handbook"
    assert document.page_count == 2 and page_text(document, 2) == "Impellers\n\nReplace a worn impeller."
    assert [(h.level, h.title) for h in document.headings] == [(1, "Seals"), (1, "Impellers")]
    assert all(document.text[h.offset :].startswith(h.title) for h in document.headings)


def test_rtf_text_in_the_code_page_it_declares():
    document = parse_file("notes.rtf", rtf_bytes())
    assert document.mime_type == MIME_RTF and document.title == "Pump notes"
    assert document.text == "Pump maintenance\nНасос pump, 12€ per visit.\nSecond paragraph with italic text."


def test_text_formats_by_extension_and_unnamed_text_files():
    assert parse_file("guide.rst", "Guide\n=====\n\nÉtape un.\n".encode("cp1252")).text == "Guide\n=====\n\nÉtape un.\n"
    assert parse_file("README", b"Run make demo.\n").mime_type == MIME_TEXT
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n<pump id="7"><part>impeller</part><price>12 €</price></pump>\n'
    assert parse_file("export.xml", xml.encode()).text == xml


def test_extensions_named_as_text_are_plain_text_unless_the_bytes_say_otherwise():
    assert parse_file("schema.sql", b"CREATE TABLE pumps (id int);\n", text_extensions={".sql"}).mime_type == MIME_TEXT
    with pytest.raises(ParseError, match="unknown file type '.sql'.*name its extension in text_extensions"):
        parse_file("schema.sql", b"CREATE TABLE pumps (id int);\n")
    assert detect_mime_type("refcard.sql", (PDFS / "refcard-a4.pdf").read_bytes(), {".sql"}) == MIME_PDF
    with pytest.raises(ParseError, match="binary content"):
        parse_file("dump.sql", b"\x00\x01\x02" * 10, text_extensions={".sql"})


def test_type_is_sniffed_when_the_extension_says_nothing():
    assert detect_mime_type("download", (PDFS / "refcard-a4.pdf").read_bytes()) == MIME_PDF
    assert detect_mime_type("page", b"  <!DOCTYPE html><html></html>") == MIME_HTML
    assert detect_mime_type("report", docx_bytes()) == MIME_DOCX
    assert detect_mime_type("slides", pptx_bytes()) == MIME_PPTX
    assert detect_mime_type("sheet", xlsx_bytes()) == MIME_XLSX
    assert detect_mime_type("message", eml_bytes()) == MIME_EMAIL
    assert detect_mime_type("letter", rtf_bytes()) == MIME_RTF
    assert [detect_mime_type("file", make()) for make in (odt_bytes, ods_bytes, odp_bytes, epub_bytes)] == [
        MIME_ODT, MIME_ODS, MIME_ODP, MIME_EPUB]  # fmt: skip
    assert detect_mime_type("NOTES", ("abc" + "Überblick\n" * 2000).encode()) == MIME_TEXT  # "Ü" cut at 4 KiB
    assert detect_mime_type("photo.png", b"\x89PNG\r\n") == "image/png"  # read by OCR: tests/text/test_ocr.py
    assert detect_mime_type("blob", bytes(range(256))) is None
    assert detect_mime_type("data.bin", b"plain words") is None  # an extension we do not read stays unknown


def test_an_xls_or_doc_that_is_really_text_or_html_is_read_as_what_it_is():
    exported = parse_file("report.xls", b"part\tcost\nseals\t1200\n")
    assert exported.mime_type == MIME_TSV and exported.text == "part | cost\n\nseals | 1200"
    unicode_text = parse_file("report.xls", "part\tcost\nJoint\t5 €\n".encode("utf-16"))
    assert unicode_text.text == "part | cost\n\nJoint | 5 €"
    table = parse_file("report.xls", b"<table><tr><td>seals</td><td>1200</td></tr></table>")
    assert table.mime_type == MIME_HTML and "seals | 1200" in table.text
    assert parse_file("letter.doc", b"Dear Ann,\nthe pump is fixed.\n").mime_type == MIME_TEXT
    with pytest.raises(ParseError, match="legacy binary Office file '.xls'"):
        parse_file("budget.xls", OLE_MAGIC + bytes(500))


def test_bytes_that_leave_no_doubt_win_over_a_wrong_extension():
    pdf = (PDFS / "refcard-a4.pdf").read_bytes()
    assert detect_mime_type("report.docx", pdf) == MIME_PDF
    assert parse_file("report.docx", pdf).text == parse_file("report.pdf", pdf).text
    assert detect_mime_type("notes.txt", docx_bytes()) == MIME_DOCX
    assert detect_mime_type("sheet.docx", xlsx_bytes()) == MIME_XLSX
    assert detect_mime_type("broken.docx", b"PK\x03\x04 not a zip") == MIME_DOCX  # no doubt only when it opens


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("corrupt.pdf", b"%PDF-1.4 this is not a pdf", "corrupt PDF"),
        ("truncated.pdf", (PDFS / "refcard-a4.pdf").read_bytes()[:4000], "corrupt PDF"),
        ("locked.pdf", encrypted_pdf(), "encrypted PDF"),
        ("scan.pdf", blank_pdf(), "no extractable text"),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "unreadable image"),
        ("diagram.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "unknown file type '.svg'"),
        ("empty.txt", b"   \n\n", "no extractable text"),
        ("nothing.pdf", b"", "empty file \\(0 bytes\\)"),
        ("binary.txt", b"\x00\x01\x02" * 10, "binary content"),
        ("noise.txt", bytes(random.Random(0).randrange(256) for _ in range(4000)) + bytes(4), "binary content"),
        ("broken.docx", b"PK\x03\x04 not a zip", "corrupt DOCX"),
        ("export.zip", b"PK\x03\x04 not a zip", "zip archive that does not open"),  # good ones: test_archives.py
        ("export.tar", b"not a tar " * 100, "tar archive that does not open"),  # good ones: test_archives.py
        ("export.tgz", b"not a tar " * 100, "tar archive that does not open"),  # as inflated: still .tgz
        ("export", bytes(257) + b"ustar\x0000" + bytes(250), "tar archive under a name that is not"),  # export.gz
        ("broken.pptx", pptx_bytes()[:2000], "corrupt PPTX"),
        ("locked.pptx", OLE_MAGIC + bytes(500), "password-protected file or a legacy binary Office file"),
        ("broken.xlsx", b"PK\x03\x04 not a zip", "corrupt XLSX"),
        ("damaged.xlsx", damaged_member(xlsx_bytes(), "xl/worksheets/sheet1.xml"), "corrupt XLSX"),
        ("damaged.docx", damaged_member(docx_bytes(), "word/document.xml"), "corrupt DOCX"),
        ("budget.xls", OLE_MAGIC + bytes(500), "legacy binary Office file '.xls'.*save it as XLSX"),
        ("thumbs.db", OLE_MAGIC + bytes(500), "unknown file type '.db'"),  # OLE, but no Office file
        ("attachment", OLE_MAGIC + bytes(500), "legacy binary Office file '\\(no extension\\)'"),
        ("notes.rtf", b"plain words", "corrupt RTF"),
        ("body.eml", b"\n\nno headers at all", "not an e-mail message"),
        ("locked.odt", encrypted_odt(), "encrypted OpenDocument file: it needs a password"),
        ("damaged.odt", damaged_member(odt_bytes(), "content.xml"), "corrupt OpenDocument"),
        ("drm.epub", with_member(epub_bytes(), "META-INF/encryption.xml", b"<encryption/>"), "DRM-protected EPUB"),
        ("damaged.epub", damaged_member(epub_bytes(), "EPUB/chapter1.xhtml"), "corrupt EPUB"),
    ],
)
def test_bad_files_raise_a_clear_reason(name, data, reason):
    with pytest.raises(ParseError, match=reason):
        parse_file(name, data)
