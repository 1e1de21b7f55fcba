"""Subtitles and meeting transcripts: WebVTT (``.vtt``, as Teams, Zoom and YouTube export them) and
SubRip (``.srt``), through ``webvtt-py``.

The document is what was said, without cue numbers, timings or styling: one paragraph per turn,
``Alice Smith: ...`` when WebVTT voice tags name the speaker; a new paragraph also after a pause
of :data:`PAUSE_S` or more, so a transcript without speakers is not one long paragraph. A line
that rolling captions repeat from the cue before is kept once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from webvtt import WebVTT
from webvtt.errors import MalformedCaptionError, MalformedFileError

from rayfleet.text.document import (
    MIME_SRT,
    MIME_VTT,
    ParseError,
    ParsedDocument,
    TextBuilder,
    decode_text,
    normalize_text,
)

FORMATS = {MIME_VTT: ("vtt", "WebVTT"), MIME_SRT: ("srt", "SubRip")}
PAUSE_S = 2.0  # silence between cues that starts a new paragraph


def parse_subtitles(data: bytes, mime_type: str) -> ParsedDocument:
    """A WebVTT or SubRip file's spoken text, one paragraph per speaker's turn.

    Raises:
        ParseError: not a caption file of that format, or a cue with a malformed timing.
    """
    form, label = FORMATS[mime_type]
    try:
        captions = WebVTT.from_buffer(io.StringIO(normalize_text(decode_text(data))), format=form).captions
    except (MalformedFileError, MalformedCaptionError) as error:
        raise ParseError(f"malformed {label} file: {error}") from error
    builder = TextBuilder()
    for speaker, lines in turns(captions):
        builder.add_paragraph(f"{speaker}: {' '.join(lines)}" if speaker else " ".join(lines))
    return ParsedDocument(builder.text(), None, mime_type, "webvtt-py", [0], [])  # readers see the file name


def parse_vtt(data: bytes) -> ParsedDocument:
    return parse_subtitles(data, MIME_VTT)


def parse_srt(data: bytes) -> ParsedDocument:
    return parse_subtitles(data, MIME_SRT)


def turns(captions) -> Iterator[tuple[str | None, list[str]]]:
    """Consecutive captions of one speaker with no long pause between them: the speaker and the lines."""
    speaker, lines, last_line, last_end = None, [], None, None
    for caption in captions:
        pause = last_end is not None and caption.start_in_seconds - last_end >= PAUSE_S
        if lines and (caption.voice != speaker or pause):
            yield speaker, lines
            lines = []
        speaker, last_end = caption.voice, caption.end_in_seconds
        for line in (line.strip() for line in caption.text.splitlines()):
            if line and line != last_line:
                lines.append(line)
                last_line = line
    if lines:
        yield speaker, lines
