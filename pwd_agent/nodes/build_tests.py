"""build_tests: unit tests from L3 chains, split into dev and holdout (by item within each chain, or
by whole chains), and probes on their L1/L2 nodes, all before any training."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.agents.runner import make_backend, map_units, run_unit, unit_failure, warn_failures, workers_for
from pwd_agent.baselines import baseline_text, goal_warning, split_baselines
from pwd_agent.events import Progress, emit
from pwd_agent.gates import gate
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.probes import concept_index, concept_probe, statement_probe
from pwd_agent.prompting import place_letters
from pwd_agent.store import Chain, Probe, Statement, TestItem, mark_done, session_scope, units_to_do
from pwd_agent.store.queries import all_chain_steps, count_rows, foreign_steps, kb_chain, kb_concepts, kb_statements


def chain_split(steps_hash: str, holdout_fraction: float, seed: int) -> str:
    """tests.split=chain: whole chains go to one split, so no holdout item shares its chain with a
    diagnosed one. Keyed by the chain's content, so the split does not depend on storing order."""
    u = random.Random(f"{seed}:split:{steps_hash}").random()
    return "holdout" if u < holdout_fraction else "dev"


def item_splits(n_items: int, steps_hash: str, holdout_fraction: float, seed: int) -> list[str]:
    """tests.split=item: a chain's items divided between dev and holdout, at least one in each when
    there are two or more, so a repair of the chain's knowledge can show on holdout questions the
    Debugger never read. The holdout count is n * fraction rounded at random (seeded by the chain),
    so the benchmark-wide share is the fraction; which items go where is a seeded shuffle."""
    rng = random.Random(f"{seed}:split:{steps_hash}")
    n_holdout = int(n_items * holdout_fraction + rng.random())
    if n_items >= 2:
        n_holdout = min(max(n_holdout, 1), n_items - 1)
    splits = ["holdout"] * n_holdout + ["dev"] * (n_items - n_holdout)
    rng.shuffle(splits)
    return splits


def key_splits(drafts: list, steps_hash: str, holdout_fraction: float, seed: int) -> list[str]:
    """tests.split=key: the drafts grouped by the statements their keys rest on, each group divided
    as item_splits divides a chain (two items of one statement: one dev, one holdout), so a holdout
    item's fact is one the Debugger can see fail on dev. A group of one goes to holdout with the
    fraction's probability."""
    groups: dict[tuple, list[int]] = {}
    for i, draft in enumerate(drafts):
        keys = tuple(sorted(st for st, kind in zip(draft.option_statements, draft.option_kinds)
                            if kind == "key" and st is not None))
        groups.setdefault(keys or ("item", i), []).append(i)
    splits = [""] * len(drafts)
    for keys, members in groups.items():
        for i, split in zip(members, item_splits(len(members), f"{steps_hash}:{keys}", holdout_fraction, seed)):
            splits[i] = split
    return splits


def assign_splits(cfg, drafts: list, steps_hash: str) -> list[str]:
    """Each of a chain's kept drafts' split under tests.split (chain, key or item)."""
    if cfg.split == "chain":
        return [chain_split(steps_hash, cfg.holdout_fraction, cfg.seed)] * len(drafts)
    if cfg.split == "key":
        return key_splits(drafts, steps_hash, cfg.holdout_fraction, cfg.seed)
    return item_splits(len(drafts), steps_hash, cfg.holdout_fraction, cfg.seed)


def build_tests(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """The benchmark before any training: items per chain split into dev and holdout, and the probes."""
    ctx = runtime.context
    cfg = ctx.config.tests
    gate(ctx, "after_kb", lambda s: {"chains": count_rows(s, Chain), "statements": count_rows(s, Statement)})
    backend = make_backend(ctx, bulk=True)
    with session_scope(ctx.db_url) as session:
        pending, done = units_to_do(session, "build_tests", select(Chain).order_by(Chain.id))
        todo = [c.id for c in pending]
        chains = all_chain_steps(session)
        all_concepts = kb_concepts(session, list(session.exec(select(Statement.id)).all()))
        stored = StoredItems.read(session, all_concepts)
    progress = Progress(ctx.db_url, "build_tests", "chains", len(todo) + done, done)
    variants = range(cfg.items_per_chain)
    inputs: dict[int, tuple] = {}  # the chains whose items are in flight or waiting to be stored

    def units():
        """Each chain's units, its inputs read just before its first unit is sent (not all up front)."""
        for chain_id in todo:
            with session_scope(ctx.db_url) as session:
                inputs[chain_id] = (kb_chain(session.get(Chain, chain_id)), kb_statements(session, chain_id),
                                    foreign_steps(session, chain_id, chains=chains))
            yield from ((chain_id, variant) for variant in variants)

    work = lambda unit: run_unit(backend, "tester", "test_item", backend.write_test_item,  # noqa: E731
                                 *inputs[unit[0]], unit[1])
    # Items are written concurrently but stored chain by chain in id order (a reorder buffer), so
    # letters, de-duplication and ids do not depend on which request finished first.
    written: dict[tuple[int, int], tuple] = {}
    dropped, next_chain = 0, 0
    for unit, result in map_units(work, units(), workers_for(backend, ctx.config)):
        written[unit] = result
        while next_chain < len(todo) and all((todo[next_chain], v) in written for v in variants):
            chain_id = todo[next_chain]
            drafts = [written.pop((chain_id, v)) for v in variants]
            dropped += store_chain_items(ctx, chain_id, drafts, inputs.pop(chain_id), all_concepts, stored)
            progress.advance()
            next_chain += 1
    counts = summarise_benchmark(ctx, dropped)
    return {"counts": {**state.get("counts", {}), **counts}}


def summarise_benchmark(ctx: RunContext, dropped: int) -> dict:
    """Log the benchmark: items per split, key letters and key-set sizes, each split's baselines,
    and a warning when the goal is no harder than always giving one answer."""
    loop = ctx.config.loop
    with session_scope(ctx.db_url) as session:
        counts = {
            "dev_items": count_rows(session, TestItem, TestItem.split == "dev"),
            "holdout_items": count_rows(session, TestItem, TestItem.split == "holdout"),
            "probes": count_rows(session, Probe),
        }
        answers = [item.answer for item in session.exec(select(TestItem)).all()]
        floors = split_baselines(session, ctx.config.tests.one_key)
    letters = Counter(x for answer in answers for x in answer.split(","))
    sizes = Counter(len(answer.split(",")) for answer in answers)
    if counts["dev_items"] == 0 or counts["holdout_items"] == 0:
        emit(ctx.db_url, "build_tests", "a split has no items: scores on it will be missing", "warning", **counts)
    emit(ctx.db_url, "build_tests", "benchmark: {dev_items} dev items, {holdout_items} holdout items, "
         "{probes} probes on KB nodes".format(**counts),
         dropped=dropped, key_letters=dict(sorted(letters.items())), key_counts=dict(sorted(sizes.items())), **counts)
    emit(ctx.db_url, "build_tests", "baselines: " + "; ".join(baseline_text(k, b) for k, b in floors.items()),
         **{k: vars(b) for k, b in floors.items() if b})
    if warning := goal_warning(loop.goal, loop.goal_split, floors):
        emit(ctx.db_url, "build_tests", warning, "warning")
    return counts


class StoredItems:
    """What storing a chain's items needs to know of the items and probes stored before it: item
    fingerprints (near-duplicates), key sets per split (letter balance), probed nodes, and the
    concepts by statement. Read once per stage and kept up to date by store_chain_items: reading
    every stored item per chain made build_tests quadratic in the KB's size."""

    def __init__(self, items: list[TestItem], probed: set, concepts: list | None = None):
        self.seen = {_fingerprint(item.options) for item in items}
        self.answers = {split: Counter(i.answer for i in items if i.split == split) for split in ("dev", "holdout")}
        self.probed = probed
        self.linked = None if concepts is None else concept_index(concepts)

    @classmethod
    def read(cls, session, concepts: list | None = None) -> "StoredItems":
        return cls(session.exec(select(TestItem)).all(), set(session.exec(select(Probe.target, Probe.node_id)).all()),
                   concepts)


def store_chain_items(ctx: RunContext, chain_id: int, drafts: list[tuple], inputs: tuple, all_concepts,
                      stored: StoredItems | None = None) -> int:
    """A chain's items (near-duplicates dropped, splits assigned, letters placed against the items
    of the same split stored before them), probes, ledger rows and completion marker, in one
    transaction; returns how many drafts were dropped. `stored` (the stage's StoredItems) is read
    from the store when not given, and updated once the transaction is committed."""
    cfg = ctx.config.tests
    chain, statements, pool = inputs
    with session_scope(ctx.db_url) as session:
        known = stored or StoredItems.read(session)
        seen, answers = set(known.seen), {split: Counter(c) for split, c in known.answers.items()}
        kept = []
        for variant, (draft, records) in enumerate(drafts):
            session.add_all(records)
            if draft is None or _fingerprint(draft.options) in seen:
                continue  # too short a chain, or a near-duplicate of an item we have
            seen.add(_fingerprint(draft.options))
            kept.append((variant, draft))
        steps_hash = session.get(Chain, chain_id).steps_hash
        splits = assign_splits(cfg, [d for _, d in kept], steps_hash)
        # Key sets balanced within each split: the best constant answer is a per-split baseline.
        for (variant, draft), split in zip(kept, splits):
            draft = place_letters(draft, answers[split], random.Random(f"{cfg.seed}:letters:{chain_id}:{variant}"))
            answers[split][draft.answer] += 1
            session.add(TestItem(chain_id=chain_id, variant=variant, split=split, **draft.model_dump()))
        probes = chain_probes(session, chain, statements, pool, all_concepts, cfg.seed,
                              known.probed if stored else None, stored.linked if stored else None)
        session.add_all(probes)
        failures = [f for _, records in drafts if (f := unit_failure(records))]
        mark_done(session, "build_tests", chain_id, error="; ".join(failures) or None)
    if stored is not None:  # committed: the next chain sees these items and probes
        stored.seen, stored.answers = seen, answers
        stored.probed.update((p.target, p.node_id) for p in probes)
    warn_failures(ctx, "build_tests", f"chain {chain_id} ({chain.process_name[:60]})", failures)
    return len(drafts) - len(kept)


def chain_probes(session, chain, statements, foreign, all_concepts, seed: int, probed: set | None = None,
                 linked: dict | None = None) -> list[Probe]:
    """A probe per statement of the chain and per concept linked to it (a concept shared with an
    earlier chain already has one). `probed` (the probed nodes) and `linked` (concept_index of
    `all_concepts`) spare a stage that builds every chain's probes a read and a scan per chain."""
    if probed is None:
        probed = set(session.exec(select(Probe.target, Probe.node_id)).all())
    ids = {s.id for s in statements}
    drafts = [statement_probe(chain, st, statements, foreign, seed) for st in statements]
    if linked is None:
        mine = [c for c in all_concepts if ids & set(c.statement_ids)]
    else:
        mine = sorted({c.id: c for s in ids for c in linked.get(s, ())}.values(), key=lambda c: c.id)
    drafts += [concept_probe(chain.domain, c, all_concepts, seed, linked) for c in mine]
    return [Probe(chain_id=chain.id, target=d.target, node_id=d.node_id, question=d.question, options=d.options,
                  answer=d.answer) for d in drafts if d is not None and (d.target, d.node_id) not in probed]


def _fingerprint(options: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(o.casefold() for o in options)).encode()).hexdigest()
