"""Subtitles and meeting transcripts: what was said, by whom, without timings or styling."""

from __future__ import annotations

import pytest

from rayfleet.text.parsing import MIME_SRT, MIME_VTT, ParseError, detect_mime_type, parse_file

MEETING_VTT = """WEBVTT
Kind: captions

NOTE exported by the meeting app

STYLE
::cue { color: yellow }

1
00:00:01.000 --> 00:00:04.000
<v Alice Smith>Good morning, let's start with the budget.</v>

2
00:00:04.200 --> 00:00:07.000 align:start
<v Alice Smith>We spent <b>forty percent</b> of it by March.</v>

3
00:00:07.300 --> 00:00:09.000
<v.loud Bob>That is too fast.
We must slow down.</v>
"""


def test_a_meeting_transcript_reads_as_turns_of_named_speakers():
    document = parse_file("standup.vtt", MEETING_VTT.encode())

    assert document.mime_type == MIME_VTT and document.parser == "webvtt-py" and document.title is None
    assert document.text == (
        "Alice Smith: Good morning, let's start with the budget. We spent forty percent of it by March.\n\n"
        "Bob: That is too fast. We must slow down."
    )


def test_subrip_without_speakers_breaks_paragraphs_at_pauses_and_keeps_a_rolled_line_once():
    srt = (
        "1\r\n00:00:01,000 --> 00:00:03,000\r\nThe pump failed <i>twice</i>\r\n\r\n"
        "2\r\n00:00:03,100 --> 00:00:05,000\r\nThe pump failed twice\r\nin the first week.\r\n\r\n"
        "3\r\n00:00:09,000 --> 00:00:11,000\r\nAfter the pause, a new topic.\r\n"
    ).encode("cp1252")

    document = parse_file("call.srt", srt)

    assert document.mime_type == MIME_SRT
    assert document.text == "The pump failed twice in the first week.\n\nAfter the pause, a new topic."


def test_a_transcript_with_no_extension_is_known_by_its_header():
    assert (
        detect_mime_type("incoming/meeting-2026-03-01", b"\xef\xbb\xbfWEBVTT\n\n00:01.000 --> 00:02.000\nHi\n")
        == MIME_VTT
    )
    assert detect_mime_type("notes", b"WEBVTTish is not a header\n") != MIME_VTT


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("notes.vtt", b"These are plain notes, not captions.\n", r"^malformed WebVTT file: "),
        ("call.srt", b"Just some words.\nNo cues at all.\n", r"^malformed SubRip file: "),
        ("empty-cues.vtt", b"WEBVTT\n\nNOTE nothing was said\n", r"^no extractable text$"),
    ],
)
def test_a_file_that_is_not_a_transcript_or_says_nothing_is_a_clear_parse_error(name, data, reason):
    with pytest.raises(ParseError, match=reason):
        parse_file(name, data)
