"""Does the student learn the corpus's facts? Accuracy on test items of taught chains against untaught ones.

    python bench/injection.py -c examples/invented.yaml --chains 6 \\
        --recipe "v1:builder.paraphrases=0,builder.text_passages=0" --recipe "mixed:"

The config runs up to its benchmark (KB and test items, no training); its chains are then cut in
two halves at random (`--seed`): *taught* and *untaught* (`--chains N`: N chains each, the rest
left out, to fit the clock: training time goes by tokens). For each recipe (config overrides, the
builder's and the trainer's), V1 data is written for the taught chains only, exactly as
`synthesize` writes it (the backend's samples, the recipe samples, the leakage gate), the student
is trained on it from the base, and every item of both halves is scored with the run's scorer
(`eval.scorer`; use `options` for a small student). The base student is scored once, on the same
items, as each recipe's paired baseline.

Beside the items, the *statement probes* of both halves are scored (built in code from the KB, one
key each: the very next step after a given one, the other options that step itself, the step before
it and the step after next): the plainest test of whether a taught transition was learned.
Per-item scores go to runs/RUN/injection/<recipe>-seed<S>/scores.jsonl; a recipe whose adapter was
trained from the same job and data before is scored again, not retrained.

A recipe taught something when its taught half rises above the base (one-sided exact McNemar on
exact answer sets, a sign test on the options scorer's mass on the keys) and above the untaught
half, which no sample names: the untaught half measures what training alone does to the scores
(format, a shift in option lengths), so taught minus untaught is what the facts themselves add.
Prints one JSON line per recipe and a Markdown table; the README quotes the table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import train_once  # noqa: E402 (bench/common.py, beside this script)


def prepare(config: str, run_id: str, sets: list[str]) -> None:
    """The config's run up to the after_tests gate: KB and benchmark stored, no data, no training."""
    cmd = [str(Path(sys.executable).with_name("pwd-agent")), "run", "-c", config, "--run-id", run_id, "-q",
           "--set", "gates.after_tests=true"] + [arg for s in sets for arg in ("--set", s)]
    code = subprocess.run(cmd).returncode
    if code != 6:
        sys.exit(f"expected the run to wait at the after_tests gate (exit 6), got {code}")


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """"name:a.b=1,c.d=2" -> ("name", ["a.b=1", "c.d=2"])."""
    name, _, sets = text.partition(":")
    return name, [s for s in sets.split(",") if s]


def halves(chain_ids: list[int], seed: int, n: int | None) -> tuple[set[int], set[int]]:
    """(taught, untaught): the chains in a seeded order, cut in half (or `n` chains each)."""
    ids = sorted(chain_ids)
    random.Random(f"injection:{seed}").shuffle(ids)
    n = min(n or len(ids) // 2, len(ids) // 2)
    return set(ids[:n]), set(ids[n : 2 * n])


def write_data(ctx, cfg, taught: set[int], path: Path) -> dict:
    """The taught chains' V1 data under `cfg` (as synthesize writes it), as train.jsonl; its counts."""
    from pwd_agent.agents.runner import make_backend
    from pwd_agent.leakage import gate_samples, load_gate, sample_text
    from pwd_agent.nodes.synthesize import plan_units, v1_drafts
    from pwd_agent.context import RunContext
    from pwd_agent.store import session_scope

    b = cfg.builder
    backend = make_backend(RunContext(cfg, ctx.run_dir, ctx.db_url))
    with session_scope(ctx.db_url) as s:
        units = list(plan_units(ctx.db_url, sorted(taught), b.concept_samples))
        leak_gate = load_gate(s, b.leakage_ngram, b.leakage_threshold)
    kept, dropped = [], 0
    for unit in units:
        drafts, _ = v1_drafts(backend, unit, b)
        ok, leaked = gate_samples(leak_gate, drafts, "v1", unit[0].id)
        kept += ok
        dropped += len(leaked)
    path.write_text("".join(json.dumps({"id": n, "prompt": d.prompt, "answer": d.answer,
                                        "statements": d.statement_ids}) + "\n" for n, d in enumerate(kept)))
    exposures = Counter(sid for d in kept for sid in d.statement_ids)
    n_statements = sum(len(u[1]) for u in units)
    return {"samples": len(kept), "leaked": dropped, "kinds": dict(Counter(d.kind for d in kept)),
            "words": sum(len(sample_text(d).split()) for d in kept),
            "exposures_per_statement": round(cfg.train.epochs * sum(exposures.values()) / max(n_statements, 1), 1)}


def score(ctx, cfg, adapter: str | None, items: list, probes: list, out: Path) -> tuple[list, list]:
    """Predictions on the test items (the run's answer space) and on the statement probes (one key
    each: the very next step after a given one, among steps of the same process); each item's
    scores also go to `out` (JSONL) for a later look by facet."""
    from pwd_agent.evaluation.loader import loaded_evaluator, score_test_items
    from pwd_agent.context import RunContext

    with loaded_evaluator(RunContext(cfg, ctx.run_dir, ctx.db_url), adapter) as evaluator:
        on_items = score_test_items(evaluator, cfg, items)
        on_probes = evaluator.score_items([(p.question, p.options, p.answer) for p in probes], multi=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"kind": kind, "id": row.id, "chain_id": row.chain_id,
                                       "variant": getattr(row, "variant", None), "passed": pred.passed,
                                       "mass": pred.mass}) + "\n"
                           for kind, rows, preds in (("item", items, on_items), ("probe", probes, on_probes))
                           for row, pred in zip(rows, preds)))
    return on_items, on_probes


def summary(items: list, preds: list, group: set[int]) -> dict:
    mine = [p for i, p in zip(items, preds) if i.chain_id in group]
    masses = [p.mass for p in mine if p.mass is not None]
    return {"n": len(mine), "acc": round(statistics.mean(p.passed for p in mine), 4),
            "mass": round(statistics.mean(masses), 4) if masses else None}


def paired(items: list, base: list, preds: list, group: set[int]) -> dict:
    """One-sided exact tests of this recipe against the base on the group's items."""
    from pwd_agent.stats import exact_mcnemar_p

    pairs = [(b, p) for i, b, p in zip(items, base, preds) if i.chain_id in group]
    fixed = sum(p.passed and not b.passed for b, p in pairs)
    broken = sum(b.passed and not p.passed for b, p in pairs)
    out = {"fixed": fixed, "broken": broken, "p": round(exact_mcnemar_p(fixed, broken), 4)}
    if all(p.mass is not None for _, p in pairs):
        up = sum(p.mass > b.mass for b, p in pairs)
        down = sum(p.mass < b.mass for b, p in pairs)
        out |= {"mass_up": up, "mass_down": down, "mass_p": round(exact_mcnemar_p(up, down), 4)}
    return out


def main() -> None:
    from sqlmodel import select

    from pwd_agent.baselines import baselines
    from pwd_agent.config import load_config
    from pwd_agent.runs import open_run
    from pwd_agent.store import Chain, Probe, TestItem, session_scope

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="examples/invented.yaml")
    parser.add_argument("--recipe", action="append", default=[], help='"name:key=value,key=value" (repeatable)')
    parser.add_argument("--seed", type=int, default=0, help="Which chains are taught; also the training seed.")
    parser.add_argument("--chains", type=int, default=None, help="Chains per half (default: all, cut in two).")
    parser.add_argument("--run-id", default=None, help="A run waiting at its after_tests gate (skips the setup).")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="Config override for the setup run (e.g. tests.keys=one); repeatable.")
    args = parser.parse_args()
    recipes = [parse_recipe(r) for r in args.recipe] or [("config", [])]
    run_id = args.run_id or f"injection-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.run_id is None:
        prepare(args.config, run_id, args.sets)
    ctx = open_run(run_id, args.runs_dir)
    with session_scope(ctx.db_url) as s:
        taught, untaught = halves(list(s.exec(select(Chain.id)).all()), args.seed, args.chains)
        items = [i for i in s.exec(select(TestItem).order_by(TestItem.id)).all() if i.chain_id in taught | untaught]
        probes = [p for p in s.exec(select(Probe).where(Probe.target == "statement").order_by(Probe.id)).all()
                  if p.chain_id in taught | untaught]
    floor = baselines([(len(i.options), i.answer) for i in items], ctx.config.tests.one_key)
    head = {"run": run_id, "seed": args.seed, "chains": len(taught) + len(untaught), "items": len(items),
            "probes": len(probes), "probe_chance": round(statistics.mean(1 / len(p.options) for p in probes), 4),
            "chance": round(floor.chance, 4), "best_constant": round(floor.best_constant, 4),
            "mass_chance": round(floor.mass_chance, 4)}
    print(json.dumps(head), flush=True)
    start = time.time()
    base, base_probes = score(ctx, ctx.config, None, items, probes,
                              ctx.run_dir / "injection" / f"base-seed{args.seed}" / "scores.jsonl")
    rows = [{"recipe": "base (no training)", "taught": summary(items, base, taught),
             "untaught": summary(items, base, untaught), "probes_taught": summary(probes, base_probes, taught),
             "probes_untaught": summary(probes, base_probes, untaught), "seconds": round(time.time() - start)}]
    print(json.dumps(rows[0]), flush=True)
    for name, sets in recipes:
        cfg = load_config(ctx.run_dir / "config.yaml", sets=sets)
        folder = ctx.run_dir / "injection" / f"{name}-seed{args.seed}"
        folder.mkdir(parents=True, exist_ok=True)
        start = time.time()
        data = write_data(ctx, cfg, taught, folder / "train.jsonl")
        train_once(cfg, folder / "train.jsonl", folder, args.seed)
        trained = round(time.time() - start)
        preds, on_probes = score(ctx, cfg, str(folder / "adapter"), items, probes, folder / "scores.jsonl")
        row = {"recipe": name, "sets": sets, **data, "taught": summary(items, preds, taught),
               "untaught": summary(items, preds, untaught), "taught_vs_base": paired(items, base, preds, taught),
               "untaught_vs_base": paired(items, base, preds, untaught),
               "probes_taught": summary(probes, on_probes, taught),
               "probes_untaught": summary(probes, on_probes, untaught),
               "probes_taught_vs_base": paired(probes, base_probes, on_probes, taught),
               "probes_untaught_vs_base": paired(probes, base_probes, on_probes, untaught),
               "train_s": trained, "seconds": round(time.time() - start)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(table(head, rows))


def _versus(vs: dict | None) -> str:
    if not vs:
        return "-"
    return (f"{vs['fixed']}/{vs['broken']}, p {vs['p']}; {vs.get('mass_up', '-')}/{vs.get('mass_down', '-')}, "
            f"p {vs.get('mass_p', '-')}")


def table(head: dict, rows: list[dict]) -> str:
    lines = [f"run {head['run']}, seed {head['seed']}: {head['items']} items (chance {head['chance']}, best constant "
             f"{head['best_constant']}, mass chance {head['mass_chance']}); {head['probes']} statement probes "
             f"(chance {head['probe_chance']})", "",
             "| recipe | samples | exposures/fact | taught acc | taught mass | untaught acc | untaught mass | "
             "taught vs base (fixed/broken, p; mass up/down, p) | probes taught acc / mass | "
             "probes untaught acc / mass | probes taught vs base | seconds |", "|---" * 12 + "|"]
    for r in rows:
        t, u, pt, pu = r["taught"], r["untaught"], r["probes_taught"], r["probes_untaught"]
        lines.append(f"| {r['recipe']} | {r.get('samples', 0)} | {r.get('exposures_per_statement', 0)} | {t['acc']} | "
                     f"{t['mass']} | {u['acc']} | {u['mass']} | {_versus(r.get('taught_vs_base'))} | "
                     f"{pt['acc']} / {pt['mass']} | {pu['acc']} / {pu['mass']} | "
                     f"{_versus(r.get('probes_taught_vs_base'))} | {r['seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
