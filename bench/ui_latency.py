"""Latency of each `pwd-agent ui` view on a synthetic run: 1,000 test items and 10,000 log events
(plus 1,500 statements, 3 evaluated rounds of predictions, 3,000 samples, 2,000 ledger rows).

    python bench/ui_latency.py [--repeat 10] [--items 1000] [--events 10000] [--dir /tmp/ui-bench]

Each view is requested once (first: cold, e.g. coverage and blame computed; the page keeps them until
the store changes), then `--repeat` times through Starlette's TestClient (the
whole ASGI app: routing, store reads, template); the median and the worst are printed in ms. The
goal: every view under 300 ms. Plots are images the page loads beside it, timed apart."""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LIMIT_MS = 300.0


def build(root: Path, n_items: int, n_events: int) -> str:
    from pwd_agent.config import load_config
    from pwd_agent.runs import create_run
    from pwd_agent.store import (
        Chain, Chunk, Concept, ConceptStatement, Diagnosis, Document, Event, ItemResult, LLMCall, Patch, Round,
        RoundSample, Run, Sample, Statement, TestItem, session_scope,
    )

    rng = random.Random(0)
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "a.md").write_text("# a\n\ntext\n")
    ctx = create_run(load_config(None, [f"corpus.path={corpus}", f"runs_dir={root / 'runs'}", "run_id=big"]))
    n_chains = n_items // 2
    with session_scope(ctx.db_url) as s:
        s.add(Document(id=1, path="a.md", title="a", content_hash="h", n_chars=1))
        s.flush()
        s.add_all(Chunk(id=c, document_id=1, position=c, text="t", content_hash=f"c{c}")
                  for c in range(1, n_chains + 1))
        s.flush()
        s.add_all(Chain(id=c, chunk_id=c, process_name=f"process {c}", domain="craft", summary="how it goes",
                        steps=["a", "b", "c", "d"], steps_hash=f"s{c}") for c in range(1, n_chains + 1))
        s.flush()
        s.add_all(Statement(id=3 * (c - 1) + k + 1, chain_id=c, position=k, subject=f"step {k}", predicate="precedes",
                            object=f"step {k + 1}", source_quote="quote", spo_key=f"{c}-{k}")
                  for c in range(1, n_chains + 1) for k in range(3))
        s.add_all(Concept(id=i, term=f"term {i}", definition="d") for i in range(1, 201))
        s.flush()
        s.add_all(ConceptStatement(concept_id=1 + st % 200, statement_id=st) for st in range(1, 3 * n_chains + 1))
        s.add_all(TestItem(id=i, chain_id=1 + (i - 1) // 2, variant=(i - 1) % 2, split="dev" if i % 2 else "holdout",
                           question=f"question {i}?", options=["w", "x", "y", "z"],
                           option_kinds=["key", "swap", "swap", "swap"], option_statements=[1, None, None, None],
                           answer=rng.choice(["A", "B", "A,C"])) for i in range(1, n_items + 1))
        s.add_all(Sample(id=x, origin="v1", chain_id=1 + x % n_chains, kind="qa", prompt=f"p{x}", answer="a",
                         statement_ids=[1 + x % (3 * n_chains)]) for x in range(1, 3001))
        for r in range(3):
            s.add(Round(id=r, status="evaluated", scorer="letters", n_train=0 if r == 0 else 3000,
                        dev_acc=0.2 + 0.1 * r, holdout_acc=0.15 + 0.1 * r, fixed=None if r == 0 else 40,
                        broken=None if r == 0 else 10, gain_p=None if r == 0 else 0.001))
        s.flush()
        s.add_all(ItemResult(round_id=r, item_id=i, prompt_version="v", raw="A", predicted="A",
                             passed=rng.random() < 0.2 + 0.1 * r) for r in range(3) for i in range(1, n_items + 1))
        s.add_all(RoundSample(round_id=r, sample_id=x, role="v1") for r in (1, 2) for x in range(1, 3001))
        s.add_all(Diagnosis(id=d, round_id=1, item_id=2 * d - 1, kind="untaught", statement_ids=[3 * d - 2])
                  for d in range(1, 101))
        s.flush()
        s.add_all(Patch(id=d, diagnosis_id=d, target_round=2, n_samples=0) for d in range(1, 101))
        s.add_all(LLMCall(agent=rng.choice(["extractor", "tester", "builder"]), prompt_name="p", prompt_version="1",
                          prompt_hash="h", model="m", input_tokens=300, output_tokens=100, cost=0.0004)
                  for _ in range(2000))
        t0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
        nodes = ["extract", "build_tests", "synthesize", "train", "evaluate", "diagnose", "patch", "run"]
        s.add_all(Event(node=nodes[e % len(nodes)], level=["debug", "info", "info", "warning"][e % 4],
                        message=f"event {e}: something happened", data={"done": e % 100, "total": 100},
                        created_at=t0 + timedelta(seconds=e)) for e in range(n_events))
        s.add(Run(run_id="big", status="finished", stop_reason="max_rounds", goal_met=False))
    return str(root / "runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--dir", default="/tmp/pwd-agent-ui-bench")
    args = parser.parse_args()

    from starlette.testclient import TestClient

    from pwd_agent.ui.app import create_app

    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    runs_dir = build(root, args.items, args.events)
    print(f"store: {args.items} items, {args.events} events, built in {time.perf_counter() - started:.1f} s")
    client = TestClient(create_app(runs_dir, token="bench"))
    views = {
        "runs": "/",
        "run": "/runs/big",
        "run, log filtered (debug, train)": "/runs/big?level=debug&node=train",
        "summary (live refresh)": "/runs/big/summary",
        "log stream (last 500 events)": f"/runs/big/stream?follow=0&level=debug&after={args.events - 500}",
        "KB (page 1)": "/runs/big/kb",
        "KB (last page)": "/runs/big/kb?page=20",
        "coverage": "/runs/big/coverage",
        "blame": "/runs/big/blame?item=1",
    }
    plots = {"plot accuracy": "/runs/big/plots/accuracy.png", "plot coverage": "/runs/big/plots/coverage.png"}
    print(f"{'view':<36} {'first ms':>8} {'median ms':>9} {'max ms':>8}")
    worst = 0.0
    for name, path in {**views, **plots}.items():
        t = time.perf_counter()
        assert client.get(path).status_code == 200, path
        first = 1000 * (time.perf_counter() - t)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            response = client.get(path)
            times.append(1000 * (time.perf_counter() - t))
            assert response.status_code == 200, path
        med = statistics.median(times)
        if name in views:
            worst = max(worst, med)
        print(f"{name:<36} {first:>8.1f} {med:>9.1f} {max(times):>8.1f}")
    verdict = "met" if worst < LIMIT_MS else "NOT met"
    print(f"slowest view (median): {worst:.1f} ms; goal under {LIMIT_MS:.0f} ms: {verdict}")
    sys.exit(0 if worst < LIMIT_MS else 1)


if __name__ == "__main__":
    main()
