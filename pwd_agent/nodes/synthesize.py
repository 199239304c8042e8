"""synthesize: V1 training data (source code) from L1/L2, one transaction per chain."""

from __future__ import annotations

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.agents import call_agent, make_backend
from pwd_agent.events import Progress, emit
from pwd_agent.runs import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import Chain, Sample, done_keys, mark_done, session_scope
from pwd_agent.store.queries import count_rows, foreign_steps, kb_chain, kb_concepts, kb_statements


def synthesize(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    cfg = ctx.config.builder
    backend = make_backend(ctx)
    with session_scope(ctx.db_url) as session:
        finished = done_keys(session, "synthesize")
        todo = [c.id for c in session.exec(select(Chain).order_by(Chain.id)).all() if str(c.id) not in finished]
    progress = Progress(ctx.db_url, "synthesize", "chains", len(todo) + len(finished), len(finished))
    taught_concepts: set[int] = set()
    for chain_id in todo:
        with session_scope(ctx.db_url) as session:
            statements = kb_statements(session, chain_id)
            concepts = [c for c in kb_concepts(session, [s.id for s in statements]) if cfg.concept_samples]
            concepts = [c for c in concepts if c.id not in taught_concepts and not _concept_taught(session, c.id)]
            taught_concepts.update(c.id for c in concepts)
            drafts = call_agent(
                session, backend, "builder", "v1_samples", backend.write_samples,
                kb_chain(session.get(Chain, chain_id)), statements, concepts, foreign_steps(session, chain_id),
                cfg.samples_per_statement, cfg.qa_share, cfg.choice_share, cfg.multi_select_share,
            )
            for draft in drafts:
                session.add(Sample(origin="v1", chain_id=chain_id, **draft.model_dump()))
            mark_done(session, "synthesize", chain_id)
        progress.advance()
    with session_scope(ctx.db_url) as session:
        n = count_rows(session, Sample, Sample.origin == "v1")
    emit(ctx.db_url, "synthesize", f"{n} V1 training samples", samples=n)
    return {"counts": {**state.get("counts", {}), "v1_samples": n}}


def _concept_taught(session, concept_id: int) -> bool:
    """A concept shared by several chains gets one definition sample, not one per chain."""
    rows = session.exec(select(Sample.concept_ids).where(Sample.origin == "v1", Sample.kind == "concept")).all()
    return any(concept_id in ids for ids in rows)
