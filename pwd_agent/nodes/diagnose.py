"""diagnose: localise each failed dev item on the nodes it rests on, with probes and the exposure ledger.

The located nodes are the statements the item's keys and chosen wrong options come from (and the
concepts linked to them), not the whole chain; holdout items are never seen.
- untaught: a located node fails its probe and no training sample ever carried it.
- concept_gap: a located node fails its probe though it was trained on (taught, not learned).
- chain_break: every located node passes its probe but the item fails; the composition is the bug.
- item_suspect: every probe passes and every round so far, the base model included, gave the same
  wrong answer; the item itself may be faulty, so it is flagged for review and not patched.
The judge agent (rules offline, the LLM otherwise) gives a second opinion, stored beside it.
"""

from __future__ import annotations

from collections import Counter

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.agents.runner import call_agent, make_backend
from pwd_agent.schemas import TestItemDraft
from pwd_agent.events import Progress, emit
from pwd_agent.exposures import round_ledger, total
from pwd_agent.prompting import LETTERS
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.store import (
    ConceptStatement, Diagnosis, ItemResult, Probe, ProbeResult, Round, Statement, TestItem, session_scope,
)
from pwd_agent.store.queries import kb_statements


def diagnose(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Score the failed chains' probes, then localise each failed dev item and diagnose it with the ledger."""
    ctx = runtime.context
    round_id = state["round"]
    backend = make_backend(ctx)
    with session_scope(ctx.db_url) as session:
        failed = failed_dev_items(session, round_id)
        probes = chain_probes(session, {item.chain_id for item, _ in failed})
        adapter = session.get(Round, round_id).adapter_path
    score_probes(ctx, round_id, adapter, [p for group in probes.values() for p in group])

    with session_scope(ctx.db_url) as session:
        passed = dict(session.exec(select(ProbeResult.probe_id, ProbeResult.passed)
                                   .where(ProbeResult.round_id == round_id)).all())
        known = set(session.exec(select(Diagnosis.item_id).where(Diagnosis.round_id == round_id)).all())
        ledger = round_ledger(session, round_id, ctx.config.train.epochs)
    progress = Progress(ctx.db_url, "diagnose", "failed dev items", len(failed), already=len(known))
    for item, result in failed:
        if item.id in known:
            continue
        with session_scope(ctx.db_url) as session:  # one item's diagnosis and its ledger rows together
            session.add(diagnose_item(session, backend, round_id, item, result, probes[item.chain_id], passed,
                                     ledger))
        progress.advance()  # after the commit: a kill here leaves this item done, never half-recorded
    with session_scope(ctx.db_url) as session:
        rows = session.exec(select(Diagnosis).where(Diagnosis.round_id == round_id)).all()
        kinds = Counter(d.kind for d in rows)
        agree = sum(1 for d in rows if d.judge_kind == d.kind)
    scored = {p.id for group in probes.values() for p in group}
    n_failed_probes = sum(1 for pid in scored if not passed.get(pid, False))
    emit(ctx.db_url, "diagnose", f"round {round_id}: {len(failed)} failed dev items: "
         + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
         + f"; {n_failed_probes}/{len(scored)} probes failed; judge agrees on {agree}/{len(rows)}",
         judge_agrees=agree, **kinds)
    return {}


def diagnose_item(session, backend, round_id: int, item: TestItem, result: ItemResult, probes: list[Probe],
                  passed: dict[int, bool], ledger: dict | None = None) -> Diagnosis:
    """The judge's opinion (its ledger rows go into `session`) and the probe verdict for one failed item."""
    judge = call_agent(session, backend, "debugger", "judge_failure", backend.judge_failure,
                       TestItemDraft.model_validate(item, from_attributes=True), result.predicted,
                       kb_statements(session, item.chain_id))
    return localise(session, round_id, item, result, probes, passed, judge, ledger)


def failed_dev_items(session, round_id: int) -> list[tuple[TestItem, ItemResult]]:
    """The dev items the round failed, with their results (holdout items are never diagnosed)."""
    return list(session.exec(
        select(TestItem, ItemResult).join(ItemResult, ItemResult.item_id == TestItem.id)
        .where(ItemResult.round_id == round_id, TestItem.split == "dev", ItemResult.passed == False)  # noqa: E712
        .order_by(TestItem.id)
    ).all())


def chain_probes(session, chain_ids: set[int]) -> dict[int, list[Probe]]:
    """For each chain: the probes of its statements and of the concepts linked to them."""
    out: dict[int, list[Probe]] = {}
    for chain_id in sorted(chain_ids):
        statement_ids = list(session.exec(select(Statement.id).where(Statement.chain_id == chain_id)).all())
        concept_ids = set(session.exec(select(ConceptStatement.concept_id)
                                       .where(ConceptStatement.statement_id.in_(statement_ids))).all())
        out[chain_id] = list(session.exec(select(Probe).where(
            ((Probe.target == "statement") & Probe.node_id.in_(statement_ids))
            | ((Probe.target == "concept") & Probe.node_id.in_(concept_ids))).order_by(Probe.id)).all())
    return out


def score_probes(ctx: RunContext, round_id: int, adapter: str | None, probes: list[Probe]) -> None:
    """Score the probes this round has not scored yet, with the round's model and the eval scorer."""
    from pwd_agent.evaluation.loader import loaded_evaluator

    with session_scope(ctx.db_url) as session:
        done = set(session.exec(select(ProbeResult.probe_id).where(ProbeResult.round_id == round_id)).all())
    todo = list({p.id: p for p in probes if p.id not in done}.values())
    if not todo:
        return
    emit(ctx.db_url, "diagnose", f"round {round_id}: scoring {len(todo)} probes of the failed items' chains")
    with loaded_evaluator(ctx, adapter) as evaluator:
        preds = evaluator.score_items([(p.question, p.options, p.answer) for p in todo], multi=False)  # one key each
    with session_scope(ctx.db_url) as session:
        session.add_all(ProbeResult(round_id=round_id, probe_id=p.id, raw=pred.raw, predicted=pred.predicted,
                                    passed=pred.passed, scorer=ctx.config.eval.scorer) for p, pred in zip(todo, preds))


def item_nodes(item: TestItem, predicted: str) -> list[int]:
    """The statements the item's missed keys and its chosen wrong options rest on (`option_statements`):
    where an item failed, not the whole chain. Empty when the item links no option to a node."""
    keys = {LETTERS.index(x) for x in item.answer.split(",") if x and x in LETTERS}
    chosen = {LETTERS.index(x) for x in (predicted or "").split(",") if x and x in LETTERS}
    links = item.option_statements or []
    # Keys missed and wrong options chosen: a key the student did pick is knowledge it has.
    return sorted({links[i] for i in keys ^ chosen if i < len(links) and links[i] is not None})


def localise(session, round_id: int, item: TestItem, result: ItemResult, probes: list[Probe],
             passed: dict[int, bool], judge, ledger: dict | None = None) -> Diagnosis:
    """The probe verdict for one failed item on the nodes its keys and chosen options rest on (the
    whole chain when it names none), with the exposure ledger: a failing node never trained on is
    `untaught`, one trained on but still failing its probe a `concept_gap` (taught, not learned);
    every node's probe passing is a `chain_break` (or `item_suspect`, below). The evidence keeps
    each located node's probe verdict and exposures, for `blame`'s repair trace."""
    ledger = ledger or {}
    own = [p.node_id for p in probes if p.target == "statement"]
    nodes = item_nodes(item, result.predicted)
    scope = "item" if nodes else "chain"
    nodes = nodes or sorted(own)
    linked = session.exec(select(ConceptStatement.concept_id)
                          .where(ConceptStatement.statement_id.in_(nodes))).all() if nodes else []
    verdict = {("statement", p.node_id): passed.get(p.id, False) for p in probes if p.target == "statement"}
    verdict |= {("concept", p.node_id): passed.get(p.id, False) for p in probes if p.target == "concept"}
    located = [("statement", n) for n in nodes] + [("concept", c) for c in sorted(set(linked))]
    exposed = {node: total(ledger, node) for node in located}
    # A node with no probe (too short a chain for distractors) counts as failing only when never taught.
    failing = [node for node in located if not verdict.get(node, exposed[node] > 0)]
    evidence = {"predicted": result.predicted, "answer": item.answer, "probes": len(probes), "scope": scope,
                "failed_probes": [p.id for p in probes if not passed.get(p.id, False)],
                "nodes": [{"target": t, "id": i, "probe": verdict.get((t, i)), "exposures": exposed[(t, i)]}
                          for t, i in located],
                "judge": {"kind": judge.kind, **judge.evidence}}
    statements = sorted(i for t, i in failing if t == "statement")
    concepts = sorted(i for t, i in failing if t == "concept")
    if failing:
        never = all(exposed[node] == 0 for node in failing)
        kind = "untaught" if never else "concept_gap"
        rule = ("the located nodes fail their probes and were never trained on" if never
                else "the located nodes fail their probes after training on them")
        if concepts:  # a failing concept's statements among the located ones are part of the gap
            links = session.exec(select(ConceptStatement.statement_id)
                                 .where(ConceptStatement.concept_id.in_(concepts))).all()
            statements = sorted(set(statements) | (set(links) & set(nodes)))
    elif same_wrong_answer_every_round(session, round_id, item.id):
        kind, rule = "item_suspect", "probes pass, yet every round since the base gave the same wrong answer"
        statements = []
    else:
        kind, rule = "chain_break", "every located node passes its probe: the composition fails"
        statements = list(nodes)
    evidence["rule"] = rule
    return Diagnosis(round_id=round_id, item_id=item.id, kind=kind, statement_ids=statements, concept_ids=concepts,
                     evidence=evidence, confidence=judge.confidence, judge_kind=judge.kind)


def same_wrong_answer_every_round(session, round_id: int, item_id: int) -> bool:
    """True when every round so far (the base included) gave the item the same wrong answer."""
    rows = session.exec(select(ItemResult).where(ItemResult.item_id == item_id, ItemResult.round_id <= round_id)).all()
    return len(rows) >= 2 and not any(r.passed for r in rows) and len({r.predicted for r in rows}) == 1
