"""`blame` (one item's story across rounds) and `coverage` (what the KB teaches and tests)."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import median

from sqlmodel import func, select

from pwd_agent.errors import PwdAgentError
from pwd_agent.exposures import round_ledger, total
from pwd_agent.context import RunContext
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
            patches = s.exec(select(Patch).where(Patch.diagnosis_id == d.id)).all()
            target = patches[0].target_round if patches else None
            nodes = trace_nodes(s, d, target, ctx.config.train.epochs)
            for node in nodes:
                lines.append(f"  {node['label']}: exposures {node['exposures'][0]:g} -> {_dash(node['exposures'][1])}, "
                             f"probe {_verdict(node['probe'][0])} -> {_verdict(node['probe'][1])}")
            for patch in patches:
                samples = s.exec(select(Sample).where(Sample.patch_id == patch.id)).all()
                after = results.get(patch.target_round)
                verdict = ("not evaluated yet" if after is None else "fixed" if after.passed else "still failing")
                lines.append(f"  patch {patch.id}: {len(samples)} samples for round {patch.target_round} -> {verdict}")
                lines += [f"    [{x.kind}] {_short(x.prompt, 80)}" for x in samples]
                lines.append(f"  repair trace: {broken_link(len(samples), nodes, after, results.get(d.round_id))}")
    return "\n".join(lines)


def _dash(x) -> str:
    return "-" if x is None else f"{x:g}"


def _verdict(passed: bool | None) -> str:
    return "not scored" if passed is None else "pass" if passed else "fail"


def trace_nodes(session, diagnosis: Diagnosis, target: int | None, epochs: float) -> list[dict]:
    """Each located node of a diagnosis: its exposures in the diagnosed round's weights and in the
    repair round's (None before that round has a training set), and its probe before and after."""
    def probe(round_id, target_kind, node_id):
        if round_id is None:
            return None
        pid = session.exec(select(Probe.id).where(Probe.target == target_kind, Probe.node_id == node_id)).first()
        row = session.get(ProbeResult, (round_id, pid)) if pid is not None else None
        return None if row is None else row.passed

    before = round_ledger(session, diagnosis.round_id, epochs)
    trained = target is not None and session.exec(select(RoundSample).where(RoundSample.round_id == target)).first()
    after = round_ledger(session, target, epochs) if trained else None
    out = []
    for kind, ids in (("statement", diagnosis.statement_ids), ("concept", diagnosis.concept_ids)):
        for i in ids:
            if kind == "statement":
                st = session.get(Statement, i)
                label = f"statement {i} ({_short(f'{st.subject} {st.predicate} {st.object}', 60)})"
            else:
                label = f"concept {i} ({session.get(Concept, i).term})"
            out.append({"label": label, "exposures": [total(before, (kind, i)),
                                                      None if after is None else total(after, (kind, i))],
                        "probe": [probe(diagnosis.round_id, kind, i), probe(target, kind, i)]})
    return out


def broken_link(n_samples: int, nodes: list[dict], after, before=None) -> str:
    """The first link of diagnosis -> nodes -> samples -> exposures -> probe -> item that did not hold
    (`after` and `before`: the item's results in the repair round and the diagnosed one)."""
    if after is None:
        return "the repair round is not evaluated yet"
    if after.passed:
        return "repaired: the item passes after the patch"
    if not nodes:
        return "nothing was located"
    if n_samples == 0:
        return "no sample: an earlier diagnosis took these nodes, or the leakage gate dropped every sample"
    if any(n["probe"][1] is False for n in nodes):
        return "the dose did not teach: a located node still fails its probe"
    if any(n["probe"][1] is None for n in nodes):
        return "the item still fails; the located nodes' probes were not scored after the repair"
    if before is None or before.mass is None or after.mass is None:
        return "the located nodes pass their probes, the item still fails: the composition, or a node not located"
    return (f"the located nodes pass their probes, the item still fails: "
            f"{composition_link(before.mass, after.mass, before.predicted == after.predicted)} "
            f"(key mass {before.mass:.2g} -> {after.mass:.2g})")


def composition_link(mass_before: float, mass_after: float, same_choice: bool) -> str:
    """Why an item fails although its located statements' probes pass, read off the key's probability
    mass among the options (the options scorer): the dose raised the key but a distractor still
    outweighs it (the one picked before, or another the dose raised too), or the key lost mass (a node
    not located, or the dose raised a distractor more)."""
    if mass_after <= mass_before:
        return "the key lost mass (a node not located, or the dose raised a distractor more)"
    who = "the distractor picked before" if same_choice else "another distractor"
    return f"the key gained mass, {who} still outweighs it"


def render_coverage(ctx: RunContext) -> str:
    """Per chain: items, statements, concepts, probes, training samples and the last round's pass
    rates; then the nodes nothing teaches and the ones nothing tests."""
    with session_scope(ctx.db_url) as s:
        last = next((r.id for r in reversed(rounds(s)) if r.status == "evaluated"), None)
        statements = s.exec(select(Statement)).all()
        chain_of_statement = {st.id: st.chain_id for st in statements}
        links = s.exec(select(ConceptStatement)).all()
        samples = s.exec(select(Sample)).all()
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
        probe_of = {(p.target, p.node_id): p.id for p in probes}
        not_learned = [st.id for st in statements if exposures[st.id] > 0
                       and probe_pass.get(probe_of.get(("statement", st.id))) is False]

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
    untaught_st = [st.id for st in statements if not exposures[st.id]]
    untaught_c = sorted(cid for cid in {link.concept_id for link in links} if not taught_c[cid])
    untested = [st.id for st in statements if st.id not in tested_st]
    lines += ["",
              f"untaught statements (no exposure in the last training set's lineage): {untaught_st or 'none'}",
              f"taught but not learned (exposed, probe failing in round {last}): {not_learned or 'none'}",
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
    """(the last round with a training set or None, statement id -> its exposures in that round's
    weights: the exposure ledger, lineage included); before any set is composed, the V1 data
    stands in (round 1's set is V1), at train.epochs."""
    last = session.exec(select(func.max(RoundSample.round_id))).one()
    if last is None:
        v1 = [x for x in samples if x.origin == "v1" and x.kind != "concept"]
        cited = Counter(sid for x in v1 for sid in x.statement_ids)
        return None, Counter({sid: n * epochs for sid, n in cited.items()})
    ledger = round_ledger(session, last, epochs)
    return last, Counter({i: total(ledger, (t, i)) for t, i in ledger if t == "statement"})
