"""Score a finished run's rounds again under another scorer, with the same adapters (no training).

    python bench/rescore.py --run RUN [--scorer options] [--runs-dir runs]

For each evaluated round: the round's base weights and adapter, every test item of both splits
scored with `--scorer` (letters, loglik, options, pmi or tail_pmi); per split the exact-set accuracy, the
options (and pmi) scorer's probability mass on the keys, and the baselines on the same items (chance, the
best constant answer, mass chance), plus the one-sided exact McNemar p of each round against the
one before and of the last round against round 0 on each split (and for the options and pmi scorers,
a sign test on each item's mass). One JSON
object; the README quotes it. Nothing is written to the run's store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from sqlmodel import select

    from pwd_agent.baselines import split_baselines
    from pwd_agent.evaluation.hf import SCORERS, HFEvaluator
    from pwd_agent.evaluation.loader import score_test_items
    from pwd_agent.runs import open_run
    from pwd_agent.stats import compare, exact_mcnemar_p
    from pwd_agent.store import Round, TestItem, session_scope
    from pwd_agent.student import resolve_student

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--scorer", default="options", choices=SCORERS)
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args()

    ctx = open_run(args.run, args.runs_dir)
    cfg = ctx.config
    with session_scope(ctx.db_url) as s:
        rounds = [(r.id, r.adapter_path) for r in s.exec(select(Round).order_by(Round.id)).all()
                  if r.status == "evaluated"]
        items = list(s.exec(select(TestItem).order_by(TestItem.id)).all())
        floors = {split: vars(b) for split, b in split_baselines(s, cfg.tests.one_key).items() if b}
    report = {"run": ctx.run_id, "scorer": args.scorer, "baselines": floors, "rounds": []}
    passes, masses_of = {}, {}
    for round_id, adapter in rounds:
        start = time.time()
        evaluator = HFEvaluator(resolve_student(cfg.student), adapter, cfg.eval.batch_size, cfg.eval.max_new_tokens,
                                args.scorer, cfg.student.chat_template, cfg.student.dtype, cfg.eval.pmi_prompt)
        preds = score_test_items(evaluator, cfg, items)
        evaluator.close()
        row = {"round": round_id, "seconds": round(time.time() - start, 1)}
        for split in ("dev", "holdout"):
            mine = [(i, p) for i, p in zip(items, preds) if i.split == split]
            passes[(round_id, split)] = {i.id: p.passed for i, p in mine}
            masses_of[(round_id, split)] = {i.id: p.mass for i, p in mine}
            row[f"{split}_acc"] = round(sum(p.passed for _, p in mine) / len(mine), 4)
            masses = [p.mass for _, p in mine if p.mass is not None]
            row[f"{split}_mass"] = round(sum(masses) / len(masses), 4) if masses else None
        report["rounds"].append(row)
        print(json.dumps(row), file=sys.stderr)
    last = rounds[-1][0]
    for (before, _), (after, _) in zip(rounds, rounds[1:]):  # each round against the one before: a repair's gain
        for split in ("dev", "holdout"):
            flips = compare(passes[(before, split)], passes[(after, split)])
            report[f"{split}_round{after}_vs_round{before}"] = {"fixed": flips.fixed, "broken": flips.broken,
                                                                "p": round(flips.p_value, 4)}
    for split in ("dev", "holdout"):
        flips = compare(passes[(0, split)], passes[(last, split)])
        report[f"{split}_last_vs_round0"] = {"fixed": flips.fixed, "broken": flips.broken, "p": round(flips.p_value, 4)}
        if args.scorer in ("options", "pmi", "tail_pmi"):  # the continuous score: a sign test on each item's mass
            before, after = masses_of[(0, split)], masses_of[(last, split)]
            up = sum(after[i] > before[i] for i in before)
            down = sum(after[i] < before[i] for i in before)
            report[f"{split}_mass_last_vs_round0"] = {"up": up, "down": down, "p": round(exact_mcnemar_p(up, down), 4)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
