"""`blame` (one item's story across rounds) and `coverage` (what the KB teaches and tests)."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import median

from sqlmodel import func, select

from pwd_agent.errors import PwdAgentError
from pwd_agent.runs import RunContext
from pwd_agent.store import (
    Chain, Concept, ConceptStatement, Diagnosis, ItemResult, Patch, Probe, ProbeResult, RoundSample, Sample, Statement,
    TestItem,
    session_scope,
)
from pwd_agent.store.queries import rounds


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render_blame(ctx: RunContext, item_id: int) -> str:
    with session_scope(ctx.db_url) as s:
        item = s.get(TestItem, item_id)
        if item is None:
            n = len(s.exec(select(TestItem.id)).all())
            raise PwdAgentError(f"run {ctx.run_id} has no test item {item_id}", f"items are numbered 1 to {n}")
        chain = s.get(Chain, item.chain_id)
        lines = [f"item {item.id} ({item.split}), chain {chain.id} \"{chain.process_name}\", key {item.answer}",
                 f"  {_short(item.question, 200)}"]
        for letter, text, kind, st in zip("ABCD", item.options, item.option_kinds, item.option_statements):
            lines.append(f"  {letter}. [{kind}{f', statement {st}' if st else ''}] {_short(text)}")
        results = {r.round_id: r for r in s.exec(select(ItemResult).where(ItemResult.item_id == item_id)).all()}
        lines += ["", "round  predicted  passed  raw"]
        for rid in sorted(results):
            r = results[rid]
            lines.append(f"{rid:>5}  {r.predicted or '-':<9}  {'yes' if r.passed else 'no':<6}  {_short(r.raw, 40)!r}")
        diagnoses = s.exec(select(Diagnosis).where(Diagnosis.item_id == item_id).order_by(Diagnosis.round_id)).all()
        if item.split == "holdout":
            lines += ["", "holdout item: never diagnosed or patched"]
        for d in diagnoses:
            lines += ["", f"round {d.round_id} diagnosis: {d.kind} (judge: {d.judge_kind or '-'}); "
                          f"{d.evidence.get('rule', '')}"]
            for sid in d.statement_ids:
                st = s.get(Statement, sid)
                lines.append(f"  statement {sid}: {_short(f'{st.subject} {st.predicate} {st.object}')}")
            for cid in d.concept_ids:
                lines.append(f"  concept {cid}: {s.get(Concept, cid).term}")
            for patch in s.exec(select(Patch).where(Patch.diagnosis_id == d.id)).all():
                samples = s.exec(select(Sample).where(Sample.patch_id == patch.id)).all()
                after = results.get(patch.target_round)
                verdict = ("not evaluated yet" if after is None else "fixed" if after.passed else "still failing")
                lines.append(f"  patch {patch.id}: {len(samples)} samples for round {patch.target_round} -> {verdict}")
                lines += [f"    [{x.kind}] {_short(x.prompt, 80)}" for x in samples]
    return "\n".join(lines)


def render_coverage(ctx: RunContext) -> str:
    """Per chain: items, statements, concepts, probes, training samples and the last round's pass
    rates; then the nodes nothing teaches and the ones nothing tests."""
    with session_scope(ctx.db_url) as s:
        last = next((r.id for r in reversed(rounds(s)) if r.status == "evaluated"), None)
        statements = s.exec(select(Statement)).all()
        chain_of_statement = {st.id: st.chain_id for st in statements}
        links = s.exec(select(ConceptStatement)).all()
        samples = s.exec(select(Sample)).all()
        taught_st = Counter(sid for x in samples for sid in x.statement_ids)
        taught_c = Counter(cid for x in samples for cid in x.concept_ids)
        probes = s.exec(select(Probe)).all()
        probe_pass = {} if last is None else dict(s.exec(select(ProbeResult.probe_id, ProbeResult.passed)
                                                         .where(ProbeResult.round_id == last)).all())
        item_pass = {} if last is None else dict(s.exec(select(ItemResult.item_id, ItemResult.passed)
                                                        .where(ItemResult.round_id == last)).all())
        items = s.exec(select(TestItem)).all()
        tested_st = {sid for i in items for sid in i.option_statements if sid}
        per_chain = defaultdict(lambda: {"items": [], "statements": 0, "concepts": set(), "probes": [], "samples": 0,
                                         "exposures": []})
        for i in items:
            per_chain[i.chain_id]["items"].append(i)
        for st in statements:
            per_chain[st.chain_id]["statements"] += 1
        for link in links:
            per_chain[chain_of_statement[link.statement_id]]["concepts"].add(link.concept_id)
        for p in probes:
            per_chain[p.chain_id]["probes"].append(p)
        for x in samples:
            if x.chain_id is not None:
                per_chain[x.chain_id]["samples"] += 1
        chains = {c.id: c for c in s.exec(select(Chain).order_by(Chain.id)).all()}
        concepts = {c.id: c.term for c in s.exec(select(Concept)).all()}
        trained_round, exposures = exposures_per_statement(s, samples, ctx.config.train.epochs)
        for st in statements:
            per_chain[st.chain_id]["exposures"].append(exposures[st.id])

    def rate(ids, passed) -> str:
        scored = [passed[i] for i in ids if i in passed]
        return f"{sum(scored)}/{len(scored)}" if scored else "-"

    lines = [f"coverage of run {ctx.run_id} (pass rates: round {last if last is not None else '-'})", "",
             f"{'chain':>5}  {'split':<7} {'items':>5} {'stmts':>5} {'concepts':>8} {'probes':>6} {'samples':>7} "
             f"{'exposures':>9}  {'items pass':>10} {'probes pass':>11}  process"]
    for cid, c in chains.items():
        row = per_chain[cid]
        split = row["items"][0].split if row["items"] else "-"
        low = f"{min(row['exposures']):g}" if row["exposures"] else "-"
        lines.append(f"{cid:>5}  {split:<7} {len(row['items']):>5} {row['statements']:>5} {len(row['concepts']):>8} "
                     f"{len(row['probes']):>6} {row['samples']:>7} {low:>9}  "
                     f"{rate([i.id for i in row['items']], item_pass):>10} "
                     f"{rate([p.id for p in row['probes']], probe_pass):>11}  {_short(c.process_name, 40)}")
    untaught_st = [st.id for st in statements if not taught_st[st.id]]
    untaught_c = sorted(cid for cid in {link.concept_id for link in links} if not taught_c[cid])
    untested = [st.id for st in statements if st.id not in tested_st]
    lines += ["",
              f"untaught statements (no training sample): {untaught_st or 'none'}",
              f"untaught concepts (no sample names them): {[concepts[c] for c in untaught_c] or 'none'}",
              f"statements no test item option covers (probes only): {len(untested)} of {len(statements)}"]
    if statements:
        counts = sorted(exposures[st.id] for st in statements)
        source = f"round {trained_round}'s training set" if trained_round is not None else "the V1 data"
        lines.append(f"exposures per statement ({source} x {ctx.config.train.epochs:g} epochs; the column shows "
                     f"each chain's least taught statement): min {counts[0]:g}, median {median(counts):g}, "
                     f"max {counts[-1]:g}")
    return "\n".join(lines)


def exposures_per_statement(session, samples: list[Sample], epochs: float) -> tuple[int | None, Counter]:
    """(the last round with a training set or None, statement id -> samples that teach it in that
    set x epochs); before any set is composed, the V1 data stands in (round 1's set is V1)."""
    last = session.exec(select(func.max(RoundSample.round_id))).one()
    if last is None:
        members = {x.id for x in samples if x.origin == "v1"}
    else:
        members = set(session.exec(select(RoundSample.sample_id).where(RoundSample.round_id == last)).all())
    return last, Counter({sid: n * epochs for sid, n in
                          Counter(sid for x in samples if x.id in members for sid in x.statement_ids).items()})
