"""Leakage gate: no training sample may reproduce a test item's question or any one of its key options.

What an item gives away is its own wording: the question, and each key option on its own (a
sample that carries one key option's claim hands over part of the answer, whatever the other
keys). The knowledge the item tests is not its wording: the chunk it was built from and the
chain's KB nodes (steps, statements) are the source that training data is *meant* to teach, and
both sides share those words by design. So each part of an item is reduced to its own word
n-grams (within sentences), those not found in its source, and a sample leaks a part when it contains
`builder.leakage_threshold` or more of them. A verbatim copy of a key option contains all of
them; a sample that states the same fact in its own frame ("Once X, the next thing that happens
is that Y") contains few, however long X and Y are.

A key option that only restates a step ("The quillseed is sorted by weight.", the later and
member facets) has no own n-grams: on its own it forms no part, since stating the step is what
training is for. What such an item adds is its question's frame and the key read in it. So an item
with such a key gets two more kinds of part: the question frame (its last sentence with own
n-grams, at least n words: "Which ... later in the process than the moment when X?"), which the
whole-question part dilutes with the preamble every item of the chain shares; and, per bare key,
the frame and the key read as one claim ("... later than the moment when X Y"), the item's
relation between the anchor X and the key Y. A sample that copies the frame, or pairs X with Y in
the frame's words, leaks; one that states Y, or walks the process in order, does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pwd_agent.prompting import LETTERS

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"[.!?;]+(?:\s+|$)|\n+")
MIN_WORDS = 3  # a part shorter than this ("Yes.") says nothing a sample could be caught copying


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams within each sentence: a gram never spans a sentence end, so "what happens after
    X? Y." does not count as the claim "After X, Y." that it answers in two sentences."""
    grams = set()
    for sentence in _SENTENCE_END.split(text):
        tokens = words(sentence)
        grams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


@dataclass(frozen=True)
class GateItem:
    """One test item as the gate sees it: its question, its key options' texts, and its source text
    (the chunk and the chain's KB nodes), whose words are not the item's own."""

    item_id: int
    question: str
    keys: list[tuple[str, str]]  # (letter, text) of each key option
    source: str


@dataclass
class Leak:
    item_id: int
    part: str  # "question", "option C", "question frame" or "option C in the question's frame"
    overlap: float  # share of the part's own n-grams the sample contains


def key_options(options: list[str], answer: str) -> list[tuple[str, str]]:
    """(letter, text) of each key option."""
    return [(letter, options[LETTERS.index(letter)]) for letter in answer.split(",") if letter]


class LeakageGate:
    """Built once from every test item (dev and holdout); checks samples against each item's
    question and each key option on its own (a key that only restates a step: the question's frame,
    and the key read in it)."""

    def __init__(self, items: list[GateItem], n: int, threshold: float):
        self.n = n
        self.threshold = threshold
        # part: (item id, part name, gram size, the part's own n-grams)
        self.parts: list[tuple[int, str, int, set]] = []
        source_grams: dict[tuple[str, int], set] = {}  # a chain's items share one source: read it once per size

        def own(text: str, source: str, size: int) -> set:
            if (source, size) not in source_grams:
                source_grams[(source, size)] = ngrams(source, size)
            return ngrams(text, size) - source_grams[(source, size)]

        for item in items:
            texts = [("question", item.question)] + [(f"option {letter}", text) for letter, text in item.keys]
            bare = []  # key options that only restate the source (a step): no part of their own
            for name, text in texts:
                size = min(n, len(words(text)))  # a short option is one gram: the whole of it
                if size < MIN_WORDS:
                    continue
                grams = own(text, item.source, size)
                if grams:
                    self.parts.append((item.item_id, name, size, grams))
                elif name != "question":
                    bare.append((name, text))
            if not bare:
                continue
            # The question's frame: its last sentence of n or more words with own n-grams (the ask, not
            # the preamble the chain's items share, nor an anchor's tail cut off at a ';').
            frame = next((sentence.strip() for sentence in reversed(_SENTENCE_END.split(item.question))
                          if len(words(sentence)) >= n and own(sentence, item.source, n)), None)
            if frame is None:
                continue
            self.parts.append((item.item_id, "question frame", n, own(frame, item.source, n)))
            for name, text in bare:  # the key read in the frame: the item's relation, anchor to key
                self.parts.append((item.item_id, f"{name} in the question's frame", n,
                                   own(f"{frame} {text}", item.source, n)))
        self.index: dict[tuple[str, ...], list[int]] = {}
        for pos, (_, _, _, grams) in enumerate(self.parts):
            for gram in grams:
                self.index.setdefault(gram, []).append(pos)
        self.sizes = sorted({size for _, _, size, _ in self.parts})

    def check(self, sample_text: str) -> Leak | None:
        """The item part this sample reproduces most, when that reaches the threshold."""
        shared: dict[int, int] = {}
        for size in self.sizes:
            for gram in ngrams(sample_text, size):
                for pos in self.index.get(gram, ()):
                    shared[pos] = shared.get(pos, 0) + 1
        if not shared:
            return None
        pos, count = max(shared.items(), key=lambda kv: kv[1] / len(self.parts[kv[0]][3]))
        item_id, part, _, grams = self.parts[pos]
        overlap = count / len(grams)
        return Leak(item_id, part, overlap) if overlap >= self.threshold else None


def chain_source(chunk_text: str, chain, statements: list) -> str:
    """An item's source: the chunk its chain came from, the chain's fields and its statements (store
    rows or KB drafts alike)."""
    return "\n".join([
        chunk_text, chain.process_name, chain.domain, chain.summary,
        *chain.preconditions, *chain.negative_constraints, *chain.steps,
        *(f"{s.subject}\n{s.predicate}\n{s.object}" for s in statements),
    ])


def load_gate(session, n: int, threshold: float) -> LeakageGate:
    """The gate over every test item in the store, dev and holdout alike, each with its source."""
    from sqlmodel import select

    from pwd_agent.store import Chain, Chunk, Statement, TestItem

    # Every chain's statements and chunk text in one query each (not a query per chain); a statement's
    # order within its source does not matter: n-grams never span its lines.
    statements: dict[int, list] = {}
    for row in session.exec(select(Statement.chain_id, Statement.subject, Statement.predicate, Statement.object)):
        statements.setdefault(row.chain_id, []).append(row)
    sources = {chain.id: chain_source(text, chain, statements.get(chain.id, []))
               for chain, text in session.exec(select(Chain, Chunk.text).join(Chunk, Chunk.id == Chain.chunk_id))}
    items = [GateItem(i.id, i.question, key_options(i.options, i.answer), sources.get(i.chain_id, ""))
             for i in session.exec(select(TestItem)).all()]
    return LeakageGate(items, n, threshold)


def sample_text(draft) -> str:
    """What of a sample the gate reads: its prompt and its answer."""
    return f"{draft.prompt} {draft.answer}"


def gate_samples(gate: LeakageGate, drafts: list, origin: str, chain_id: int | None) -> tuple[list, list]:
    """(samples kept, LeakedSample rows for the dropped ones)."""
    from pwd_agent.store import LeakedSample

    kept, leaked = [], []
    for draft in drafts:
        leak = gate.check(sample_text(draft))
        if leak is None:
            kept.append(draft)
        else:
            leaked.append(LeakedSample(origin=origin, kind=draft.kind, prompt=draft.prompt, answer=draft.answer,
                                       chain_id=chain_id, item_id=leak.item_id, part=leak.part,
                                       overlap=round(leak.overlap, 4)))
    return kept, leaked
