"""What V1 teaches on a budget, and the exposure ledger: how often each KB node was trained on.

A small student learns a fact only past a threshold of varied exposures (EVIDENCE.md: ~18 for a
simple fact, bench/injection.py: ~55 for the step order), so "was it taught" is a count, not a
yes/no. The ledger counts, per node (statement, concept, chain), the samples of a round's training
set that carry it times the round's epochs (under early stopping, those of the weights kept), by
sample kind, summed along the round's lineage: a round trained from the base counts its own set;
one that continued from the previous round's adapter (train.repair_from=previous) adds that
round's ledger. It is read from the stored training
sets (RoundSample, Sample, Round.epochs, Round.parent_round), so it needs no table of its own and
cannot drift from what was trained. The Debugger uses it to tell a node never taught from one
taught but not learned; `pwd-agent coverage` and `blame` show it.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

from sqlmodel import Session, select

from pwd_agent.store.models import Round, RoundSample, Sample, Statement

Node = tuple[str, int]  # ("statement" | "concept" | "chain", id)


def budget_rank(seed: int, subject: str, predicate: str, obj: str) -> str:
    """The seeded sort key of a statement for the V1 budget: its content, not its id, so the same
    KB gets the same taught set whatever order it was stored in."""
    text = "|".join(x.casefold().strip() for x in (subject, predicate, obj))
    return hashlib.sha256(f"{seed}:v1-budget:{text}".encode()).hexdigest()


def v1_taught(session: Session, share: float | None, seed: int) -> set[int] | None:
    """The statement ids V1 teaches under `builder.v1_budget` (None: no budget, every statement):
    the first ceil(share x N) statements of the seeded ranking, at least one."""
    if share is None:
        return None
    rows = session.exec(select(Statement)).all()
    ranked = sorted(rows, key=lambda st: budget_rank(seed, st.subject, st.predicate, st.object))
    return {st.id for st in ranked[: max(1, math.ceil(share * len(rows)))]}


def round_ledger(session: Session, round_id: int, default_epochs: float = 1.0) -> dict[Node, dict[str, float]]:
    """node -> {sample kind: exposures} for the weights of round `round_id` (its lineage included).
    A chain is exposed by a sample that carries two or more of its statements (a walk, a passage).
    A round stored before rounds recorded their epochs counts `default_epochs` (train.epochs)."""
    ledger: dict[Node, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    seen: set[int] = set()
    rid: int | None = round_id
    while rid is not None and rid not in seen and rid > 0:
        seen.add(rid)
        row = session.get(Round, rid)
        if row is None:
            break
        _add_round(session, ledger, rid, row.epochs if row.epochs is not None else default_epochs)
        rid = row.parent_round
    return {node: dict(kinds) for node, kinds in ledger.items()}


def _add_round(session: Session, ledger, round_id: int, epochs: float) -> None:
    samples = session.exec(select(Sample).join(RoundSample, RoundSample.sample_id == Sample.id)
                           .where(RoundSample.round_id == round_id)).all()
    chain_of = dict(session.exec(select(Statement.id, Statement.chain_id)).all())
    for x in samples:
        # A definition sample names its concept's statements as context; it teaches the concept, not
        # the order of the steps, so it exposes no statement.
        for sid in ([] if x.kind == "concept" else x.statement_ids):
            ledger[("statement", sid)][x.kind] += epochs
        for cid in x.concept_ids:
            ledger[("concept", cid)][x.kind] += epochs
        chains = {chain_of.get(sid) for sid in x.statement_ids}
        if x.kind != "concept" and len(x.statement_ids) >= 2 and len(chains) == 1 and None not in chains:
            ledger[("chain", chains.pop())][x.kind] += epochs


def total(ledger: dict[Node, dict[str, float]], node: Node) -> float:
    """All exposures of one node, whatever the kind."""
    return sum(ledger.get(node, {}).values())
