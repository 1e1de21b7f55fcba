"""Markup formats: HTML (lxml via Beautiful Soup), Markdown (``markdown-it-py``) and EPUB (``ebooklib``,
each chapter read as HTML)."""

from __future__ import annotations

import io
import re

from rayfleet.text.document import (
    CORRUPT_PACKAGE_ERRORS,
    MIME_EPUB,
    MIME_HTML,
    MIME_MARKDOWN,
    Heading,
    ParseError,
    ParsedDocument,
    TextBuilder,
    corrupt_error,
    decode_text,
    first_line,
    normalize_text,
    table_row,
    zip_member,
)

HTML_SKIPPED = {"script", "style", "noscript", "template", "svg", "head", "nav", "iframe", "object", "canvas"}
HTML_BLOCKS = {
    "address", "article", "aside", "blockquote", "body", "dd", "details", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "header", "hr", "li", "main", "ol", "p", "section", "summary", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "ul", "caption",
}  # fmt: skip
HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def parse_html(data: bytes | str) -> ParsedDocument:
    """HTML through lxml (Beautiful Soup): visible text by block, headings h1-h6, scripts and nav dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    title_tag = soup.find("title")
    builder = TextBuilder()
    try:
        _walk_html(soup.body or soup, builder)
    except RecursionError as error:
        raise ParseError("HTML nested too deeply to parse") from error
    text = builder.text()
    title = " ".join(title_tag.get_text().split()) if title_tag else ""
    if not title:
        title = builder.headings[0].title if builder.headings else first_line(text)
    return ParsedDocument(text, title, MIME_HTML, "beautifulsoup4+lxml", [0], builder.headings)


def _walk_html(node, builder: TextBuilder) -> None:
    from bs4 import NavigableString, Tag
    from bs4.element import PreformattedString

    for child in node.children:
        if isinstance(child, PreformattedString):  # comments, CDATA, doctype
            continue
        if isinstance(child, NavigableString):
            builder.add_inline(str(child))
        elif isinstance(child, Tag) and child.name not in HTML_SKIPPED:
            if child.name in HTML_HEADINGS:
                builder.add_heading(HTML_HEADINGS[child.name], " ".join(child.get_text(" ").split()))
            elif child.name == "table" and _is_data_table(child):
                builder.end_block()
                for row in _html_table_rows(child):
                    builder.add_paragraph(table_row(cell.get_text(" ") for cell in row))
            elif child.name == "pre":
                builder.end_block()
                builder.add_paragraph(normalize_text(child.get_text()).strip("\n"))
            elif child.name == "br":
                builder.add_inline("\n")
            else:
                is_block = child.name in HTML_BLOCKS
                if is_block:
                    builder.end_block()
                _walk_html(child, builder)
                if is_block:
                    builder.end_block()


HTML_LAYOUT_INSIDE_CELLS = ["table", "p", "div", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote"]


def _is_data_table(table) -> bool:
    """A table of values (read as rows) rather than a layout table that holds the page's blocks."""
    return table.find(HTML_LAYOUT_INSIDE_CELLS) is None


def _html_table_rows(table) -> list[list]:
    """The caption (as a one-cell row) and each row's cells, in order."""
    caption = table.find("caption")
    rows = [[caption]] if caption is not None else []
    for row in table.find_all("tr"):
        rows.append(row.find_all(["th", "td"], recursive=False))
    return rows


# YAML front matter (Jekyll, Hugo, Obsidian): between '---' lines at the very start.
FRONT_MATTER = re.compile(r"\A---\n(.*?\n)(?:---|\.\.\.)\n", re.DOTALL)
FRONT_MATTER_TITLE = re.compile(r"^title:\s*(.+?)\s*$", re.MULTILINE)


def parse_markdown(data: bytes) -> ParsedDocument:
    """Markdown: the source text as it is (readable to a model), headings from markdown-it's parse
    (front matter is not one: its ``title`` is the document's)."""
    from markdown_it import MarkdownIt

    text = normalize_text(decode_text(data))
    front = FRONT_MATTER.match(text)
    front_title = FRONT_MATTER_TITLE.search(front.group(1)) if front else None
    body = "\n" * front.group(0).count("\n") + text[front.end() :] if front else text  # same line numbers
    line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
    tokens = MarkdownIt("commonmark").parse(body)
    headings = []
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open" and opening.map:
            headings.append(Heading(line_starts[opening.map[0]], int(opening.tag[1]), inline.content.strip()))
    top = min(headings, key=lambda heading: (heading.level, heading.offset)) if headings else None
    title = (
        front_title.group(1).strip("'\"")
        if front_title
        else top.title
        if top
        else first_line(text[front.end() :] if front else text)
    )
    return ParsedDocument(text, title, MIME_MARKDOWN, "markdown-it-py", [0], headings)


def parse_epub(data: bytes) -> ParsedDocument:
    """EPUB through ebooklib: one page per chapter in reading (spine) order, each read as HTML with its
    headings."""
    from ebooklib import epub

    if zip_member(data, "META-INF/encryption.xml"):
        raise ParseError("DRM-protected EPUB: its chapters are encrypted")
    try:
        book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
    except (epub.EpubException, *CORRUPT_PACKAGE_ERRORS, AttributeError, IndexError) as error:
        raise corrupt_error("EPUB", error) from error
    builder = TextBuilder()
    for item_id, _ in book.spine:
        item = book.get_item_with_id(item_id)
        if item is None or not item.get_name().lower().endswith((".xhtml", ".html", ".htm", ".xml")):
            continue
        chapter = parse_html(item.get_content())
        if chapter.text.strip():
            builder.start_page()
            builder.add_document(chapter)
    titles = book.get_metadata("DC", "title")
    title = " ".join(str(titles[0][0]).split()) if titles else ""
    text, pages = builder.text(), builder.page_offsets or [0]
    return ParsedDocument(text, title or first_line(text), MIME_EPUB, "ebooklib", pages, builder.headings)
