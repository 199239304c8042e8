"""Do targeted patches beat the same number of random samples? (issue 5's benchmark)

From one run's V1 round (round 1) and its diagnoses, round 2 is trained three ways, from the base
model as every round is, each over several training seeds:
  targeted  the Debugger's patches + replay (what a run does)
  random    as many samples drawn at random from the V1 data as there are patches + the same replay
  none      the replay alone
and each is scored on dev and holdout with the run's evaluator.

Usage: python bench/repair_vs_random.py [-c examples/demo.yaml] [--seeds 0 1 2] [--run-id ID]
Without --run-id it first runs the config up to the gate before round 2's training (the KB,
tests, V1 round, diagnoses and patches), so the setup is a real run. Prints one JSON line per
arm and seed, then a summary line; the README quotes the summary.
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

from sqlmodel import select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pwd_agent.runs import open_run  # noqa: E402
from pwd_agent.store import Patch, Round, RoundSample, Sample, TestItem, session_scope  # noqa: E402


def prepare(config: str, run_id: str) -> None:
    """The demo up to the before_train gate of round 2: patches written, nothing trained on them."""
    cmd = [str(Path(sys.executable).with_name("pwd-agent")), "run", "-c", config, "--run-id", run_id, "-q",
           "--set", "loop.max_rounds=2", "--set", "loop.goal=0.99", "--set", "gates.before_train=true"]
    code = subprocess.run(cmd).returncode
    if code != 6:
        sys.exit(f"expected the run to wait at the before_train gate (exit 6), got {code}")


def arms(ctx, seed: int) -> dict[str, list[Sample]]:
    """The three training sets of round 2; `seed` only varies which random samples are drawn."""
    from pwd_agent.nodes.train import compose_training_set

    with session_scope(ctx.db_url) as s:
        if s.get(Round, 2) is None:  # the run waits before round 2's train node made its row
            s.add(Round(id=2))
            s.flush()
        compose_training_set(s, 2, ctx.config.builder.patch_fraction, ctx.config.builder.seed)  # idempotent
        members = s.exec(select(RoundSample).where(RoundSample.round_id == 2)).all()
        by_id = {x.id: x for x in s.exec(select(Sample)).all()}
        patches = [by_id[m.sample_id] for m in members if m.role == "patch"]
        replay = [by_id[m.sample_id] for m in members if m.role == "replay"]
        v1 = [x for x in by_id.values() if x.origin == "v1"]
        n_patches = len(s.exec(select(Patch).where(Patch.target_round == 2)).all())
    drawn = random.Random(f"random-arm:{seed}").sample(v1, min(len(patches), len(v1)))
    print(f"# {n_patches} patches, {len(patches)} patch samples, {len(replay)} replay samples", file=sys.stderr)
    return {"targeted": patches + replay, "random": drawn + replay, "none": replay}


def train_and_score(ctx, name: str, seed: int, samples: list[Sample], folder: Path) -> dict:
    from pwd_agent.nodes.evaluate import loaded_evaluator
    from pwd_agent.student import resolve_student
    from pwd_agent.training.job import TrainJob

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps({"id": x.id, "prompt": x.prompt, "answer": x.answer}) + "\n"
                                                for x in samples))
    cfg = ctx.config
    job = TrainJob(model_path=resolve_student(cfg.student), data_path=str(folder / "train.jsonl"),
                   output_dir=str(folder / "adapter"), lora_r=cfg.student.lora_r, lora_alpha=cfg.student.lora_alpha,
                   lora_dropout=cfg.student.lora_dropout, target_modules=cfg.student.target_modules,
                   max_length=cfg.student.max_length, epochs=cfg.train.epochs, learning_rate=cfg.train.learning_rate,
                   batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum, seed=seed,
                   cpu_bf16=cfg.train.cpu_bf16)
    (folder / "job.json").write_text(job.model_dump_json(indent=2))
    start = time.time()
    with open(folder / "train.log", "w") as log:
        subprocess.run([sys.executable, "-m", "pwd_agent.training", str(folder / "job.json")], stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    with session_scope(ctx.db_url) as s:
        items = s.exec(select(TestItem).order_by(TestItem.id)).all()
        rows = [(i.question, i.options, i.answer, i.split) for i in items]
    with loaded_evaluator(ctx, str(folder / "adapter")) as evaluator:
        preds = evaluator.score_items([(q, o, a) for q, o, a, _ in rows])
    acc = {split: statistics.mean(p.passed for p, r in zip(preds, rows) if r[3] == split) for split in ("dev", "holdout")}
    return {"arm": name, "seed": seed, "samples": len(samples), "dev": round(acc["dev"], 4),
            "holdout": round(acc["holdout"], 4), "seconds": round(time.time() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="examples/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--run-id", default=None, help="A run waiting at round 2's before_train gate.")
    args = parser.parse_args()
    run_id = args.run_id or f"repair-vs-random-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.run_id is None:
        prepare(args.config, run_id)
    ctx = open_run(run_id)
    results = []
    for seed in args.seeds:
        for name, samples in arms(ctx, seed).items():
            result = train_and_score(ctx, name, seed, samples, ctx.run_dir / "repair_vs_random" / f"{name}-{seed}")
            print(json.dumps(result), flush=True)
            results.append(result)
    summary = {"run_id": run_id, "seeds": args.seeds}
    for name in ("targeted", "random", "none"):
        for split in ("dev", "holdout"):
            values = [r[split] for r in results if r["arm"] == name]
            summary[f"{name}_{split}"] = [round(statistics.mean(values), 4), round(max(values) - min(values), 4)]
    print(json.dumps({"summary (mean, max-min over seeds)": summary}))


if __name__ == "__main__":
    main()
