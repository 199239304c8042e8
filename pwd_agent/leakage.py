"""Leakage gate: no training sample may reproduce a test item (its question plus its key text).

A sample leaks an item when the share of the item's word n-grams (question + key options) that
the sample also contains reaches `tests.leakage_threshold`. Teaching the facts an item tests is
the point of the training data; copying the item is not, so the measure is containment of the
item in the sample: a sample that states one step pair of a chain shares a sliver of the item,
a sample that restates its question and keys shares most of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def item_text(question: str, options: list[str], answer: str) -> str:
    """What an item gives away: its question and the text of its keys."""
    keys = [options["ABCD".index(letter)] for letter in answer.split(",") if letter]
    return " ".join([question, *keys])


@dataclass
class Leak:
    item_id: int
    overlap: float


class LeakageGate:
    """Built once from every test item (dev and holdout); checks samples against all of them."""

    def __init__(self, items: list[tuple[int, str]], n: int, threshold: float):
        self.n = n
        self.threshold = threshold
        self.items = [(item_id, grams) for item_id, text in items if (grams := ngrams(text, n))]
        self.index: dict[tuple[str, ...], list[int]] = {}
        for pos, (_, grams) in enumerate(self.items):
            for gram in grams:
                self.index.setdefault(gram, []).append(pos)

    def check(self, sample_text: str) -> Leak | None:
        """The item this sample reproduces most, when that reaches the threshold."""
        shared: dict[int, int] = {}
        for gram in ngrams(sample_text, self.n):
            for pos in self.index.get(gram, ()):
                shared[pos] = shared.get(pos, 0) + 1
        if not shared:
            return None
        pos, count = max(shared.items(), key=lambda kv: kv[1] / len(self.items[kv[0]][1]))
        overlap = count / len(self.items[pos][1])
        return Leak(self.items[pos][0], overlap) if overlap >= self.threshold else None


def load_gate(session, n: int, threshold: float) -> LeakageGate:
    """The gate over every test item in the store, dev and holdout alike."""
    from sqlmodel import select

    from pwd_agent.store import TestItem

    items = session.exec(select(TestItem)).all()
    return LeakageGate([(i.id, item_text(i.question, i.options, i.answer)) for i in items], n, threshold)


def gate_samples(gate: LeakageGate, drafts: list, origin: str, chain_id: int | None) -> tuple[list, list]:
    """(samples kept, LeakedSample rows for the dropped ones)."""
    from pwd_agent.store import LeakedSample

    kept, leaked = [], []
    for draft in drafts:
        leak = gate.check(f"{draft.prompt} {draft.answer}")
        if leak is None:
            kept.append(draft)
        else:
            leaked.append(LeakedSample(origin=origin, kind=draft.kind, prompt=draft.prompt, answer=draft.answer,
                                       chain_id=chain_id, item_id=leak.item_id, overlap=round(leak.overlap, 4)))
    return kept, leaked
