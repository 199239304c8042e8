"""Pool the repair arms of several worlds into one paired test on all their holdout items.

    python bench/pool_arms.py arms-w11:base arms-w23:base arms-w41:previous-pf0.7:0.25 [--seeds 0 1]
    python bench/pool_arms.py arms-w41:previous-pf0.7-text:0.25:1,2 arms-w59:previous-pf0.7-text:0.25:0

Each argument is a run the repair bench (`bench/repair_arms.py`) has scored, the arms' regime
folder under its repair_arms/ (base, previous-pf0.7), the bench's --test-share when it was not 1,
and optionally that run's own seeds (comma-separated; otherwise --seeds). For every pair of arms,
each holdout item's outcome is averaged over the seeds both arms have, then items of all runs are
pooled into one one-sided sign test (items up vs down), on all holdout items, on those whose key
rests on a statement V1 did not teach, and on the rest. Worlds are independent, so pooling adds
power the 40 items of one world lack; arms missing in a run are left out of that run's pairs. The
random-node-xK arms a run holds (`repair_arms.py --multiples K`) are pooled like the others, so
"targeted vs random-node-x2" reads the sample-efficiency ratio off the items; the ratio itself (the
smallest K whose random-node arm is not below targeted on the untaught-key items) is printed last.
Each arm's accuracy per run (all, untaught-key and taught-key holdout items, over its seeds) is
printed first; --markdown prints all three as the README's tables. --scorer S reads the outcomes
`bench/rescore_arms.py --scorer S` kept beside each arm's (scores-S.json) instead of the repair
bench's own (the options scorer).

A run's arms live in its run folder, which a new checkout does not have; retraining them costs
hours. `--export DIR` writes what the pooled tests read of each run (its holdout items, whether each
key was taught, every arm's per-item outcomes, and the sha256 of each arm's training data and
weights, so a rebuild can check it trained the same) to a small JSON record in DIR, to commit beside the
results (bench/results/); a spec that names such a file pools it like a run:

    python bench/pool_arms.py arms-w83-sa:previous-pf0.7-text:0.25:1 --export bench/results
    python bench/pool_arms.py bench/results/arms-w83-sa_previous-pf0.7-text_0.25.json arms-w59-sa:..."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ARMS = ("oracle", "targeted", "random-node", "wrong-target", "none")


def arm_names(regime_dir: Path) -> list[str]:
    """ARMS, then the random-node-xK arms the regime folder holds (K ascending)."""
    multiples = {int(m.group(1)) for d in (regime_dir.iterdir() if regime_dir.is_dir() else [])
                 if (m := re.fullmatch(r"random-node-x(\d+)-\d+", d.name))}
    return [*ARMS, *(f"random-node-x{k}" for k in sorted(multiples))]


def scores_file(scorer: str) -> str:
    """The repair bench's own outcomes (the options scorer), or those rescore_arms kept under `scorer`."""
    return "scores.json" if scorer == "options" else f"scores-{scorer}.json"


def arm_folder(arms_dir: Path, regime: str, arm: str, seed: int) -> Path:
    """V1's folder for the arm 'none', else the arm's under its regime."""
    return arms_dir / f"v1-{seed}" if arm == "none" else arms_dir / regime / f"{arm}-{seed}"


def arm_scores(arms_dir: Path, regime: str, arm: str, seeds: list[int], scorer: str = "options") -> dict[int, dict]:
    """seed -> the arm's item scores, for the seeds it has (V1's for the arm 'none')."""
    out = {}
    for seed in seeds:
        path = arm_folder(arms_dir, regime, arm, seed) / scores_file(scorer)
        if path.is_file():
            out[seed] = json.loads(path.read_text())["items"]
    return out


def item_diffs(world: dict, a: str, b: str) -> list[tuple[float, bool]]:
    """(seed-averaged outcome of a minus b, key untaught) per holdout item, over the seeds both arms have."""
    seeds = sorted(set(world["scores"][a]) & set(world["scores"][b]))
    if not seeds:
        return []
    return [(statistics.mean(world["scores"][a][s][k][0] - world["scores"][b][s][k][0] for s in seeds), untaught)
            for k, untaught in world["holdout"]]


def sign(diffs: list[float]) -> dict:
    from pwd_agent.stats import exact_mcnemar_p

    up, down = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return {"items": len(diffs), "up": up, "down": down, "p": float(f"{exact_mcnemar_p(up, down):.3g}")}


def parse_spec(spec: str, seeds: list[int]) -> tuple[str, str, float, list[int]]:
    """RUN_ID[:REGIME[:TEST_SHARE[:SEEDS]]] -> (run id, regime, share, seeds); a bad field names the fix."""
    run_id, regime, share, own, *extra = spec.split(":") + ["", "", ""]
    if not run_id or any(extra):
        sys.exit(f"{spec!r}: give RUN_ID[:REGIME[:TEST_SHARE[:SEED,SEED...]]], e.g. arms-w41:previous-pf0.7:0.25:1,2")
    try:
        return (run_id, regime or "base", float(share or 1),
                [int(x) for x in own.split(",")] if own else seeds)
    except ValueError:
        sys.exit(f"{spec!r}: the test share must be a number and the seeds integers separated by commas "
                 "(e.g. arms-w41:previous-pf0.7:0.25:1,2)")


RECORD_VERSION = 1


def load_world(spec: str, seeds: list[int], scorer: str = "options") -> dict:
    """A run's holdout items and its arms' outcomes, from its run folder or from a record --export wrote."""
    if spec.endswith(".json"):
        return load_record(Path(spec), scorer)
    from repair_arms import arms_root, key_statements, load_setup

    from pwd_agent.runs import open_run

    run_id, regime, share, seeds = parse_spec(spec, seeds)
    ctx = open_run(run_id)
    setup = load_setup(ctx, share)
    arms_dir = arms_root(ctx.run_dir, share)
    holdout = [(str(i.id), any(st not in setup.taught for st in key_statements(i)))
               for i in setup.items if i.split == "holdout"]
    scores = {arm: arm_scores(arms_dir, regime, arm, seeds, scorer) for arm in arm_names(arms_dir / regime)}
    return {"run": spec, "holdout": holdout, "scores": scores,
            "digests": digests(ctx, setup, arms_dir, regime, scores)}


def sha256(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def digests(ctx, setup, arms_dir: Path, regime: str, scores: dict) -> dict:
    """arm -> seed -> sha256 of its training data and adapter weights, so a rebuild of the arms (a new
    checkout retrains them) can tell whether it trained the same thing (training is deterministic in one
    environment)."""
    from repair_arms import arm_adapter

    out = {}
    for arm, by_seed in scores.items():
        for seed in by_seed:
            if arm == "none":
                data = Path(ctx.run_dir, "rounds", "01", "train.jsonl") if seed == ctx.config.train.seed else None
                adapter = arm_adapter(ctx, setup, arms_dir, f"v1-{seed}")
            else:
                data = arm_folder(arms_dir, regime, arm, seed) / "train.jsonl"
                adapter = arm_folder(arms_dir, regime, arm, seed) / "adapter"
            out.setdefault(arm, {})[str(seed)] = {"data": data and sha256(data),
                                                 "adapter": sha256(adapter / "adapter_model.safetensors")}
    return out


def record_name(spec: str) -> str:
    """The record's file name: the spec's run, regime and share (its seeds are inside)."""
    run_id, regime, share, _ = parse_spec(spec, [])
    return f"{run_id}_{regime}_{share:g}.json"


def export_record(world: dict, scorer: str, out_dir: Path) -> Path:
    """Write what the pooled tests read of `world` (holdout outcomes only) to out_dir; returns the file."""
    keep = {k for k, _ in world["holdout"]}
    record = {"version": RECORD_VERSION, "run": world["run"], "scorer": scorer,
              "holdout": [[k, untaught] for k, untaught in world["holdout"]],
              "digests": world.get("digests", {}),
              "scores": {arm: {str(seed): {k: v for k, v in items.items() if k in keep}
                               for seed, items in by_seed.items()}
                         for arm, by_seed in world["scores"].items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / record_name(world["run"])
    # arm order is kept (it sets each pair's direction); written whole, then renamed: no half-written record
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def load_record(path: Path, scorer: str) -> dict:
    """A world from a record --export wrote; its scorer must be the one asked."""
    if not path.is_file():
        sys.exit(f"{path}: no such record; write one with --export DIR from a run that holds the arms")
    try:
        record = json.loads(path.read_text())
        if record.get("version") != RECORD_VERSION:
            sys.exit(f"{path}: record version {record.get('version')!r}, this bench reads {RECORD_VERSION}: "
                     "export it again from its run")
        if record["scorer"] != scorer:
            sys.exit(f"{path}: holds the {record['scorer']} scorer's outcomes; pass --scorer {record['scorer']} "
                     "or export the record under the scorer you want")
        return {"run": record["run"], "record": str(path), "digests": record.get("digests", {}),
                "holdout": [(k, bool(u)) for k, u in record["holdout"]],
                "scores": {arm: {int(seed): items for seed, items in by_seed.items()}
                           for arm, by_seed in record["scores"].items()}}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        sys.exit(f"{path}: not a pool_arms record ({err}); export it again with --export DIR")


def accuracies(world: dict, arm: str) -> dict | None:
    """The arm's holdout accuracy over its seeds: on all items, untaught-key and taught-key items."""
    runs = world["scores"][arm]
    if not runs:
        return None
    def acc(keep) -> float | None:
        outcomes = [runs[s][k][0] for s in runs for k, u in world["holdout"] if keep(u)]
        return round(statistics.mean(outcomes), 3) if outcomes else None

    return {"seeds": sorted(runs), "holdout": acc(lambda u: True), "untaught key": acc(lambda u: u),
            "taught key": acc(lambda u: not u)}


def pair_tests(worlds: list[dict]) -> list[dict]:
    """Every pair of arms, its items pooled over the runs: one-sided sign tests on all, untaught-key
    and taught-key items."""
    names = list(dict.fromkeys(arm for w in worlds for arm in w["scores"]))
    tests = []
    for a, b in combinations(names, 2):
        pooled = [d for w in worlds for d in item_diffs(w, a, b)]
        if pooled:
            tests.append({"pair": f"{a} vs {b}", "all": sign([d for d, _ in pooled]),
                          "untaught key": sign([d for d, u in pooled if u]),
                          "taught key": sign([d for d, u in pooled if not u])})
    return tests


def untaught_accuracy(worlds: list[dict], arm: str) -> float | None:
    """The arm's accuracy on the untaught-key items of `worlds`, each item's outcome averaged over the
    arm's seeds first (as the paired tests do)."""
    outcomes = [statistics.mean(w["scores"][arm][s][k][0] for s in w["scores"][arm])
                for w in worlds if w["scores"].get(arm) for k, untaught in w["holdout"] if untaught]
    return round(statistics.mean(outcomes), 3) if outcomes else None


def efficiency(worlds: list[dict], tests: list[dict]) -> dict | None:
    """The sample-efficiency read on the untaught-key items: for random-node at K = 1, 2, 4... times
    targeted's budget, its accuracy beside targeted's and the sign test both ways; the ratio is the
    smallest K whose arm is not below targeted (a bound "> K" when none reaches it), and beside it the
    bound the sign tests carry (targeted above random-node-xK at p < 0.05 up to K). It counts as a
    verdict only where the oracle beats random-node (x1) at p < 0.05, the bench's rule."""
    from pwd_agent.stats import exact_mcnemar_p

    names = [n for n in dict.fromkeys(a for w in worlds for a in w["scores"]) if n.startswith("random-node")]
    by_pair = {t["pair"]: t["untaught key"] for t in tests}
    rows = []
    for name in names:
        both = [w for w in worlds if w["scores"].get(name) and w["scores"].get("targeted")]  # the same items
        t, acc, goal = by_pair.get(f"targeted vs {name}"), untaught_accuracy(both, name), untaught_accuracy(
            both, "targeted")
        if t is None or acc is None or goal is None:
            continue
        k = int(name.rsplit("x", 1)[1]) if "-x" in name else 1
        rows.append({"K": k, "arm": name, "accuracy": acc, "targeted": goal, "targeted above": t["p"],
                     "random above": float(f"{exact_mcnemar_p(t['down'], t['up']):.3g}")})
    if not rows:
        return None
    rows.sort(key=lambda r: r["K"])
    reached = [r["K"] for r in rows if r["accuracy"] >= r["targeted"]]
    # The point read above rests on accuracies alone; a bound the tests carry needs targeted above
    # random-node-xK at p < 0.05 for K and every smaller K tried.
    beaten = 0
    for r in rows:
        if r["targeted above"] >= 0.05:
            break
        beaten = r["K"]
    gate = by_pair.get("oracle vs random-node")
    if gate is None:
        said = "inconclusive: no oracle or random-node (x1) arm to judge the design by"
    else:
        said = "counts" if gate["p"] < 0.05 else "inconclusive: the oracle does not beat random-node at p < 0.05"
    return {"ratio": str(reached[0]) if reached else f"> {rows[-1]['K']}", "by K": rows,
            "significant bound": f"> {beaten}" if beaten else "none (targeted not above random-node at p < 0.05)",
            "oracle vs random-node p": gate and gate["p"], "verdict": said}


def markdown(worlds: list[dict], tests: list[dict]) -> str:
    """The README's table: each arm's accuracies per run, then the pooled paired tests."""
    lines = ["| run | arm | seeds | holdout | untaught key | taught key |", "|---|---|---|---|---|---|"]
    for w in worlds:
        for arm in w["scores"]:
            a = accuracies(w, arm)
            if a:
                seeds = ",".join(map(str, a["seeds"]))
                cells = [w["run"], arm, seeds, a["holdout"], a["untaught key"], a["taught key"]]
                lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "| pair (pooled, items averaged over seeds) | all: up / down, p | untaught key | taught key |",
              "|---|---|---|---|"]
    cell = lambda t: f"{t['up']} / {t['down']}, p {t['p']}"  # noqa: E731
    lines += [f"| {t['pair']} | {cell(t['all'])} | {cell(t['untaught key'])} | {cell(t['taught key'])} |"
              for t in tests]
    read = efficiency(worlds, tests)
    if read:
        lines += ["", "| random data at K x targeted's budget | untaught key: random / targeted | targeted above, p "
                  "| random above, p |", "|---|---|---|---|"]
        lines += [f"| {r['arm']} (K = {r['K']}) | {r['accuracy']} / {r['targeted']} | {r['targeted above']} | "
                  f"{r['random above']} |" for r in read["by K"]]
        lines += ["", f"Sample-efficiency ratio (smallest K not below targeted): {read['ratio']}; "
                  f"bound carried by the sign tests: {read['significant bound']}; "
                  f"oracle vs random-node p {read['oracle vs random-node p']}: {read['verdict']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_ID[:REGIME[:TEST_SHARE[:SEEDS]]] (regime default: base; share: 1; "
                        "seeds: comma-separated, default --seeds), or a record --export wrote (a .json file)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Seeds of the runs that name none.")
    parser.add_argument("--markdown", action="store_true", help="Print the accuracies and tests as Markdown tables.")
    parser.add_argument("--scorer", default="options", help="Whose outcomes: options (the repair bench's own) or a "
                        "scorer bench/rescore_arms.py kept (e.g. pmi).")
    parser.add_argument("--export", type=Path, default=None, metavar="DIR",
                        help="Also write each run's record (holdout items, keys taught, arms' outcomes) to DIR.")
    args = parser.parse_args()
    worlds = [load_world(spec, args.seeds, args.scorer) for spec in args.runs]
    if args.export:
        for w in worlds:
            if "record" not in w:  # a record pooled as given is already kept
                print(f"# wrote {export_record(w, args.scorer, args.export)}", file=sys.stderr)
    tests = pair_tests(worlds)
    if args.markdown:
        print(markdown(worlds, tests))
        return
    for w in worlds:
        print(json.dumps({"run": w["run"], "holdout": len(w["holdout"]),
                          "untaught key": sum(u for _, u in w["holdout"]),
                          "arms": {arm: accuracies(w, arm) for arm in w["scores"] if w["scores"][arm]}}))
    for t in tests:
        print(json.dumps(t))
    if read := efficiency(worlds, tests):
        print(json.dumps({"sample efficiency": read}))


if __name__ == "__main__":
    main()
