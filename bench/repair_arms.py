"""Does the Debugger's targeting pay where V1 leaves facts untaught? Five arms at equal budget, paired tests.

    python bench/repair_arms.py -c examples/budget.yaml [--corpus DIR] [--seeds 0 1 2]
        [--arms targeted random-node oracle wrong-target none] [--multiples 2 4] [--run-id ID] [--set k=v ...]
        [--repair-from base|previous] [--patch-fraction F] [--patch-wordings both|forward|contrast|text]
        [--test-share F]

The regime of the paper: a V1 on a budget (builder.v1_budget), so some statements are never taught.
A setup run (ingest -> extract -> tests -> V1 -> evaluate, one round) gives the KB, the benchmark,
the probes and V1's training set; then, for each training seed:
  V1            V1 retrained with this seed (the run's own round 1 for the run's seed), scored on every
                item and every statement probe; its failed dev items are localised by the Debugger's
                own code (nodes.diagnose.localise: the item's key and chosen option, the probes, the
                exposure ledger).
  targeted      the located statements of the failed dev items
  random-node   as many statements drawn uniformly from the whole KB
  oracle        as many of exactly the untaught statements the failed dev items rest on (filled
                with other untaught statements, then the failed items' taught statements whose probes
                fail, then any failing probe's): the ceiling of targeting
  wrong-target  as many statements whose probes V1 already passes (where fewer pass than the budget, some
                are drawn twice; the writer never repeats a sample, so a node drawn twice gets at most
                its form's cap and the arm can still fall short in samples: its row says how many)
  none          V1 unchanged: no extra data
  random-node-xK  K times as many statements (distinct; all of them when the KB has fewer)
With --test-share F < 1 only a seeded share F of the chains keeps its items (dev and holdout), while
every arm still draws from the whole KB: the benchmark rests on a small part of what the corpus says,
as the paper's does, so a random draw mostly lands on statements no item tests. (With every chain
tested and half the statements untaught, a random draw of the targeted budget doses most of what the
oracle doses; `dosed_needed` in the output says how much.)
Every arm's nodes go through the same patch writer (recipes.dose_samples: builder.patch_exposures
exposures per node at train.epochs, wordings V1 did not use, in the form builder.patch_wordings
names) and the leakage gate, so the arms differ only in which nodes are taught. Each arm trains as
a repair round does under train.repair_from: from V1's adapter on the patches plus a replay share of
V1 (patch_fraction), or from the base on all of V1 plus the patches. Samples and loss tokens are printed per arm.

Reported per arm, averaged over seeds: dev and holdout accuracy, holdout accuracy on the items whose
key rests on an untaught vs a taught statement, probe pass rate on untaught statements, the share of
the failed dev items' untaught key statements the arm doses (dosed_needed). Paired,
one-sided: targeted against each arm and each arm against none, as a sign test on the items'
seed-averaged outcomes (the test the verdict uses: an item is one unit, whatever the seeds) and,
descriptive only, an exact McNemar count over (item, seed) pairs (not independent: the same items
recur across seeds); V1-vs-V1 churn across seeds (the noise floor); the smallest difference the
sign test could have detected with the discordant items seen; localisation precision and recall
against the statements V1 left untaught; a repair trace per failed dev item (trace.jsonl). If the
oracle does not beat random-node, the verdict is "inconclusive": the dose or the writer cannot
teach here, so no claim about targeting can be made.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

from sqlmodel import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import train_once  # noqa: E402 (bench/common.py, beside this script)
from pwd_agent.report.blame import composition_link  # noqa: E402
from pwd_agent.runs import open_run  # noqa: E402
from pwd_agent.store import Probe, Round, RoundSample, Sample, TestItem, session_scope  # noqa: E402

ARMS = ("targeted", "random-node", "oracle", "wrong-target", "none")
ALPHA = 0.05


def prepare(config: str, run_id: str, corpus: str | None, sets: list[str]) -> None:
    """The config's run through round 1 (V1 trained and scored); exit 0 (goal met) or 3 (short of it)."""
    cmd = [str(Path(sys.executable).with_name("pwd-agent")), "run", "-c", config, "--run-id", run_id, "-q",
           *(["--corpus", corpus] if corpus else []), *[arg for s in sets for arg in ("--set", s)],
           "--set", "loop.max_rounds=1", "--set", "loop.goal=1.0", "--set", "eval.general=none"]
    code = subprocess.run(cmd).returncode
    if code not in (0, 3):
        sys.exit(f"the setup run {run_id} ended with exit {code}; see `pwd-agent logs {run_id}`")


def load_setup(ctx, test_share: float = 1.0) -> SimpleNamespace:
    """The KB, items, statement probes, V1's training set and what V1 taught, from the setup run's store;
    items only of a seeded share `test_share` of the chains (`tested`: those chains' statements)."""
    from pwd_agent.exposures import round_ledger, total
    from pwd_agent.store.queries import kb_chain, kb_concepts, kb_statements
    from pwd_agent.store import Chain

    with session_scope(ctx.db_url) as s:
        if s.get(Round, 1) is None or s.get(Round, 1).adapter_path is None:
            sys.exit(f"run {ctx.run_id} has no trained round 1: run it through V1 first (the bench does without "
                     "--run-id)")
        chains = {c.id: kb_chain(c) for c in s.exec(select(Chain).order_by(Chain.id)).all()}
        statements = {st.id: st for cid in chains for st in kb_statements(s, cid)}
        concepts = {cid: kb_concepts(s, [st.id for st in statements.values() if st.chain_id == cid]) for cid in chains}
        items = list(s.exec(select(TestItem).order_by(TestItem.id)).all())
        probes = list(s.exec(select(Probe).where(Probe.target == "statement").order_by(Probe.id)).all())
        v1 = list(s.exec(select(Sample).join(RoundSample, RoundSample.sample_id == Sample.id)
                         .where(RoundSample.round_id == 1).order_by(Sample.id)).all())
        ledger = round_ledger(s, 1, ctx.config.train.epochs)
        round1 = s.get(Round, 1).adapter_path
    taught = {sid for sid in statements if total(ledger, ("statement", sid)) > 0}
    kept = tested_chains(sorted(chains), test_share)
    items = [i for i in items if i.chain_id in kept]
    tested = {sid for sid, st in statements.items() if st.chain_id in kept}
    return SimpleNamespace(chains=chains, statements=statements, concepts=concepts, items=items, probes=probes,
                           v1=v1, ledger=ledger, taught=taught, round1=round1, tested=tested)


def tested_chains(chain_ids: list[int], share: float) -> set[int]:
    """The chains whose items the bench keeps: all of them, or a seeded share (at least one)."""
    if share >= 1:
        return set(chain_ids)
    return set(random.Random(f"test-share:{share}").sample(chain_ids, max(1, round(share * len(chain_ids)))))


def open_arm_folders(description: str) -> tuple[argparse.Namespace, object, SimpleNamespace, Path]:
    """The command line of the benches that rescore arms this bench trained (option_parts, anchor_items):
    RUN_ID ARM_FOLDER... [--test-share F] [--split S]; returns (args, the run, its setup, the arms root),
    the run's scorer set to options (the order claims are scored by their likelihood)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run_id")
    parser.add_argument("arms", nargs="+", help="Folders under the bench's arms root, e.g. v1-0 "
                        "previous-pf0.7-text/oracle-1.")
    parser.add_argument("--test-share", type=float, default=1.0)
    parser.add_argument("--split", default="holdout")
    args = parser.parse_args()
    ctx = open_run(args.run_id)
    ctx.config.eval.scorer = "options"
    return args, ctx, load_setup(ctx, args.test_share), arms_root(ctx.run_dir, args.test_share)


def arm_adapter(ctx, setup, root: Path, folder: str) -> Path:
    """The adapter of an arm folder under `root` (V1 of the run's own seed is the run's round 1)."""
    adapter = Path(setup.round1) if folder == f"v1-{ctx.config.train.seed}" else root / folder / "adapter"
    if not adapter.is_dir():
        sys.exit(f"{adapter} is missing: name a folder the repair bench trained (e.g. v1-0)")
    return adapter


def arms_root(run_dir: Path, test_share: float) -> Path:
    """The bench's folder in a run: V1 per seed and the regimes' arms. Kept scores cover the items
    scored, and another test share scores other items, so each share below 1 keeps its own."""
    return Path(run_dir) / "repair_arms" / (f"test-share-{test_share:g}" if test_share < 1 else "")


def rows_of(samples) -> str:
    return "".join(json.dumps({"id": getattr(x, "id", None), "prompt": x.prompt, "answer": x.answer,
                               "statements": x.statement_ids}) + "\n" for x in samples)


def train_and_score(ctx, setup, samples, seed: int, folder: Path, init: str | None) -> SimpleNamespace:
    """Train on `samples` (from `init`'s adapter, else the base) and score every item and statement probe.
    Resumable: kept weights of the same job and data are not retrained, kept scores of the same data not
    rescored; scores kept from other data (a changed writer or arm rule) are dropped and the arm retrained."""
    folder.mkdir(parents=True, exist_ok=True)
    scores, data = folder / "scores.json", folder / "train.jsonl"
    rows = rows_of(samples)
    if scores.is_file() and (not data.is_file() or data.read_text() != rows):
        scores.unlink()  # kept scores of other data (a changed arm rule or writer) are never reported
    if not scores.is_file():
        data.write_text(rows)
        train_once(ctx.config, folder / "train.jsonl", folder, seed, init_adapter=init)
        scores.write_text(json.dumps(score(ctx, setup, str(folder / "adapter"))))
    metrics = json.loads((folder / "adapter" / "train_metrics.json").read_text())
    return SimpleNamespace(**json.loads(scores.read_text()), tokens=metrics["tokens"], samples=len(samples))


def score(ctx, setup, adapter: str) -> dict:
    """{"items": {id: [passed, mass, predicted]}, "probes": {statement id: passed}} under the run's scorer."""
    from pwd_agent.evaluation.loader import loaded_evaluator, score_test_items

    with loaded_evaluator(ctx, adapter) as evaluator:
        preds = score_test_items(evaluator, ctx.config, setup.items)
        probe_preds = evaluator.score_items([(p.question, p.options, p.answer) for p in setup.probes], multi=False)
    return {"items": {str(i.id): [p.passed, p.mass, p.predicted] for i, p in zip(setup.items, preds)},
            "probes": {str(p.node_id): q.passed for p, q in zip(setup.probes, probe_preds)}}


def v1_for_seed(ctx, setup, seed: int, out: Path) -> SimpleNamespace:
    """V1 under training seed `seed`: the run's own round 1 for the run's seed, else retrained."""
    if seed == ctx.config.train.seed:
        folder = out / f"v1-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        scores = folder / "scores.json"
        if not scores.is_file():
            scores.write_text(json.dumps(score(ctx, setup, setup.round1)))
        metrics = json.loads((Path(setup.round1) / "train_metrics.json").read_text())
        return SimpleNamespace(**json.loads(scores.read_text()), tokens=metrics["tokens"], samples=len(setup.v1),
                               adapter=setup.round1)
    got = train_and_score(ctx, setup, setup.v1, seed, out / f"v1-{seed}", None)
    got.adapter = str(out / f"v1-{seed}" / "adapter")
    return got


def localise_failures(ctx, setup, v1) -> list:
    """The Debugger's diagnoses of V1's failed dev items (nodes.diagnose.localise, its ledger and probes)."""
    from pwd_agent.nodes.diagnose import localise

    judge = SimpleNamespace(kind="-", evidence={}, confidence=0.5)
    probes_of = defaultdict(list)
    for p in setup.probes:
        probes_of[setup.statements[p.node_id].chain_id].append(p)
    passed = {p.id: v1.probes.get(str(p.node_id), False) for p in setup.probes}
    out = []
    with session_scope(ctx.db_url) as s:
        for item in setup.items:
            ok, _, predicted = v1.items[str(item.id)]
            if item.split != "dev" or ok:
                continue
            result = SimpleNamespace(predicted=predicted)
            d = localise(s, 1, item, result, probes_of[item.chain_id], passed, judge, setup.ledger)
            out.append(SimpleNamespace(item_id=item.id, kind=d.kind, statement_ids=list(d.statement_ids),
                                       nodes=d.evidence["nodes"]))
    return out


def key_statements(item) -> list[int]:
    return [st for st, kind in zip(item.option_statements, item.option_kinds) if kind == "key" and st is not None]


def arm_nodes(setup, v1, diagnoses, seed: int, multiples: list[int]) -> dict[str, list[int]]:
    """Each arm's statement draws, the same count B for all (K x B for random-node-xK; a statement may
    repeat in wrong-target when fewer than B probes pass)."""
    rng = random.Random(f"arms:{seed}")
    targeted = list(dict.fromkeys(sid for d in diagnoses if d.kind != "item_suspect" for sid in d.statement_ids))
    budget = len(targeted)
    every = sorted(setup.statements)
    untaught = [sid for sid in every if sid not in setup.taught and sid in setup.tested]
    failed = {d.item_id for d in diagnoses}
    keys = list(dict.fromkeys(sid for i in setup.items if i.id in failed for sid in key_statements(i)))
    passing = [sid for sid in every if v1.probes.get(str(sid))]
    oracle, fill = [], random.Random(f"oracle-fill:{seed}")
    # What a perfect Debugger would dose, in order, until the budget is spent: the untaught statements
    # the failed items need, the other untaught ones of the tested chains, then the taught ones the
    # failed items need whose probes fail, then any failing probe (of the tested chains first); so the
    # oracle spends the same budget as the other arms. (The fill has its own generator, so the other
    # arms' draws do not depend on it.)
    for draw, pool in ((rng, [k for k in keys if k not in setup.taught]), (rng, untaught),
                       (fill, [k for k in keys if k not in passing]),
                       (fill, [s for s in every if s not in passing and s in setup.tested]),
                       (fill, [s for s in every if s not in passing])):
        fresh = [sid for sid in pool if sid not in oracle]
        oracle += draw.sample(fresh, min(budget - len(oracle), len(fresh)))
    # The draws' order is part of every kept arm's identity: random-node, then wrong-target, then the
    # multiples, from the one generator (a new draw goes last or takes a generator of its own).
    random_node = rng.sample(every, min(budget, len(every)))
    wrong = rng.sample(passing, min(budget, len(passing)))
    if wrong:  # fewer passing statements than the budget: draw some twice, so the arm spends it all
        wrong += random.Random(f"wrong-fill:{seed}").choices(passing, k=budget - len(wrong))
    out = {"targeted": targeted, "random-node": random_node, "oracle": oracle, "wrong-target": wrong, "none": []}
    for k in multiples:
        out[f"random-node-x{k}"] = rng.sample(every, min(k * budget, len(every)))
    return out


def node_dose(cfg, setup, sid: int, draws: int = 1, form: str | None = None) -> list:
    """One statement's dose as every arm writes it, before the leakage gate: builder.patch_exposures at
    train.epochs per draw, V1's wordings left out where V1 taught it, in `form` (default
    builder.patch_wordings)."""
    from pwd_agent.recipes import dose_samples

    b, epochs = cfg.builder, cfg.train.epochs
    per_node = math.ceil((b.patch_exposures or 6 * epochs) / epochs)
    st = setup.statements[sid]
    used = b.paraphrases if sid in setup.taught else 0
    return dose_samples(setup.chains[st.chain_id], st, per_node * draws, used, form or b.patch_wordings)


def write_patch(ctx, setup, nodes: list[int]) -> tuple[list, int]:
    """The same writer for every arm (node_dose per drawn statement), then the leakage gate.
    (samples, dropped by the gate)."""
    from pwd_agent.leakage import gate_samples, load_gate

    b = ctx.config.builder
    with session_scope(ctx.db_url) as s:
        gate = load_gate(s, b.leakage_ngram, b.leakage_threshold)
    samples, dropped = [], 0
    for sid, draws in Counter(nodes).items():
        drafts = node_dose(ctx.config, setup, sid, draws)
        kept, leaked = gate_samples(gate, drafts, "patch", setup.statements[sid].chain_id)
        samples += kept
        dropped += len(leaked)
    return samples, dropped


def replay(ctx, setup, n_patch: int, seed: int) -> list:
    """The V1 samples trained beside the patches: a patch_fraction share of V1 when continuing from V1's
    adapter (the same draw for every arm of a seed), all of V1 when training from the base."""
    if ctx.config.train.repair_from == "base":
        return list(setup.v1)
    pf = ctx.config.builder.patch_fraction
    wanted = min(len(setup.v1), round(n_patch * (1 - pf) / pf))
    return random.Random(f"replay:{seed}").sample(setup.v1, wanted)


def acc(setup, got, split: str, where=None) -> float | None:
    mine = [got.items[str(i.id)][0] for i in setup.items if i.split == split and (where is None or where(i))]
    return round(statistics.mean(mine), 4) if mine else None


def untaught_key(setup):
    return lambda i: any(sid not in setup.taught for sid in key_statements(i))


def paired(setup, results, arm: str, other: str, seeds: list[int], split: str = "holdout") -> dict:
    """One-sided: `arm` above `other`. McNemar over (item, seed) pairs; sign test on seed-averaged outcomes."""
    from pwd_agent.stats import exact_mcnemar_p

    idx = [str(i.id) for i in setup.items if i.split == split]
    pairs = [(results[(arm, s)].items[k][0], results[(other, s)].items[k][0]) for s in seeds for k in idx]
    wins, losses = sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)
    diff = [statistics.mean(results[(arm, s)].items[k][0] - results[(other, s)].items[k][0] for s in seeds)
            for k in idx]
    up, down = sum(d > 0 for d in diff), sum(d < 0 for d in diff)
    return {"wins": wins, "losses": losses, "p": float(f"{exact_mcnemar_p(wins, losses):.3g}"),
            "items_up": up, "items_down": down, "items_p": float(f"{exact_mcnemar_p(up, down):.3g}")}


def churn(setup, out: Path) -> dict:
    """V1 against V1 across training seeds on the holdout (every V1 seed scored so far in `out`, also
    those of an interrupted bench): the items that flip with the seed alone, the noise floor."""
    idx = [str(i.id) for i in setup.items if i.split == "holdout"]
    scored = {int(f.parent.name.split("-")[1]): json.loads(f.read_text())["items"]
              for f in sorted(out.glob("v1-*/scores.json"))}
    return {f"{a}-{b}": {"flipped": sum(scored[a][k][0] != scored[b][k][0] for k in idx), "of": len(idx),
                         "holdout_acc": [acc_of(scored[a], idx), acc_of(scored[b], idx)]}
            for a in scored for b in scored if a < b}


def acc_of(items: dict, idx: list[str]) -> float:
    return round(statistics.mean(items[k][0] for k in idx), 4)


def detectable(discordant: int, n_items: int) -> dict:
    """With `discordant` items that differ between two arms, the fewest of them that must go one way for
    the one-sided sign test to reach ALPHA, as a net item count and a share of the `n_items` items."""
    from pwd_agent.stats import exact_mcnemar_p

    d = max(discordant, 1)
    w = next((w for w in range(d + 1) if exact_mcnemar_p(w, d - w) < ALPHA), None)
    if w is None:  # too few discordant items for any split to be significant: all of them, and more
        w = next(k for k in range(1, 64) if exact_mcnemar_p(k, 0) < ALPHA)
        return {"discordant": discordant, "net_items": w, "accuracy": round(w / max(n_items, 1), 3)}
    return {"discordant": discordant, "net_items": 2 * w - d, "accuracy": round((2 * w - d) / max(n_items, 1), 3)}


def trace(setup, diagnoses, v1, after, samples_per_node: Counter, epochs: float) -> list[dict]:
    """Per failed dev item under the targeted arm: diagnosis -> nodes -> patch samples -> exposures ->
    probe before/after -> item before/after, and the first broken link."""
    rows, items = [], {i.id: i for i in setup.items}
    for d in diagnoses:
        nodes = []
        for sid in d.statement_ids:
            before_exp = sum(setup.ledger.get(("statement", sid), {}).values())
            nodes.append({"statement": sid, "samples": samples_per_node[sid],
                          "exposures": [before_exp, before_exp + samples_per_node[sid] * epochs],  # replay not counted
                          "probe": [v1.probes.get(str(sid)), after.probes.get(str(sid))]})
        (_, mass_before, chose_before), (fixed, mass_after, chose_after) = (v1.items[str(d.item_id)],
                                                                             after.items[str(d.item_id)])
        chose = [chosen_kind(items[d.item_id], chose_before), chosen_kind(items[d.item_id], chose_after)]
        if fixed:
            link = "fixed"
        elif not nodes:
            link = "nothing located"
        elif any(n["samples"] == 0 for n in nodes):
            link = "a located node got no sample (leakage gate)"
        elif any(not n["probe"][1] for n in nodes):
            link = "dose did not teach: a located node still fails its probe"
        else:
            link = "probes pass, item still fails: " + composition_link(mass_before, mass_after,
                                                                         chose_before == chose_after)
        rows.append({"item": d.item_id, "diagnosis": d.kind, "nodes": nodes, "passed": [False, fixed],
                     "key_mass": [round(mass_before, 4), round(mass_after, 4)], "chose": chose, "link": link})
    return rows


def chosen_kind(item, predicted: str) -> str:
    """The kind of the option the student picked (key, wrong_order, skipped_step, ...): its first letter's."""
    return item.option_kinds["ABCD".index(predicted.split(",")[0])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="examples/budget.yaml")
    parser.add_argument("--corpus", default=None, help="Another corpus folder for the setup run (e.g. a generated "
                        "world: bench/make_world.py).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--multiples", type=int, nargs="*", default=[], help="random-node-xK arms.")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="Config override for the setup run.")
    parser.add_argument("--run-id", default=None, help="A run already through round 1 (V1 trained and scored).")
    parser.add_argument("--repair-from", choices=["base", "previous"], default=None,
                        help="Override the run's train.repair_from for the arms (V1 is shared by both regimes).")
    parser.add_argument("--test-share", type=float, default=1.0,
                        help="Keep the items of only this seeded share of the chains; the arms still draw from the "
                        "whole KB (default 1: every chain tested).")
    parser.add_argument("--patch-fraction", type=float, default=None,
                        help="Override the run's builder.patch_fraction (the patches' share under repair_from "
                        "previous; the rest is replay of V1).")
    parser.add_argument("--patch-wordings", choices=["both", "forward", "contrast", "text"], default=None,
                        help="Override the run's builder.patch_wordings for every arm's patches (each form's arms "
                        "are kept in a folder of their own).")
    args = parser.parse_args()
    # In the order asked (a first arm answers first); V1 (none) always.
    arms = ["none", *dict.fromkeys(a for a in args.arms if a != "none")]
    run_id = args.run_id or f"repair-arms-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.run_id is None:
        prepare(args.config, run_id, args.corpus, args.sets)
    ctx = open_run(run_id)
    if ctx.config.builder.patch_exposures is None:
        sys.exit("builder.patch_exposures is unset: the arms need a stated dose per node (e.g. --set "
                 "builder.patch_exposures=54 on the setup run, or a config that sets it)")
    if args.repair_from:
        ctx.config.train.repair_from = args.repair_from
    if args.patch_fraction:
        ctx.config.builder.patch_fraction = args.patch_fraction
    if args.patch_wordings:
        ctx.config.builder.patch_wordings = args.patch_wordings
    if not 0 < args.test_share <= 1:
        sys.exit(f"--test-share {args.test_share}: give a share in (0, 1]")
    setup = load_setup(ctx, args.test_share)
    out = arms_root(ctx.run_dir, args.test_share)
    arms_dir = out / regime(ctx.config)
    epochs = ctx.config.train.epochs
    results, rows, traces, local = {}, [], [], []
    for seed in args.seeds:
        v1 = v1_for_seed(ctx, setup, seed, out)
        results[("none", seed)] = v1
        diagnoses = localise_failures(ctx, setup, v1)
        nodes = arm_nodes(setup, v1, diagnoses, seed, args.multiples)
        if not nodes["targeted"]:
            sys.exit(f"seed {seed}: V1 failed no dev item the Debugger could locate: no budget to compare arms at")
        located = set(nodes["targeted"])
        needed = {sid for d in diagnoses for i in setup.items if i.id == d.item_id for sid in key_statements(i)
                  if sid not in setup.taught}
        local.append({"seed": seed, "failed_dev": len(diagnoses), "located": len(located),
                      "kinds": dict(Counter(d.kind for d in diagnoses)),
                      "precision_untaught": round(len(located - setup.taught) / max(len(located), 1), 3),
                      "recall_needed": round(len(located & needed) / max(len(needed), 1), 3),
                      # where the Debugger located exactly the oracle's statements, the two arms train the
                      # same samples in another order: their difference is then order noise, not targeting
                      "oracle_overlap": round(len(located & set(nodes["oracle"])) / max(len(located), 1), 3)})
        print(f"# seed {seed}: {json.dumps(local[-1])}; nodes per arm "
              f"{ {k: len(v) for k, v in nodes.items()} }", file=sys.stderr, flush=True)
        for name in [a for a in arms if a != "none"] + [f"random-node-x{k}" for k in args.multiples]:
            samples, dropped = write_patch(ctx, setup, nodes[name])
            mix = samples + replay(ctx, setup, len(samples) or 1, seed)
            init = v1.adapter if ctx.config.train.repair_from == "previous" else None
            got = train_and_score(ctx, setup, mix, seed, arms_dir / f"{name}-{seed}", init)
            results[(name, seed)] = got
            if name == "targeted":
                counts = Counter(sid for x in samples for sid in x.statement_ids)
                traces += [dict(t, seed=seed) for t in trace(setup, diagnoses, v1, got, counts, epochs)]
            rows.append({"arm": name, "seed": seed, "nodes": len(nodes[name]), "patch_samples": len(samples),
                         "gate_dropped": dropped, "samples": len(mix), "loss_tokens": got.tokens,
                         "dosed_needed": round(len(set(nodes[name]) & needed) / max(len(needed), 1), 3)})
        for name in ["none", *[r["arm"] for r in rows if r["seed"] == seed]]:
            got = results[(name, seed)]
            row = next((r for r in rows if r["arm"] == name and r["seed"] == seed), None)
            if row is None:
                row = {"arm": name, "seed": seed, "nodes": 0, "patch_samples": 0, "gate_dropped": 0, "samples": 0,
                       "loss_tokens": 0, "dosed_needed": 0.0}
                rows.append(row)
            row |= scores_of(setup, got)
            print(json.dumps(row), flush=True)
    (arms_dir / "trace.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traces))
    print(json.dumps(summarise(setup, results, rows, local, traces, args.seeds, ctx, run_id, out)))


def regime(cfg) -> str:
    """The arms' folder name: one per repair regime, so regimes never reuse each other's kept scores."""
    form = "" if cfg.builder.patch_wordings == "both" else f"-{cfg.builder.patch_wordings}"
    if cfg.train.repair_from == "base":
        return f"base{form}"
    return f"previous-pf{cfg.builder.patch_fraction:g}{form}"


def scores_of(setup, got) -> dict:
    """One arm and seed: accuracies, split by what V1 taught, and the untaught statements' probe pass rate."""
    untaught = [sid for sid in setup.tested if sid not in setup.taught]
    probes = [got.probes[str(sid)] for sid in untaught if str(sid) in got.probes]
    return {"dev_acc": acc(setup, got, "dev"), "holdout_acc": acc(setup, got, "holdout"),
            "holdout_untaught_acc": acc(setup, got, "holdout", untaught_key(setup)),
            "holdout_taught_acc": acc(setup, got, "holdout", lambda i: not untaught_key(setup)(i)),
            "untaught_probe_pass": round(statistics.mean(probes), 4) if probes else None}


def summarise(setup, results, rows, local, traces, seeds, ctx, run_id, out: Path) -> dict:
    from pwd_agent.baselines import split_baselines

    with session_scope(ctx.db_url) as s:
        floors = {k: (round(b.chance, 4), round(b.best_constant, 4))
                  for k, b in split_baselines(s, ctx.config.tests.one_key).items() if b}
    names = list(dict.fromkeys(r["arm"] for r in rows))
    means = {}
    for name in names:
        mine = [r for r in rows if r["arm"] == name]
        means[name] = {k: round(statistics.mean(r[k] for r in mine), 4) for k in mine[0]
                       if k not in ("arm", "seed") and all(r[k] is not None for r in mine)}
    tokens = means.get("targeted", {}).get("loss_tokens")  # the reference arm, when it ran
    holdout = [i for i in setup.items if i.split == "holdout"]
    summary = {
        "run_id": run_id, "seeds": seeds, "regime": regime(ctx.config),
        "v1_budget": ctx.config.builder.v1_budget, "patch_exposures": ctx.config.builder.patch_exposures,
        "statements": len(setup.statements), "taught": len(setup.taught), "tested": len(setup.tested),
        "items": {"dev": sum(i.split == "dev" for i in setup.items), "holdout": len(holdout),
                  "holdout_untaught_key": sum(untaught_key(setup)(i) for i in holdout)},
        "baselines (chance, best constant)": floors, "arms": means,
        "loss_tokens_vs_targeted": {n: round(m["loss_tokens"] / tokens, 3) for n, m in means.items()
                                    if n != "none" and tokens},
        "targeted vs": {n: paired(setup, results, "targeted", n, seeds) for n in names
                        if n != "targeted" and "targeted" in names},
        "vs none": {n: paired(setup, results, n, "none", seeds) for n in names if n != "none"},
        "oracle vs random-node": (paired(setup, results, "oracle", "random-node", seeds)
                                  if "oracle" in names and "random-node" in names else None),
        "V1 churn across seeds (holdout)": churn(setup, out),
        "detectable (targeted vs random-node, holdout items)": (
            detectable(sum(paired(setup, results, "targeted", "random-node", seeds)[k]
                           for k in ("items_up", "items_down")), len(holdout))
            if {"targeted", "random-node"} <= set(names) else None),
        "localisation": local,
        "trace links (targeted)": dict(Counter(t["link"] for t in traces)),
    }
    summary["verdict"] = verdict(summary)
    summary["sample_efficiency"] = efficiency(means)
    return summary


def verdict(summary: dict) -> str:
    ovr = summary["oracle vs random-node"]
    if ovr is None:
        return "no oracle or random-node arm: no verdict"
    def said(t: dict) -> str:
        return f"holdout items {t['items_up']} up / {t['items_down']} down, sign test p {t['items_p']}"

    if ovr["items_p"] >= ALPHA:
        oracle_hit, random_hit = (summary["arms"].get(n, {}).get("dosed_needed") for n in ("oracle", "random-node"))
        why = ("even the oracle's patches do not move enough holdout items here (the dose, the writer, too few "
               "items, or taught items broken on the way: see the probes and the taught/untaught split)")
        if oracle_hit and random_hit is not None and random_hit >= oracle_hit / 2:
            why += (f", and random-node doses {random_hit:.0%} of the statements the failed items need (the "
                    f"oracle {oracle_hit:.0%}), so the two can hardly differ: test fewer chains (--test-share)")
        return (f"inconclusive: the oracle does not beat random-node ({said(ovr)}): {why}, so targeting cannot "
                f"be judged")
    t = summary["targeted vs"].get("random-node")
    if t is None:
        return f"the oracle beats random-node ({said(ovr)}); no targeted arm ran"
    if t["items_p"] < ALPHA:
        return f"targeted beats random-node ({said(t)})"
    return f"the oracle beats random-node, targeted does not ({said(t)})"


def efficiency(means: dict) -> str:
    """The smallest random-node arm whose accuracy on the untaught-key holdout items reaches targeted's:
    the read pool_arms.efficiency makes, with its sign tests and the oracle gate, over runs and seeds."""
    if "targeted" not in means:
        return "no targeted arm ran"
    key = "holdout_untaught_acc"
    goal, n = means["targeted"][key], means["targeted"]["patch_samples"]
    matched = sorted((m["patch_samples"], name) for name, m in means.items()
                     if name.startswith("random-node") and m[key] >= goal)
    if not matched:
        return (f"no random-node arm reached targeted's untaught-key accuracy {goal} ({n} patch samples; "
                "bench/pool_arms.py gives the sign tests)")
    samples, name = matched[0]
    return f"{name} ({samples} patch samples) matches targeted ({n} patch samples) on untaught-key accuracy"


if __name__ == "__main__":
    main()
