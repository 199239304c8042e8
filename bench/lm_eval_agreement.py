"""Does pwd-agent's `hf` evaluator agree with lm-evaluation-harness on the exported benchmark?

    python bench/lm_eval_agreement.py [--run RUN] [--round N] [--runs-dir runs] [--limit N]

Needs lm-eval (`pip install 'pwd-agent[lmeval]'`). Takes a finished run (default: the newest one
under runs/ with a trained round), exports its benchmark as lm-eval tasks (`pwd-agent export`),
then scores every item of both splits twice with the same base weights and the round's PEFT
adapter: once with pwd-agent's HFEvaluator (scorer `letters`: greedy, 15 new tokens, the letter
set parsed from the first line, exact set match), once with `lm_eval.simple_evaluate` (model `hf`,
`peft=` the adapter, the chat template applied, the exported task). Prints both accuracies per
split, their difference in points, and every item whose first answer line differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def newest_trained_run(runs_dir: str) -> str:
    from pwd_agent.runs import open_run
    from pwd_agent.store import Round, session_scope
    from sqlmodel import select

    for folder in sorted(Path(runs_dir).iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if (folder / "config.yaml").is_file() and (folder / "run.db").is_file():
            with session_scope(open_run(folder.name, runs_dir).db_url) as s:
                if s.exec(select(Round).where(Round.adapter_path.is_not(None))).first():
                    return folder.name
    sys.exit(f"no run with a trained round under {runs_dir}: run `make demo` first, or pass --run")


def ours(model_path: str, adapter: str, rows: list[dict], batch_size: int) -> tuple[list[str], float]:
    from pwd_agent.evaluation.hf import HFEvaluator

    evaluator = HFEvaluator(model_path, adapter, batch_size=batch_size, max_new_tokens=15, scorer="letters")
    started = time.perf_counter()
    preds = evaluator.score_items([(r["question"], r["options"], r["answer"]) for r in rows])
    seconds = time.perf_counter() - started
    return [p.raw for p in preds], seconds


def theirs(model_path: str, adapter: str, tasks_dir: Path, tasks: list[str], batch_size: int, limit: int | None):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from pwd_agent.student import is_full_model

    started = time.perf_counter()
    weights = f"pretrained={adapter}" if is_full_model(adapter) else f"pretrained={model_path},peft={adapter}"
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"{weights},dtype=float32", tasks=tasks,
        task_manager=TaskManager(include_path=str(tasks_dir)), batch_size=batch_size, device="cpu",
        apply_chat_template=True, log_samples=True, limit=limit)
    return out, time.perf_counter() - started


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run")
    parser.add_argument("--round", type=int, help="default: the last trained round")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, help="items per split (default: all)")
    args = parser.parse_args()

    from pwd_agent.export import export_run
    from pwd_agent.prompting import parse_letters, score
    from pwd_agent.runs import open_run
    from pwd_agent.student import resolve_student

    ctx = open_run(args.run or newest_trained_run(args.runs_dir), args.runs_dir)
    out = Path(tempfile.mkdtemp(prefix="pwd-lmeval-")) / "export"
    export_run(ctx, out, args.round)
    serve = (out / "serve.sh").read_text()
    adapter = serve.split("--lora-modules ")[1].split("=", 1)[1].split()[0]
    model_path = resolve_student(ctx.config.student)
    group = f"pwd_{ctx.run_id.replace('-', '_')}"
    print(f"run {ctx.run_id}, adapter {adapter}\nbase {model_path}")

    splits = {s: [json.loads(x) for x in (out / f"benchmark_{s}.jsonl").read_text().splitlines()][:args.limit]
              for s in ("dev", "holdout")}
    results, lm_seconds = theirs(model_path, adapter, out / "lm_eval", [f"{group}_{s}" for s in splits],
                                 args.batch_size, args.limit)
    report = {"run": ctx.run_id, "adapter": adapter, "lm_eval_seconds": round(lm_seconds, 1), "splits": {}}
    for split, rows in splits.items():
        raws, seconds = ours(model_path, adapter, rows, args.batch_size)
        our_acc = sum(score(parse_letters(r), row["answer"]) for r, row in zip(raws, rows)) / len(rows)
        task = f"{group}_{split}"
        their_acc = results["results"][task]["acc,none"]
        samples = {s["doc"]["id"]: s["resps"][0][0] for s in results["samples"][task]}
        differ = [(row["id"], first_line(raw), first_line(samples[row["id"]]))
                  for row, raw in zip(rows, raws) if first_line(raw) != first_line(samples[row["id"]])]
        report["splits"][split] = {"items": len(rows), "pwd_agent_acc": round(our_acc, 4),
                                   "lm_eval_acc": round(their_acc, 4),
                                   "diff_points": round(100 * abs(our_acc - their_acc), 2),
                                   "first_lines_differ": len(differ), "pwd_agent_seconds": round(seconds, 1)}
        for item_id, mine, other in differ[:10]:
            print(f"  {split} item {item_id}: pwd-agent {mine!r} | lm-eval {other!r}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
