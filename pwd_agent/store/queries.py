"""Reads shared by nodes and reports: counts, KB views, round tables."""

from __future__ import annotations

import heapq
from typing import NamedTuple

from sqlalchemy import Integer, cast
from sqlmodel import Session, func, select

from pwd_agent.schemas import KBChain, KBConcept, KBStatement
from pwd_agent.phrasing import step_phrase
from pwd_agent.store.models import (
    Chain, Concept, ConceptStatement, ItemResult, LLMCall, Round, RoundSample, Sample, Statement, TestItem,
)


def count_rows(session: Session, model, *where) -> int:
    query = select(func.count()).select_from(model)
    for clause in where:
        query = query.where(clause)
    return session.exec(query).one()


def kb_chain(row: Chain) -> KBChain:
    return KBChain(
        id=row.id, process_name=row.process_name, domain=row.domain, summary=row.summary,
        preconditions=row.preconditions, negative_constraints=row.negative_constraints, steps=row.steps,
    )


def kb_statements(session: Session, chain_id: int) -> list[KBStatement]:
    rows = session.exec(select(Statement).where(Statement.chain_id == chain_id).order_by(Statement.position)).all()
    return [
        KBStatement(id=r.id, chain_id=r.chain_id, position=r.position, subject=r.subject,
                    predicate=r.predicate, object=r.object, source_quote=r.source_quote)
        for r in rows
    ]


def kb_concepts(session: Session, statement_ids: list[int]) -> list[KBConcept]:
    """Concepts linked to any of the statements, each with all its statement links."""
    if not statement_ids:
        return []
    # One query, a row per (concept, link) of every concept linked to the statements (a query per
    # concept was most of a chain's reads in build_tests and synthesize).
    linked = select(ConceptStatement.concept_id).where(ConceptStatement.statement_id.in_(statement_ids))
    rows = session.exec(select(Concept.id, Concept.term, Concept.type, Concept.definition,
                               ConceptStatement.statement_id)
                        .join(ConceptStatement, ConceptStatement.concept_id == Concept.id)
                        .where(Concept.id.in_(linked)).order_by(Concept.id)).all()
    concepts: dict[int, KBConcept] = {}
    for cid, term, type_, definition, statement_id in rows:
        if cid not in concepts:
            concepts[cid] = KBConcept(id=cid, term=term, type=type_, definition=definition, statement_ids=[])
        concepts[cid].statement_ids.append(statement_id)
    for concept in concepts.values():
        concept.statement_ids.sort()
    return list(concepts.values())


def foreign_steps(session: Session, chain_id: int, limit: int = 12,
                  chains: list[tuple[int, list[str]]] | None = None) -> list[str]:
    """Step clauses of other chains (for swapped-object distractors), deterministic order. A stage
    that asks for every chain's passes `chains` (all_chain_steps, read once): reading every chain
    per chain made the stage quadratic in the KB's size."""
    if chains is None:
        chains = all_chain_steps(session)
    others = [(cid, steps) for cid, steps in chains if cid != chain_id]
    picked = heapq.nsmallest(limit, others, key=lambda c: (c[0] * 2654435761 + chain_id) % 1000003)
    return [step_phrase(steps[(chain_id + cid) % len(steps)]) for cid, steps in picked]


def all_chain_steps(session: Session) -> list[tuple[int, list[str]]]:
    """(id, steps) of every chain, in id order (for foreign_steps)."""
    return [(chain.id, chain.steps) for chain in session.exec(select(Chain).order_by(Chain.id)).all()]


def round_accuracy(session: Session, round_id: int, split: str) -> float | None:
    rows = session.exec(
        select(ItemResult.passed).join(TestItem, TestItem.id == ItemResult.item_id)
        .where(ItemResult.round_id == round_id, TestItem.split == split)
    ).all()
    return sum(rows) / len(rows) if rows else None


def round_mass(session: Session, round_id: int, split: str) -> float | None:
    """Mean probability mass on the keys (options scorer), None when the round has none."""
    rows = [m for m in session.exec(
        select(ItemResult.mass).join(TestItem, TestItem.id == ItemResult.item_id)
        .where(ItemResult.round_id == round_id, TestItem.split == split)
    ).all() if m is not None]
    return sum(rows) / len(rows) if rows else None


def round_scorer(session: Session, round_id: int) -> str | None:
    """The scorer(s) of a round's stored predictions ('letters', or 'letters+options' if it changed mid-round)."""
    names = sorted(set(session.exec(select(ItemResult.scorer).where(ItemResult.round_id == round_id)).all()))
    return "+".join(names) or None


def round_passes(session: Session, round_id: int, split: str) -> dict[int, bool]:
    """item id -> passed, for one round and split."""
    rows = session.exec(
        select(ItemResult.item_id, ItemResult.passed).join(TestItem, TestItem.id == ItemResult.item_id)
        .where(ItemResult.round_id == round_id, TestItem.split == split)
    ).all()
    return dict(rows)


def round_samples(session: Session, round_id: int) -> list[Sample]:
    """The samples a round trains on (v1, patch and replay members), in id order."""
    return list(session.exec(
        select(Sample).join(RoundSample, RoundSample.sample_id == Sample.id)
        .where(RoundSample.round_id == round_id).order_by(Sample.id)
    ).all())


class AgentSpend(NamedTuple):
    agent: str
    calls: int
    cached: int
    failed: int
    tokens_in: int
    tokens_out: int
    cost: float

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


def ledger_by_agent(session: Session) -> list[AgentSpend]:
    """Per agent, from the LLMCall ledger: calls, cache hits, failures, tokens in, tokens out, cost
    (the one aggregation behind `status`, the report, progress lines and tracking)."""
    rows = session.exec(
        select(LLMCall.agent, func.count(), func.sum(cast(LLMCall.cache_hit, Integer)), func.sum(LLMCall.input_tokens),
               func.sum(LLMCall.output_tokens), func.sum(LLMCall.cost), func.sum(cast(LLMCall.ok, Integer)))
        .group_by(LLMCall.agent).order_by(LLMCall.agent)
    ).all()
    return [AgentSpend(agent, calls, cached or 0, calls - (ok or 0), tokens_in or 0, tokens_out or 0, cost or 0.0)
            for agent, calls, cached, tokens_in, tokens_out, cost, ok in rows]


def rounds(session: Session) -> list[Round]:
    return list(session.exec(select(Round).order_by(Round.id)).all())
