"""Do a run's stored predictions agree with a fresh `hf` scoring of the same round?

    python bench/vllm_vs_hf.py [--run RUN] [--round N] [--runs-dir runs]

Made for the GPU check of issue 4: run a round with `eval.backend=vllm` (and a launcher), e.g.

    pwd-agent run -c examples/water.yaml --run-id gpu --set eval.backend=vllm \\
        --set train.launcher=accelerate --set train.num_processes=1 --set loop.max_rounds=1
    python bench/vllm_vs_hf.py --run gpu

then this script scores the same items with the `hf` evaluator, same base weights and adapter,
and prints both accuracies, their difference in points and the items whose parsed answer
differs. On a run scored by `hf` it checks that scoring is deterministic (it should agree fully).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    from lm_eval_agreement import newest_trained_run
    from sqlmodel import select

    from pwd_agent.evaluation.hf import HFEvaluator
    from pwd_agent.runs import open_run
    from pwd_agent.store import ItemResult, Round, TestItem, session_scope
    from pwd_agent.student import resolve_student

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run")
    parser.add_argument("--round", type=int, help="default: the last evaluated round")
    parser.add_argument("--runs-dir", default="runs")
    args = parser.parse_args()

    ctx = open_run(args.run or newest_trained_run(args.runs_dir), args.runs_dir)
    with session_scope(ctx.db_url) as s:
        done = [r for r in s.exec(select(Round).order_by(Round.id)).all() if r.status == "evaluated"]
        row = next(r for r in done if r.id == args.round) if args.round is not None else done[-1]
        stored = {r.item_id: r for r in s.exec(select(ItemResult).where(ItemResult.round_id == row.id)).all()}
        items = [i for i in s.exec(select(TestItem).order_by(TestItem.id)).all() if i.id in stored]
        adapter = row.adapter_path
    cfg = ctx.config
    evaluator = HFEvaluator(resolve_student(cfg.student), adapter, cfg.eval.batch_size, cfg.eval.max_new_tokens,
                            "letters", cfg.student.chat_template, cfg.student.dtype)
    fresh = evaluator.score_items([(i.question, i.options, i.answer) for i in items])
    differ = [(i.id, stored[i.id].predicted, p.predicted) for i, p in zip(items, fresh)
              if stored[i.id].predicted != p.predicted]
    stored_acc = sum(stored[i.id].passed for i in items) / len(items)
    fresh_acc = sum(p.passed for p in fresh) / len(items)
    for item_id, before, now in differ[:10]:
        print(f"  item {item_id}: stored {before!r} | hf {now!r}")
    print(json.dumps({"run": ctx.run_id, "round": row.id, "stored_backend": cfg.eval.backend, "items": len(items),
                      "stored_acc": round(stored_acc, 4), "hf_acc": round(fresh_acc, 4),
                      "diff_points": round(100 * abs(stored_acc - fresh_acc), 2),
                      "answers_differ": len(differ)}, indent=1))


if __name__ == "__main__":
    main()
