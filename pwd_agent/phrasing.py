"""How a step sentence becomes a clause: shared by the offline agents, the store's KB queries and
the recipes (a leaf module, so none of them imports another for it)."""

from __future__ import annotations

import re

# Sequence cues that open a step sentence ("First,", "Then", "As a result,").
CUE = re.compile(
    r"^(first|second|third|then|next|after that|afterwards|after this|as a result|this causes|finally|"
    r"eventually|subsequently|once|meanwhile|later|in turn|at the same time)\b,?\s*",
    re.I,
)
BOLD = re.compile(r"\*\*(.+?)\*\*")  # Markdown bold: the terms a corpus defines


def clean(text: str) -> str:
    """Text without Markdown emphasis, whitespace collapsed."""
    return re.sub(r"\s+", " ", BOLD.sub(r"\1", text)).strip()


def step_phrase(step: str) -> str:
    """A step sentence as a clause: cue word and final period removed, first letter lowered."""
    phrase = CUE.sub("", clean(step)).rstrip(".!? ")
    if phrase[:1].isupper() and not phrase[1:2].isupper():
        phrase = phrase[0].lower() + phrase[1:]
    return phrase


def sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]
