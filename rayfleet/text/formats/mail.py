"""E-mail messages (``.eml``) through the standard library's ``email``, attachments read by
:func:`rayfleet.text.parsing.parse_file`."""

from __future__ import annotations

from rayfleet.text.document import MIME_EMAIL, ParseError, ParsedDocument, TextBuilder, first_line, normalize_text
from rayfleet.text.formats.markup import parse_html
from rayfleet.text.ocr import OcrConfig

EMAIL_SHOWN_HEADERS = ("From", "To", "Cc", "Date")
# What one attachment may inflate to (a compressed file, or an archive's files together).
ATTACHMENT_MAX_INFLATED_BYTES = 100 * 2**20


def parse_email(data: bytes, ocr: OcrConfig | None = None) -> ParsedDocument:
    """An e-mail (``.eml``) through the standard library: its subject as a heading, sender, recipients
    and date, the body (plain text, else its HTML as text), then each attachment in a format read here
    (forwarded messages too) under a heading of its file name; a compressed attachment as the file
    inside, a zip or tar archive as each of its files (``minutes.zip/notes.md``)."""
    from email import policy
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(data)
    if not message.keys():
        raise ParseError("not an e-mail message: no headers")
    builder = TextBuilder()
    subject = " ".join(_header(message, "Subject").split())
    if subject:
        builder.add_heading(1, subject)
    attachments = [_attachment(part, index) for index, part in enumerate(message.iter_attachments(), 1)]
    names = [name for name, _ in attachments]
    fields = [(name, value) for name in EMAIL_SHOWN_HEADERS if (value := _header(message, name))]
    fields += [("Attachments", ", ".join(names))] if names else []
    builder.add_paragraph("\n".join(f"{name}: {' '.join(value.split())}" for name, value in fields))
    builder.add_paragraph(_email_body_text(message))
    for name, content in (unpacked for attachment in attachments for unpacked in _unpacked(*attachment)):
        attached = _parse_attachment(name, content, ocr)
        if attached is not None:
            builder.add_heading(2, name)
            builder.add_document(attached, deeper=2)
    text = builder.text()
    return ParsedDocument(text, subject or first_line(text), MIME_EMAIL, "email", [0], builder.headings)


def _header(message, name: str) -> str:
    """A header decoded (RFC 2047), '' when absent or too malformed to parse."""
    from email.errors import HeaderParseError

    try:
        return str(message.get(name, ""))
    except (HeaderParseError, ValueError, IndexError):
        return ""


def _email_body_text(message) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    try:
        content = body.get_content()
    except (LookupError, UnicodeError):  # an unknown or wrong charset
        content = (body.get_payload(decode=True) or b"").decode("utf-8", errors="replace")
    if body.get_content_subtype() == "html":
        return parse_html(content).text
    return normalize_text(content).strip()


def _attachment(part, index: int) -> tuple[str, bytes]:
    """An attachment's name and bytes; a forwarded message is named by its subject."""
    if part.get_content_type() == "message/rfc822":
        forwarded = part.get_content()
        subject = " ".join(_header(forwarded, "Subject").split())
        return f"{subject or f'message {index}'}.eml", forwarded.as_bytes()
    return " ".join((part.get_filename() or f"attachment {index}").split()), part.get_payload(decode=True) or b""


def _unpacked(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """An attachment as the files to read: a gzip, bzip2 or xz file as the file inside, a zip or tar
    archive (``.tar.gz`` too) as its files, each named under the archive's name; any other as it is
    (one that does not inflate too, to be passed over as unreadable)."""
    from rayfleet.archives import archived_files
    from rayfleet.text.compression import decompressed

    try:
        name, data, _ = decompressed(name, data, ATTACHMENT_MAX_INFLATED_BYTES)
    except ParseError:
        return [(name, data)]
    members = archived_files(name, data, ATTACHMENT_MAX_INFLATED_BYTES)
    return [(name, data)] if members is None else [(f"{name}/{member}", content) for member, content in members]


def _parse_attachment(name: str, data: bytes, ocr: OcrConfig | None) -> ParsedDocument | None:
    """The attachment's text (scans and pictures as ``ocr`` says), or None when it is not in a format
    read here (archives, audio...)."""
    from rayfleet.text.parsing import parse_file  # the dispatcher over every format, this one included

    try:
        return parse_file(name, data, ocr)
    except Exception:  # unreadable or a parser bug: the message and its other attachments still count
        return None
