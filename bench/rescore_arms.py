"""Score the holdout items of the repair bench's kept adapters again under another scorer (no training).

    python bench/rescore_arms.py arms-w41:previous-pf0.7-text:0.25:1,2 arms-w59:previous-pf0.7-text:0.25:0 --scorer pmi
    python bench/pool_arms.py arms-w41:previous-pf0.7-text:0.25:1,2 arms-w59:previous-pf0.7-text:0.25:0 --scorer pmi

Each argument names a run, its arms' regime, the bench's test share and the seeds, as pool_arms reads
them. For every arm folder those seeds have (V1's v1-SEED and each arm's), the run's holdout items
are scored with the same adapter under `--scorer` (eval.scorer's values; the run's other eval
settings), and the outcomes are kept beside the adapter as scores-SCORER.json in the repair bench's
shape ({"items": {id: [passed, mass, predicted]}}); a kept file covering the same items is not
scored again. pool_arms --scorer SCORER then reads them with the same per-arm accuracies and paired
tests as the bench's own. What it answers: whether a scorer separates the arms on the benchmark's
own items where the options scorer did not, with no arm retrained."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def rescore_run(spec: str, seeds: list[int], scorer: str) -> list[dict]:
    """Score the holdout items of every kept arm folder of the run under `scorer`; one row per folder."""
    from pool_arms import arm_folder, arm_names, parse_spec, scores_file
    from repair_arms import arms_root, load_setup

    from pwd_agent.evaluation.loader import loaded_evaluator, score_test_items
    from pwd_agent.runs import open_run

    run_id, regime, share, seeds = parse_spec(spec, seeds)
    ctx = open_run(run_id)
    ctx.config.eval.scorer = scorer
    setup = load_setup(ctx, share)
    root = arms_root(ctx.run_dir, share)
    holdout = [i for i in setup.items if i.split == "holdout"]
    ids = sorted(str(i.id) for i in holdout)
    rows = []
    for arm in arm_names(root / regime):
        for seed in seeds:
            folder = arm_folder(root, regime, arm, seed)
            adapter = setup.round1 if arm == "none" and seed == ctx.config.train.seed else folder / "adapter"
            if not Path(adapter).is_dir():
                continue
            kept = folder / scores_file(scorer)
            if kept.is_file() and sorted(json.loads(kept.read_text())["items"]) == ids:
                rows.append({"run": run_id, "folder": str(folder.relative_to(root)), "kept": True})
                continue
            with loaded_evaluator(ctx, str(adapter)) as evaluator:
                preds = score_test_items(evaluator, ctx.config, holdout)
            got = {str(i.id): [p.passed, p.mass, p.predicted] for i, p in zip(holdout, preds)}
            kept.write_text(json.dumps({"scorer": scorer, "items": got}))
            rows.append({"run": run_id, "folder": str(folder.relative_to(root)), "kept": False,
                         "holdout": round(sum(v[0] for v in got.values()) / len(got), 3)})
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    from pwd_agent.evaluation.hf import SCORERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="RUN_ID[:REGIME[:TEST_SHARE[:SEEDS]]], as pool_arms reads them.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="Seeds of the runs that name none.")
    parser.add_argument("--scorer", required=True, choices=[s for s in SCORERS if s != "options"],
                        help="The scorer to read the items with (the bench's own outcomes are the options scorer's).")
    args = parser.parse_args()
    for spec in args.runs:
        for row in rescore_run(spec, args.seeds, args.scorer):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
