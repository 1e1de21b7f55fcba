"""Writing systems that need their own handling: Chinese, Japanese and Korean write no spaces
between words and end sentences with full-width marks."""

from __future__ import annotations

# Han (with extension A and compatibility ideographs), Hiragana, Katakana, Hangul syllables.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
CJK_SENTENCE_ENDS = "。！？"
# Marks that end a sentence before a space: Latin, Arabic (؟ ۔), Devanagari (। ॥), Greek (; U+037E),
# Armenian (՞ ։) and Ethiopic (፧) ones. CJK's full-width marks end one without a space.
SENTENCE_MARKS = ".!?\u061f\u06d4\u0964\u0965\u037e\u055e\u0589\u1367"
