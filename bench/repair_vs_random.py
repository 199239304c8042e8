"""Do targeted patches beat the same number of random samples? Equal budgets, several seeds, paired tests.

    python bench/repair_vs_random.py -c examples/invented.yaml --seeds 0 1 2 [--multiples 2 4] [--set k=v ...]
                                     [--run-id ID] [--repair-size patches|v1|v1+patches|N]

From one run's V1 round (round 1) and its diagnoses and patches, round 2 is trained several ways,
from the base model as every round is, once per training seed:
  targeted   the Debugger's patch samples + the replay (what a run does)
  random     as many V1 samples drawn at random as there are patch samples + the same replay
             (the same sample budget: the arms differ only in which samples fill the patch slots)
  random-xK  K times as many random V1 samples + the same replay (`--multiples`): how many random
             samples it takes to match the targeted ones (the sample-efficiency ratio)
  replay     the replay alone (what the patch slots add at all)
The draws depend on the seed, so every arm and seed is its own training. Each is scored on every
item of both splits with the run's scorer (`eval.scorer`).

Paired tests, one-sided, per split, of targeted against each other arm, on the same items: an
exact McNemar test on the items' exact-set passes pooled over seeds (an item x seed is one pair),
and, for the options scorer, a sign test on each item's mass on the keys averaged over seeds. The
holdout split is the one that counts: the Debugger never read it. Without --run-id the config is
first run up to the gate before round 2's training (the KB, tests, V1 round, diagnoses, patches),
so the setup is a real run. Prints one JSON line per arm and seed, then a summary and a Markdown
table; the README quotes the table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from sqlmodel import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import train_once  # noqa: E402 (bench/common.py, beside this script)
from pwd_agent.runs import open_run  # noqa: E402
from pwd_agent.store import Diagnosis, ItemResult, Round, RoundSample, Sample, TestItem, session_scope  # noqa: E402

STORED = {"base": 0, "V1": 1}  # the setup run's own rounds, scored by the run itself: the reference arms


def prepare(config: str, run_id: str, sets: list[str]) -> None:
    """The config's run up to the before_train gate of round 2: patches written, nothing trained on them."""
    cmd = [str(Path(sys.executable).with_name("pwd-agent")), "run", "-c", config, "--run-id", run_id, "-q",
           *[arg for s in sets for arg in ("--set", s)],
           "--set", "loop.max_rounds=2", "--set", "loop.goal=1.0", "--set", "gates.before_train=true"]
    code = subprocess.run(cmd).returncode
    if code != 6:
        sys.exit(f"expected the run to wait at the before_train gate (exit 6), got {code}")


def arms(ctx, seed: int, multiples: list[int], wanted: list[str], repair_size=None) -> dict[str, list]:
    """Round 2's training sets; `seed` varies which random samples are drawn. With `repair_size` (a
    `builder.repair_size` other than the run's), round 2's set is composed afresh and not stored, so one
    setup run serves several sizes."""
    out = round_two(ctx, repair_size)
    patches, replay, v1 = out["patch"], out["replay"], out["v1"]
    rng = random.Random(f"random-arm:{seed}")
    out = {"targeted": patches + replay, "random": rng.sample(v1, min(len(patches), len(v1))) + replay}
    for k in multiples:
        out[f"random-x{k}"] = rng.sample(v1, min(k * len(patches), len(v1))) + replay
    out["replay"] = replay
    out = {name: samples for name, samples in out.items() if name in wanted or name.startswith("random-x")}
    print(f"# {len(patches)} patch samples, {len(replay)} replay samples, {len(v1)} V1 samples", file=sys.stderr)
    return out


def round_two(ctx, repair_size=None) -> dict[str, list[SimpleNamespace]]:
    """Round 2's patch and replay samples (replay = every other role) and all V1 samples. The run's own set
    is composed and stored as the train node would; another `repair_size`'s is composed in a transaction
    that is rolled back."""
    from sqlmodel import Session, delete

    from pwd_agent.nodes.train import compose_training_set
    from pwd_agent.store.db import get_engine

    size = ctx.config.builder.repair_size if repair_size is None else repair_size
    with Session(get_engine(ctx.db_url), expire_on_commit=False) as s:
        if s.get(Round, 2) is None:  # the run waits before round 2's train node made its row
            s.add(Round(id=2))
            s.flush()
        if repair_size is not None:
            s.exec(delete(RoundSample).where(RoundSample.round_id == 2))
        compose_training_set(s, 2, ctx.config.builder.patch_fraction, ctx.config.builder.seed, size)  # idempotent
        roles = {m.sample_id: m.role for m in s.exec(select(RoundSample).where(RoundSample.round_id == 2)).all()}
        samples = [SimpleNamespace(id=x.id, prompt=x.prompt, answer=x.answer, origin=x.origin,
                                   statement_ids=x.statement_ids)
                   for x in s.exec(select(Sample).order_by(Sample.id)).all()]
        if repair_size is None:
            s.commit()
        else:
            s.rollback()
    return {"patch": [x for x in samples if roles.get(x.id) == "patch"],
            "replay": [x for x in samples if roles.get(x.id) not in (None, "patch")],
            "v1": [x for x in samples if x.origin == "v1"]}


def train_and_score(ctx, samples: list[Sample], seed: int, folder: Path, items: list[TestItem]) -> tuple[list, float]:
    """Train from the base on `samples` with training seed `seed`; every item's prediction; seconds.
    Resumable: an arm whose adapter was trained from the same job and data is not trained again, one
    whose scores are saved (preds.jsonl) is not scored again, so a stopped bench picks up where it was."""
    from pwd_agent.evaluation.loader import loaded_evaluator, score_test_items

    folder.mkdir(parents=True, exist_ok=True)
    scores = folder / "preds.jsonl"
    if scores.is_file():
        return [SimpleNamespace(**json.loads(line)) for line in scores.read_text().splitlines()], 0.0
    start = time.time()
    rows = "".join(json.dumps({"id": x.id, "prompt": x.prompt, "answer": x.answer, "statements": x.statement_ids})
                   + "\n" for x in samples)
    (folder / "train.jsonl").write_text(rows)
    train_once(ctx.config, folder / "train.jsonl", folder, seed)
    with loaded_evaluator(ctx, str(folder / "adapter")) as evaluator:
        preds = score_test_items(evaluator, ctx.config, items)
    scores.write_text("".join(json.dumps({"item_id": i.id, "passed": p.passed, "mass": p.mass}) + "\n"
                              for i, p in zip(items, preds)))
    return preds, time.time() - start


def stored_preds(session, round_id: int, items: list[TestItem]) -> list:
    """A round's stored per-item results, in `items` order (the run scored them with its own scorer)."""
    got = {r.item_id: r for r in session.exec(select(ItemResult).where(ItemResult.round_id == round_id)).all()}
    missing = [i.id for i in items if i.id not in got]
    if missing:
        sys.exit(f"round {round_id} has no stored result for items {missing[:5]}: is the run past round 1's "
                 "evaluation? Run it to round 2's before_train gate (the bench does this without --run-id)")
    return [SimpleNamespace(passed=got[i.id].passed, mass=got[i.id].mass) for i in items]


def split_scores(items: list[TestItem], preds: list, reached: set[int] = frozenset()) -> dict:
    """Accuracy and mass per split; with `reached` (the diagnosed items' chains) also the holdout accuracy on
    those chains (where a patch can reach) and elsewhere (where only replay and forgetting act)."""
    out = {}
    for split in ("dev", "holdout"):
        mine = [p for i, p in zip(items, preds) if i.split == split]
        out[f"{split}_acc"] = round(statistics.mean(p.passed for p in mine), 4)
        masses = [p.mass for p in mine if p.mass is not None]
        out[f"{split}_mass"] = round(statistics.mean(masses), 4) if masses else None
    for where, inside in (("reached", True), ("elsewhere", False)):
        mine = [p.passed for i, p in zip(items, preds) if i.split == "holdout" and (i.chain_id in reached) == inside]
        if reached and mine:
            out[f"holdout_{where}_acc"] = round(statistics.mean(mine), 4)
    return out


def significant(p: float) -> float:
    """A p-value to 3 significant figures (rounding to decimals printed 1e-6 as 0.0)."""
    return float(f"{p:.3g}")


def paired(items: list[TestItem], results: dict, arm: str, other: str, seeds: list[int], split: str) -> dict:
    """Targeted-style arm `arm` against `other`: McNemar over (item, seed) pairs, sign test on mean mass."""
    from pwd_agent.stats import exact_mcnemar_p

    idx = [k for k, i in enumerate(items) if i.split == split]
    wins = sum(results[(arm, s)][k].passed and not results[(other, s)][k].passed for s in seeds for k in idx)
    losses = sum(results[(other, s)][k].passed and not results[(arm, s)][k].passed for s in seeds for k in idx)
    out = {"wins": wins, "losses": losses, "p": significant(exact_mcnemar_p(wins, losses))}
    if all(results[(arm, s)][k].mass is not None for s in seeds for k in idx):
        diff = [statistics.mean(results[(arm, s)][k].mass - results[(other, s)][k].mass for s in seeds) for k in idx]
        up, down = sum(d > 0 for d in diff), sum(d < 0 for d in diff)
        out |= {"mass_up": up, "mass_down": down, "mass_p": significant(exact_mcnemar_p(up, down))}
    return out


def main() -> None:
    from pwd_agent.baselines import split_baselines

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="examples/invented.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--multiples", type=int, nargs="*", default=[], help="Random arms K x the patch count.")
    parser.add_argument("--arms", nargs="+", default=["targeted", "random", "replay"],
                        choices=["targeted", "random", "replay"], help="Arms to train (targeted always first).")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="Config override for the setup run.")
    parser.add_argument("--run-id", default=None, help="A run waiting at round 2's before_train gate.")
    parser.add_argument("--repair-size", default=None, type=lambda v: int(v) if v.isdigit() else v,
                        help="Compose round 2 with this builder.repair_size (patches | v1 | v1+patches | N) "
                             "instead of the run's; its arms are kept in their own folders (ARM-SIZE-SEED).")
    args = parser.parse_args()
    args.arms = ["targeted", *[a for a in args.arms if a != "targeted"]]  # the arm every other is tested against
    run_id = args.run_id or f"repair-vs-random-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.run_id is None:
        prepare(args.config, run_id, args.sets)
    ctx = open_run(run_id)
    with session_scope(ctx.db_url) as s:
        items = list(s.exec(select(TestItem).order_by(TestItem.id)).all())
        floors = {k: (round(b.chance, 4), round(b.best_constant, 4), round(b.mass_chance, 4))
                  for k, b in split_baselines(s, ctx.config.tests.one_key).items() if b}
        stored = {name: stored_preds(s, round_id, items) for name, round_id in STORED.items()}
        diagnosed = set(s.exec(select(Diagnosis.item_id).where(Diagnosis.round_id == 1)).all())
        reached = {i.chain_id for i in items if i.id in diagnosed}
    results, rows = {}, []
    for name, preds in stored.items():  # one scoring per item, the same in every seed's pair
        results |= {(name, seed): preds for seed in args.seeds}
    for seed in args.seeds:
        for name, samples in arms(ctx, seed, args.multiples, args.arms, args.repair_size).items():
            folder = f"{name}-{seed}" if args.repair_size is None else f"{name}-{args.repair_size}-{seed}"
            preds, seconds = train_and_score(ctx, samples, seed, ctx.run_dir / "repair_vs_random" / folder, items)
            results[(name, seed)] = preds
            row = {"arm": name, "seed": seed, "samples": len(samples), **split_scores(items, preds, reached),
                   "seconds": round(seconds)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    names = list(dict.fromkeys(r["arm"] for r in rows))
    summary = {"run_id": run_id, "seeds": args.seeds,
               "repair_size": args.repair_size or ctx.config.builder.repair_size,
               "baselines (chance, best constant, mass chance)": floors,
               "stored rounds": {name: split_scores(items, preds, reached) for name, preds in stored.items()},
               "holdout items on the diagnosed chains": sum(i.split == "holdout" and i.chain_id in reached
                                                           for i in items),
               "arms": {}, "targeted vs": {}, "vs V1": {}}
    for name in names:
        mine = [r for r in rows if r["arm"] == name]
        summary["arms"][name] = {"samples": mine[0]["samples"], **{
            key: round(statistics.mean(r[key] for r in mine), 4) for key in mine[0]
            if key.endswith(("_acc", "_mass")) and mine[0][key] is not None}}
    for other in [*names[1:], "base"]:  # against V1: "vs V1" below
        summary["targeted vs"][other] = {split: paired(items, results, "targeted", other, args.seeds, split)
                                         for split in ("dev", "holdout")}
    for name in names:  # did the repair round move past the round it repairs (the paper's V1 -> V2)?
        summary["vs V1"][name] = {split: paired(items, results, name, "V1", args.seeds, split)
                                  for split in ("dev", "holdout")}
    # The V1 round's own gain over the base (one seed's pairs: both are the run's single stored scoring).
    summary["V1 vs base"] = {split: paired(items, results, "V1", "base", args.seeds[:1], split)
                             for split in ("dev", "holdout")}
    summary["sample_efficiency"] = efficiency(summary["arms"])
    print(json.dumps(summary))
    print(table(summary))


def efficiency(arms_mean: dict) -> str:
    """The smallest random arm whose mean holdout score (mass, else accuracy) reaches targeted's."""
    key = "holdout_mass" if "holdout_mass" in arms_mean["targeted"] else "holdout_acc"
    goal, n = arms_mean["targeted"][key], arms_mean["targeted"]["samples"]
    matched = [(a["samples"], name) for name, a in arms_mean.items() if name.startswith("random") and a[key] >= goal]
    if not matched:
        return f"no random arm reached targeted's {key} {goal} (largest tried: see arms)"
    samples, name = min(matched)
    return f"{name} ({samples} samples) matches targeted ({n} samples) on {key}"


def table(summary: dict) -> str:
    """The README's table: the stored rounds, then each trained arm; holdout tests against targeted and V1."""
    def dash(x):
        return "-" if x is None else x

    def test(vs: dict | None) -> str:
        if not vs:
            return "-"
        return (f"{vs['wins']}/{vs['losses']}, p {vs['p']}; "
                f"{vs.get('mass_up', '-')}/{vs.get('mass_down', '-')}, p {vs.get('mass_p', '-')}")

    lines = ["| arm | samples | dev acc | holdout acc | holdout acc, diagnosed chains / elsewhere | dev mass "
             "| holdout mass | targeted vs arm, holdout (wins/losses, p; mass up/down, p) | arm vs V1, holdout |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [*[(f"{name} (stored round {STORED[name]})", "-", a) for name, a in summary["stored rounds"].items()],
            *[(name, a["samples"], a) for name, a in summary["arms"].items()]]
    for label, samples, a in rows:
        name = label.split(" ")[0]
        lines.append(f"| {label} | {samples} | {a.get('dev_acc')} | {a.get('holdout_acc')} "
                     f"| {dash(a.get('holdout_reached_acc'))} / {dash(a.get('holdout_elsewhere_acc'))} "
                     f"| {dash(a.get('dev_mass'))} | {dash(a.get('holdout_mass'))} "
                     f"| {test(summary['targeted vs'].get(name, {}).get('holdout'))} "
                     f"| {test(summary['vs V1'].get(name, {}).get('holdout'))} |")
    floors = summary["baselines (chance, best constant, mass chance)"]
    lines.append("| chance / best constant | | " + " | ".join(
        f"{floors[k][0]} / {floors[k][1]}" if k in floors else "-" for k in ("dev", "holdout")) + " | | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
