"""Training tokens/s and evaluation items/s of the student on this machine.

    python bench/student_throughput.py [--run RUN] [--round N] [--epochs 1] [--engines own,trl] [--runs-dir runs]

Takes a run with a trained round (default: the newest under runs/, e.g. the one `make demo`
leaves) and, through the same code paths a run uses:
- re-runs that round's training job (`python -m pwd_agent.training JOB.json`, LoRA on the round's
  own data, written to a temporary folder) once per training engine (`own`, `trl`) and reports
  tokens/s (the engine's own count of tokens trained on), examples/s, the final loss and the
  trainer's peak RSS (the largest of the trainer processes so far);
- loads the student with that adapter (load time reported apart) and scores every test item with
  each scorer, `letters` (batched greedy generation), `loglik` (15 letter sets, shared prefix) and
  `options` (each option's likelihood after the question, shared prefix), reporting items/s for each.
Nothing else should run on the machine meanwhile: the numbers are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def train(job_path: Path, epochs: float, engine: str) -> dict:
    job = json.loads(job_path.read_text())
    out = Path(tempfile.mkdtemp(prefix="pwd-throughput-"))
    job.update(output_dir=str(out / "adapter"), epochs=epochs, engine=engine)
    (out / "job.json").write_text(json.dumps(job))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pwd_agent.training", str(out / "job.json")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "adapter" / "train_metrics.json").read_text())
    return {"engine": engine, "examples": metrics["examples"], "tokens": metrics["tokens"], "steps": metrics["steps"],
            "first_loss": round(metrics["first_loss"], 4), "final_loss": round(metrics["train_loss"], 4),
            "epochs": epochs, "train_seconds": metrics["seconds"], "process_seconds": round(wall, 1),
            "tokens_per_s": round(metrics["tokens"] / metrics["seconds"], 1),
            "examples_per_s": round(metrics["examples"] * epochs / metrics["seconds"], 2),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2)}


def evaluate(model_path: str, adapter: str, items: list[tuple[str, list[str], str]], batch_size: int) -> dict:
    from pwd_agent.evaluation.hf import HFEvaluator

    report = {"items": len(items)}
    for scorer in ("letters", "loglik", "options"):
        started = time.perf_counter()
        evaluator = HFEvaluator(model_path, adapter, batch_size=batch_size, max_new_tokens=15, scorer=scorer)
        loaded = time.perf_counter()
        preds = evaluator.score_items(items)
        done = time.perf_counter()
        report[scorer] = {"load_seconds": round(loaded - started, 1), "score_seconds": round(done - loaded, 1),
                          "items_per_s": round(len(items) / (done - loaded), 2),
                          "accuracy": round(sum(p.passed for p in preds) / len(items), 4)}
    return report


def main() -> None:
    from lm_eval_agreement import newest_trained_run
    from sqlmodel import select

    from pwd_agent.runs import open_run
    from pwd_agent.store import Round, TestItem, session_scope
    from pwd_agent.student import resolve_student

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run")
    parser.add_argument("--round", type=int, help="default: the last trained round")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--epochs", type=float, default=1.0, help="epochs of the re-run training (paper: 1)")
    parser.add_argument("--engines", default="own,trl", help="training engines to time, comma-separated")
    args = parser.parse_args()

    ctx = open_run(args.run or newest_trained_run(args.runs_dir), args.runs_dir)
    with session_scope(ctx.db_url) as s:
        trained = [r for r in s.exec(select(Round).order_by(Round.id)).all() if r.adapter_path]
        row = next(r for r in trained if r.id == args.round) if args.round is not None else trained[-1]
        items = [(i.question, i.options, i.answer) for i in s.exec(select(TestItem).order_by(TestItem.id)).all()]
    report = {"run": ctx.run_id, "round": row.id, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "threads": ctx.config.train.threads, "student": ctx.config.student.model}
    report["train"] = [train(ctx.round_dir(row.id) / "job.json", args.epochs, e) for e in args.engines.split(",")]
    report["eval"] = evaluate(resolve_student(ctx.config.student), row.adapter_path, items, ctx.config.eval.batch_size)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
