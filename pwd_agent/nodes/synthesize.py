"""synthesize: V1 training data (source code) from L1/L2, one transaction per chain."""

from __future__ import annotations

from collections import Counter
from typing import Iterator

from langgraph.runtime import Runtime
from sqlmodel import insert, select

from pwd_agent.agents.runner import make_backend, map_units, record_failures, run_unit, unit_failure, workers_for
from pwd_agent.events import Progress, announce, emit
from pwd_agent.gates import gate
from pwd_agent.leakage import gate_samples, load_gate
from pwd_agent.recipes import paraphrase_samples, text_passages
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.exposures import v1_taught
from pwd_agent.store import (
    Chain, LeakedSample, Probe, Sample, Statement, TestItem, mark_done, session_scope, units_to_do,
)
from pwd_agent.store.queries import all_chain_steps, count_rows, foreign_steps, kb_chain, kb_concepts, kb_statements


def synthesize(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """V1 training data from the statements and concepts V1 teaches (builder.v1_budget), through the leakage gate."""
    ctx = runtime.context
    cfg = ctx.config.builder
    gate(ctx, "after_tests", lambda s: {"items": count_rows(s, TestItem), "probes": count_rows(s, Probe)})
    backend = make_backend(ctx, bulk=True)
    with session_scope(ctx.db_url) as session:
        chains, done = units_to_do(session, "synthesize", select(Chain).order_by(Chain.id))
        todo = [c.id for c in chains]
    progress = Progress(ctx.db_url, "synthesize", "chains", len(todo) + done, done)
    with session_scope(ctx.db_url) as session:
        taught = v1_taught(session, cfg.v1_budget, cfg.seed)
        leak_gate = load_gate(session, cfg.leakage_ngram, cfg.leakage_threshold)
        n_statements = count_rows(session, Statement)
    if taught is not None and not done:
        emit(ctx.db_url, "synthesize", f"V1 budget: {len(taught)} of {n_statements} statements taught "
             f"(builder.v1_budget {cfg.v1_budget}); the rest are left for the Debugger to find",
             taught=len(taught), statements=n_statements)

    work = lambda unit: v1_drafts(backend, unit, cfg, taught)  # noqa: E731
    units = plan_units(ctx.db_url, todo, cfg.concept_samples, taught)
    for (chain, *_), (drafts, calls) in map_units(work, units, workers_for(backend, ctx.config)):
        kept, leaked = gate_samples(leak_gate, drafts, "v1", chain.id)
        # The chain's samples, ledger rows, marker and events in one transaction; the events' log lines
        # (and the resume tests' kill point) follow its commit.
        with session_scope(ctx.db_url) as session:
            if kept:  # one executemany, not an ORM object per sample (the stage's largest write)
                session.execute(insert(Sample), [dict(origin="v1", chain_id=chain.id, **draft.model_dump())
                                                 for draft in kept])
            session.add_all(leaked)
            session.add_all(calls)
            failure = unit_failure(calls)
            mark_done(session, "synthesize", chain.id, error=failure)
            events = record_failures(session, "synthesize", f"chain {chain.id} ({chain.process_name[:60]})",
                                     [failure] if failure else [])
            events.append(progress.record(session))
        for event in events:
            announce(event)
    with session_scope(ctx.db_url) as session:
        kinds = Counter(session.exec(select(Sample.kind).where(Sample.origin == "v1")).all())
        dropped = count_rows(session, LeakedSample, LeakedSample.origin == "v1")
    n = sum(kinds.values())
    mix = ", ".join(f"{kind} {count / max(n, 1):.0%}" for kind, count in sorted(kinds.items()))
    emit(ctx.db_url, "synthesize", f"{n} V1 training samples ({mix}; {dropped} dropped by the leakage gate)",
         samples=n, leaked=dropped, kinds=dict(sorted(kinds.items())))
    return {"counts": {**state.get("counts", {}), "v1_samples": n}}


def v1_drafts(backend, unit: tuple, cfg, taught: set[int] | None = None) -> tuple[list, list]:
    """One chain's V1 drafts before the leakage gate: the backend's samples (a failed unit gives
    none) plus the recipe samples, and the ledger rows of the calls; with `taught` (a V1 budget)
    only those statements are taught. bench/injection.py writes its taught half's data with this too."""
    chain, statements, concepts, foreign = unit
    mine = statements if taught is None else [st for st in statements if st.id in taught]
    if not mine:
        return [], []
    drafts, calls = run_unit(backend, "builder", "v1_samples", backend.write_samples, chain, mine, concepts,
                             foreign, cfg.samples_per_statement, cfg.qa_share, cfg.choice_share,
                             cfg.multi_select_share, empty=[])
    return (drafts or []) + recipe_samples(chain, statements, cfg, taught), calls


def recipe_samples(chain, statements, cfg, taught: set[int] | None = None) -> list:
    """The knowledge-injection part of V1 (builder.paraphrases, builder.text_passages), written from
    the KB by code for every backend; with `taught`, only about those statements."""
    mine = statements if taught is None else [st for st in statements if st.id in taught]
    return paraphrase_samples(chain, mine, cfg.paraphrases) + text_passages(chain, statements, cfg.text_passages,
                                                                            taught)


def plan_units(db_url: str, chain_ids: list[int], concept_samples: bool,
               taught: set[int] | None = None) -> Iterator[tuple]:
    """Each chain's inputs, read in order as the stage asks for them (a short session per chain, so a
    large KB is never held whole); a concept shared by several chains is taught (one definition
    sample) with the first of them only; under a V1 budget (`taught`), only concepts linked to a
    taught statement."""
    with session_scope(db_url) as session:
        rows = session.exec(select(Sample.concept_ids).where(Sample.origin == "v1", Sample.kind == "concept")).all()
        chains = all_chain_steps(session)
    defined = {cid for ids in rows for cid in ids}
    for chain_id in chain_ids:
        with session_scope(db_url) as session:
            statements = kb_statements(session, chain_id)
            concepts = kb_concepts(session, [s.id for s in statements]) if concept_samples else []
            # Under a budget, only concepts linked to a statement this chain teaches (a concept shared
            # with another chain waits for the chain that teaches one of its statements).
            mine = {st.id for st in statements} & taught if taught is not None else None
            concepts = [c for c in concepts if c.id not in defined and (mine is None or set(c.statement_ids) & mine)]
            defined.update(c.id for c in concepts)
            unit = (kb_chain(session.get(Chain, chain_id)), statements, concepts,
                    foreign_steps(session, chain_id, chains=chains))
        yield unit
