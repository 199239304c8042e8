"""extract: each chunk -> L3 chain, L2 statements, L1 concepts (deduplicated), one transaction per chunk."""

from __future__ import annotations

import hashlib
import json

from langgraph.runtime import Runtime
from sqlmodel import Session, select

from pwd_agent.agents.runner import make_backend, map_units, workers_for
from pwd_agent.agents.extractor import Extraction, extract_chunk
from pwd_agent.events import Progress, emit
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import (
    Chain, Chunk, Concept, ConceptStatement, Document, Statement, WorkUnit, mark_done, session_scope, units_to_do,
)
from pwd_agent.store.queries import count_rows


def extract(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Per chunk, top-down: the L3 chain, its L2 statements (quotes checked) and L1 concepts; unfinished chunks only."""
    ctx = runtime.context
    backend = make_backend(ctx, bulk=True)
    with session_scope(ctx.db_url) as session:
        chunks, done = units_to_do(session, "extract", select(Chunk, Document.title)
                                   .join(Document, Document.id == Chunk.document_id).order_by(Chunk.id),
                                   key=lambda row: row[0].id)
        todo = [(c.id, c.text, c.heading, title) for c, title in chunks]
    emit(ctx.db_url, "extract", f"{len(todo)} chunks to extract, {done} already done")
    progress = Progress(ctx.db_url, "extract", "chunks", len(todo) + done, done)
    work = lambda unit: extract_chunk(backend, unit[1], unit[2], unit[3])  # noqa: E731
    for (chunk_id, _, heading, title), result in map_units(work, todo, workers_for(backend, ctx.config)):
        with session_scope(ctx.db_url) as session:  # the chunk's KB nodes, its ledger rows and its marker
            store_extraction(session, chunk_id, result)
            session.add_all(result.calls)
            mark_done(session, "extract", chunk_id, error=result.failure)
        if result.failure:  # recorded, not retried on resume; the run goes on
            emit(ctx.db_url, "extract", f"chunk {chunk_id} ({title} / {heading[:80]}) failed: {result.failure}",
                 level="warning", chunk_id=chunk_id, failure=result.failure)
        progress.advance()
    with session_scope(ctx.db_url) as session:
        counts = {
            "chains": count_rows(session, Chain),
            "statements": count_rows(session, Statement),
            "concepts": count_rows(session, Concept),
        }
        failed = count_rows(session, WorkUnit, WorkUnit.stage == "extract", WorkUnit.error.is_not(None))
    emit(ctx.db_url, "extract", "KB: {chains} chains, {statements} statements, {concepts} concepts".format(**counts)
         + (f"; {failed} chunks failed (pwd-agent logs RUN --level warning)" if failed else ""),
         failed_units=failed, **counts)
    return {"counts": {**state.get("counts", {}), **counts}}


def store_extraction(session: Session, chunk_id: int, result: Extraction) -> None:
    """Add the chunk's KB nodes; identical chains, statements and concepts are merged, not repeated."""
    if result.chain is None:
        return
    steps_hash = hashlib.sha256(json.dumps([s.lower() for s in result.chain.steps]).encode()).hexdigest()
    if session.exec(select(Chain).where(Chain.steps_hash == steps_hash)).first():
        return
    chain = Chain(chunk_id=chunk_id, steps_hash=steps_hash, **result.chain.model_dump())
    session.add(chain)
    session.flush()
    statement_ids: dict[int, int] = {}
    for index, draft in enumerate(result.statements):
        key = "|".join(x.casefold().strip() for x in (draft.subject, draft.predicate, draft.object))
        existing = session.exec(select(Statement).where(Statement.spo_key == key)).first()
        if existing is None:
            existing = Statement(chain_id=chain.id, spo_key=key, **draft.model_dump())
            session.add(existing)
            session.flush()
        statement_ids[index] = existing.id
    for draft in result.concepts:
        concept = session.exec(select(Concept).where(Concept.term == draft.term)).first()
        if concept is None:
            concept = Concept(term=draft.term, type=draft.type, definition=draft.definition)
            session.add(concept)
            session.flush()
        for index in draft.statements:
            if index in statement_ids and not session.get(ConceptStatement, (concept.id, statement_ids[index])):
                session.add(ConceptStatement(concept_id=concept.id, statement_id=statement_ids[index]))
