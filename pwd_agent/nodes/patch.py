"""patch: write samples grounded in each diagnosis' KB nodes and quotes; they train in the next round."""

from __future__ import annotations

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.agents.runner import make_backend, map_units, run_unit, unit_failure, warn_failures, workers_for
from pwd_agent.agents.schemas import DiagnosisDraft
from pwd_agent.events import Progress, emit
from pwd_agent.gates import gate
from pwd_agent.leakage import gate_samples, load_gate
from pwd_agent.recipes import paraphrase_samples
from pwd_agent.runs import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import Chain, Diagnosis, Patch, Sample, TestItem, session_scope
from pwd_agent.store.queries import count_rows, foreign_steps, kb_chain, kb_concepts, kb_statements


def patch(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    round_id = state["round"]
    backend = make_backend(ctx)
    n_samples = ctx.config.builder.patch_samples_per_failure
    with session_scope(ctx.db_url) as session:
        patched = set(session.exec(select(Patch.diagnosis_id)).all())
        diagnoses = session.exec(select(Diagnosis).where(Diagnosis.round_id == round_id).order_by(Diagnosis.id)).all()
        # item_suspect is flagged for review, not patched: a faulty item must not shape the data.
        patchable = [d for d in diagnoses if d.kind != "item_suspect"]
        units = [plan_unit(session, d) for d in patchable if d.id not in patched]
        leak_gate = load_gate(session, ctx.config.builder.leakage_ngram, ctx.config.builder.leakage_threshold)
    progress = Progress(ctx.db_url, "patch", "diagnoses", len(patchable), already=len(patchable) - len(units))

    paraphrases = ctx.config.builder.paraphrases

    def work(unit):
        diagnosis_id, chain, statements, concepts, foreign, draft = unit
        drafts, calls = run_unit(backend, "debugger", f"patch_{draft.kind}", backend.write_patch, draft, chain,
                                 statements, concepts, foreign, n_samples, f"{round_id}:{diagnosis_id}", empty=[])
        drafts = drafts or []
        located = [st for st in statements if st.id in draft.statement_ids] or statements
        # The injection recipe on the located nodes, further along the wordings than V1 went.
        return drafts + paraphrase_samples(chain, located, paraphrases, offset=paraphrases), calls

    written = dropped = 0
    for (diagnosis_id, chain, *_), (drafts, calls) in map_units(work, units, workers_for(backend, ctx.config)):
        kept, leaked = gate_samples(leak_gate, drafts, "patch", chain.id)
        with session_scope(ctx.db_url) as session:  # one patch, its samples and its ledger rows together
            row = Patch(diagnosis_id=diagnosis_id, target_round=round_id + 1, n_samples=len(kept))
            session.add(row)
            session.flush()
            session.add_all(Sample(origin="patch", chain_id=chain.id, patch_id=row.id, **d.model_dump()) for d in kept)
            session.add_all(leaked)
            session.add_all(calls)
        failure = unit_failure(calls)
        warn_failures(ctx, "patch", f"patch for diagnosis {diagnosis_id}", [failure] if failure else [])
        written += len(kept)
        dropped += len(leaked)
        progress.advance()  # after the commit: a kill here leaves this patch stored whole
    emit(ctx.db_url, "patch", f"round {round_id}: {written} patch samples for {len(units)} diagnoses "
         f"({dropped} dropped by the leakage gate), training round {round_id + 1}", samples=written, leaked=dropped)
    gate(ctx, "on_patch", lambda s: {"round": round_id,
                                     "patches": count_rows(s, Patch, Patch.target_round == round_id + 1)})
    return {"round": round_id + 1}


def plan_unit(session, diagnosis: Diagnosis) -> tuple:
    """What the patch writer sees: the failed item's chain, its statements, concepts and quotes
    (never the item's own text)."""
    chain_id = session.get(TestItem, diagnosis.item_id).chain_id
    statements = kb_statements(session, chain_id)
    return (diagnosis.id, kb_chain(session.get(Chain, chain_id)), statements,
            kb_concepts(session, [s.id for s in statements]), foreign_steps(session, chain_id),
            DiagnosisDraft.model_validate(diagnosis, from_attributes=True))
