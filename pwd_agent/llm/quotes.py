"""Anchor an LLM's source quote to the exact span of the chunk it came from.

LLMs copy text with small surface changes: curly quotes for straight ones, a dash for a hyphen,
a line break turned into a space, a capital after they start mid-sentence, a final full stop
dropped or added. Those are the same words at the same place, so the quote is matched on a
normalised form and the stored quote is the chunk's own text. A changed word is still a miss.
"""

from __future__ import annotations

_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-",
                       "\u00a0": " "})
_EDGE = " \t\n\"'.,;:…"


def _normalise(text: str) -> tuple[str, list[int]]:
    """Folded, lower-cased text with runs of whitespace collapsed, and for each of its characters
    the index of the character in `text` it came from."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text.translate(_FOLD)):
        if ch.isspace():
            if out and out[-1] == " ":
                continue
            ch = " "
        out.append(ch.lower())
        origin.append(i)
    return "".join(out), origin


def anchor_quote(quote: str, text: str, min_chars: int = 12) -> str | None:
    """The span of `text` that `quote` copies (up to case, quotes, dashes, whitespace and edge
    punctuation), or None when it is not there or too short to prove anything."""
    if quote in text and len(quote.strip()) >= min_chars:
        return quote
    needle, _ = _normalise(quote.translate(_FOLD).strip(_EDGE))
    needle = needle.strip()
    if len(needle) < min_chars:
        return None
    hay, origin = _normalise(text)
    at = hay.find(needle)
    if at < 0:
        return None
    return text[origin[at] : origin[at + len(needle) - 1] + 1]
