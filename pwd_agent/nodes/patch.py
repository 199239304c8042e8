"""patch: write samples grounded in each diagnosis' KB nodes and quotes; they train in the next round."""

from __future__ import annotations

import math

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.agents.runner import make_backend, map_units, run_unit, unit_failure, warn_failures, workers_for
from pwd_agent.schemas import DiagnosisDraft
from pwd_agent.events import Progress, emit
from pwd_agent.gates import gate
from pwd_agent.leakage import gate_samples, load_gate
from pwd_agent.recipes import (
    CONCEPT_WORDINGS, PATCH_WORDINGS, chain_dose, concept_dose, dose_samples, paraphrase_samples,
)
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import Chain, Diagnosis, Patch, Sample, TestItem, session_scope
from pwd_agent.store.queries import count_rows, foreign_steps, kb_chain, kb_concepts, kb_statements


def patch(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Write the located nodes' patches (dosed, new wordings, no repeats) for the next round, through the gate."""
    ctx = runtime.context
    round_id = state["round"]
    backend = make_backend(ctx)
    n_samples = ctx.config.builder.patch_samples_per_failure
    with session_scope(ctx.db_url) as session:
        patched = set(session.exec(select(Patch.diagnosis_id)).all())
        diagnoses = session.exec(select(Diagnosis).where(Diagnosis.round_id == round_id).order_by(Diagnosis.id)).all()
        # item_suspect is flagged for review, not patched: a faulty item must not shape the data.
        patchable = [d for d in diagnoses if d.kind != "item_suspect"]
        # A node located by several diagnoses is patched once, by the first of them (claimed over every
        # diagnosis of the round, so a resumed node claims as the first attempt did).
        units = [u for u in claim_nodes([plan_unit(session, d) for d in patchable]) if u[0] not in patched]
        seen = {(x.prompt, x.answer) for x in session.exec(select(Sample)).all()}
        stored = frozenset(seen)  # what the doses pass over: read once, before any unit runs
        leak_gate = load_gate(session, ctx.config.builder.leakage_ngram, ctx.config.builder.leakage_threshold)
    progress = Progress(ctx.db_url, "patch", "diagnoses", len(patchable), already=len(patchable) - len(units))

    builder, epochs = ctx.config.builder, ctx.config.train.epochs
    if units and (short := dose_shortfall(builder, epochs)):
        emit(ctx.db_url, "patch", short, "warning")

    def work(unit):
        diagnosis_id, chain, statements, concepts, foreign, draft = unit
        if not (draft.statement_ids or draft.concept_ids):  # every node taken by an earlier diagnosis
            return [], []
        drafts, calls = run_unit(backend, "debugger", f"patch_{draft.kind}", backend.write_patch, draft, chain,
                                 statements, concepts, foreign, n_samples, f"{round_id}:{diagnosis_id}", empty=[])
        return (drafts or []) + dose(chain, statements, concepts, draft, builder, epochs, stored), calls

    written = dropped = repeats = 0
    for (diagnosis_id, chain, *_), (drafts, calls) in map_units(work, units, workers_for(backend, ctx.config)):
        drafts, n_repeat = unseen(drafts, seen)
        repeats += n_repeat
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
         f"({dropped} dropped by the leakage gate, {repeats} repeats of stored samples dropped), "
         f"training round {round_id + 1}", samples=written, leaked=dropped, repeats=repeats)
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


def claim_nodes(units: list[tuple]) -> list[tuple]:
    """Each located statement and concept to the first diagnosis (by id) that names it: a later
    diagnosis keeps only nodes no earlier one took, so no node is dosed twice in a round."""
    statements: set[int] = set()
    concepts: set[int] = set()
    out = []
    for unit in units:
        draft = unit[-1]
        mine = draft.model_copy(update={"statement_ids": [i for i in draft.statement_ids if i not in statements],
                                        "concept_ids": [i for i in draft.concept_ids if i not in concepts]})
        statements.update(draft.statement_ids)
        concepts.update(draft.concept_ids)
        out.append((*unit[:-1], mine))
    return out


def unseen(drafts: list, seen: set[tuple[str, str]]) -> tuple[list, int]:
    """The drafts whose (prompt, answer) no stored or earlier draft has; `seen` grows with them."""
    out = []
    for d in drafts:
        if (d.prompt, d.answer) not in seen:
            seen.add((d.prompt, d.answer))
            out.append(d)
    return out, len(drafts) - len(out)


def dose(chain, statements, concepts, draft: DiagnosisDraft, builder, epochs: float,
         stored: frozenset = frozenset()) -> list:
    """The recipe part of a patch, on the located nodes only. With builder.patch_exposures, each
    node gets enough samples for that many exposures at train.epochs: a gap (untaught or not
    learned) its statement in new wordings both ways and its failing concepts' definitions; a chain
    break two-hop walks and transitive order facts. Wordings already `stored` (V1's, an earlier
    round's patch) are passed over, so a node patched again gets the next ones. A statement the
    diagnosis saw trained on skips the forward wordings V1 gave it. Without patch_exposures,
    builder.paraphrases wordings per located statement, further along the cycle than V1 went."""
    located = [st for st in statements if st.id in draft.statement_ids]
    if builder.patch_exposures is None:
        return paraphrase_samples(chain, located, builder.paraphrases, offset=builder.paraphrases)
    per_node = math.ceil(builder.patch_exposures / epochs)

    def fresh(drafts: list, n: int) -> list:
        return [d for d in drafts if (d.prompt, d.answer) not in stored][:n]

    if draft.kind == "chain_break":
        return fresh(chain_dose(chain, statements, located, 10**6), per_node * len(located)) if located else []
    exposed = {n["id"]: n.get("exposures", 0) for n in draft.evidence.get("nodes", [])
               if n.get("target") == "statement"}

    def used(st) -> int:  # forward wordings V1 gave the statement (none if it was never trained on)
        return builder.paraphrases if exposed.get(st.id, draft.kind != "untaught") else 0

    form = builder.patch_wordings
    out = [x for st in located for x in fresh(dose_samples(chain, st, len(PATCH_WORDINGS), used(st), form), per_node)]
    return out + [x for c in concepts if c.id in draft.concept_ids
                  for x in fresh(concept_dose(chain, c, len(CONCEPT_WORDINGS)), per_node)]


def dose_shortfall(builder, epochs: float) -> str | None:
    """A warning when builder.patch_exposures asks more samples per node than there are new wordings
    (samples are never repeated: a repeat teaches the wording, not the fact)."""
    if builder.patch_exposures is None:
        return None
    per_node = math.ceil(builder.patch_exposures / epochs)
    taught = len(PATCH_WORDINGS) - min(builder.paraphrases, len(PATCH_WORDINGS) // 2)
    if per_node <= taught:
        return None
    return (f"builder.patch_exposures {builder.patch_exposures} at {epochs:g} epochs asks {per_node} samples per "
            f"node; a taught statement has {taught} new wordings ({len(PATCH_WORDINGS)} less V1's "
            f"{builder.paraphrases}), so it gets {taught * epochs:g} exposures: raise train.epochs or lower "
            f"builder.patch_exposures")
