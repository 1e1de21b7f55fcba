"""Writing systems that need their own handling: Chinese, Japanese and Korean write no spaces
between words and end sentences with full-width marks."""

from __future__ import annotations

# Han (with extension A and compatibility ideographs), Hiragana, Katakana, Hangul syllables.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
CJK_SENTENCE_ENDS = "。！？"
