"""Probes: atomic unit tests on one KB node each, under the integration tests (the chain items).

A statement probe asks for the step that comes directly after one step (one L2 statement); a
concept probe asks for one concept's definition (one L1 node). Both are single-answer items built
in code from the KB, so they are exact whatever the agents' backend. When a chain item fails, the
probes of its nodes say where: a failing probe names the node that was not learned (concept
gap); all probes passing puts the fault in the composition (chain break).

Probes are scored, never trained on. They are not passed through the leakage gate: a probe tests
exactly the fact a training sample teaches, so sharing its words is the point.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from pwd_agent.schemas import KBChain, KBConcept, KBStatement
from pwd_agent.prompting import LETTERS


@dataclass
class ProbeDraft:
    target: str  # statement | concept
    node_id: int
    question: str
    options: list[str]
    answer: str


def _shuffled(key: str, distractors: list[str], seed: int, rng_key: str) -> tuple[list[str], str]:
    """Options with the key at a seeded position; the answer letter."""
    rng = random.Random(f"{seed}:probe:{rng_key}")
    options = [key, *distractors]
    rng.shuffle(options)
    return options, LETTERS[options.index(key)]


def _distinct(key: str, candidates: Iterable[str], n: int) -> list[str]:
    seen = {key.casefold()}
    out = []
    for c in candidates:
        if c and c.casefold() not in seen:
            seen.add(c.casefold())
            out.append(c)
        if len(out) == n:
            break
    return out


def _clause(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "."


def statement_probe(chain: KBChain, statement: KBStatement, statements: list[KBStatement],
                    foreign: list[str], seed: int) -> ProbeDraft | None:
    """'What is the very next event after X?' with the true next step, the step before X (reversed
    order), the step after next (a skipped step) and a step of another process."""
    by_position = {s.position: s for s in statements}
    before = by_position.get(statement.position - 1)
    after_next = by_position.get(statement.position + 1)
    candidates = [statement.subject,  # reversed: the step itself comes before, not after
                  before.subject if before else "",
                  after_next.object if after_next else "", *foreign]
    distractors = _distinct(statement.object, [c for c in candidates], 3)
    if len(distractors) < 2:
        return None
    options, answer = _shuffled(_clause(statement.object), [_clause(d) for d in distractors], seed, f"s{statement.id}")
    # Worded unlike every training template, so a pass shows the fact, not a memorised question.
    question = (f"Process: {chain.process_name.lower()} ({chain.domain.lower()}). "
                f"Event: {statement.subject.rstrip('.')}. What is the very next event?")
    return ProbeDraft("statement", statement.id, question, options, answer)


def concept_probe(domain: str, concept: KBConcept, others: list[KBConcept], seed: int,
                  linked: dict[int, list[KBConcept]] | None = None) -> ProbeDraft | None:
    """'Which of these defines T?' with T's definition and those of other concepts, the ones that
    share statements with T first (the concepts it is most easily confused with). With `linked`
    (concept_index of `others`, which must be in id order) the same options come without scoring
    every concept: a KB of thousands of chains would otherwise sort all its concepts per probe."""
    if linked is None:
        near = sorted(others, key=lambda c: (-len(set(c.statement_ids) & set(concept.statement_ids)), c.id))
    else:
        shared = Counter(c.id for s in set(concept.statement_ids) for c in linked.get(s, ()))
        first = sorted({c.id: c for s in concept.statement_ids for c in linked.get(s, ())}.values(),
                       key=lambda c: (-shared[c.id], c.id))
        near = itertools.chain(first, (c for c in others if c.id not in shared))  # then the rest, by id
    distractors = _distinct(concept.definition, (c.definition for c in near if c.id != concept.id), 3)
    if len(distractors) < 2:
        return None
    options, answer = _shuffled(_clause(concept.definition), [_clause(d) for d in distractors], seed, f"c{concept.id}")
    return ProbeDraft("concept", concept.id, f"Term from {domain.lower()}: '{concept.term}'. Pick its definition.",
                      options, answer)


def concept_index(concepts: list[KBConcept]) -> dict[int, list[KBConcept]]:
    """Statement id -> the concepts linked to it, in the order of `concepts` (for concept_probe)."""
    index: dict[int, list[KBConcept]] = {}
    for concept in concepts:
        for statement_id in dict.fromkeys(concept.statement_ids):
            index.setdefault(statement_id, []).append(concept)
    return index
