"""diagnose: trace each failed dev item to a concept gap or a reasoning-chain break (holdout never seen)."""

from __future__ import annotations

from collections import Counter

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.agents import call_agent, make_backend
from pwd_agent.agents.schemas import TestItemDraft
from pwd_agent.events import emit
from pwd_agent.runs import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import ConceptStatement, Diagnosis, ItemResult, TestItem, session_scope
from pwd_agent.store.queries import kb_statements


def diagnose(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    round_id = state["round"]
    backend = make_backend(ctx)
    with session_scope(ctx.db_url) as session:
        failed = session.exec(
            select(TestItem, ItemResult).join(ItemResult, ItemResult.item_id == TestItem.id)
            .where(ItemResult.round_id == round_id, TestItem.split == "dev", ItemResult.passed == False)  # noqa: E712
            .order_by(TestItem.id)
        ).all()
        known = set(session.exec(select(Diagnosis.item_id).where(Diagnosis.round_id == round_id)).all())
        for item, result in failed:
            if item.id in known:
                continue
            draft = call_agent(session, backend, "debugger", "judge_failure", backend.judge_failure,
                               TestItemDraft.model_validate(item, from_attributes=True), result.predicted,
                               kb_statements(session, item.chain_id))
            concept_ids = sorted(set(session.exec(
                select(ConceptStatement.concept_id).where(ConceptStatement.statement_id.in_(draft.statement_ids))
            ).all()))
            session.add(Diagnosis(round_id=round_id, item_id=item.id, kind=draft.kind, statement_ids=draft.statement_ids,
                                  concept_ids=concept_ids, evidence=draft.evidence, confidence=draft.confidence))
        kinds = Counter(d.kind for d in session.exec(select(Diagnosis).where(Diagnosis.round_id == round_id)).all())
    emit(ctx.db_url, "diagnose", f"round {round_id}: {len(failed)} failed dev items: "
         + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())), **kinds)
    return {}
