"""The agents' throughput: ingest -> extract -> build_tests -> synthesize on the openai backend against a
local endpoint with a set latency, at several llm.max_concurrency values, on SQLite and on PostgreSQL.

    python bench/agent_throughput.py --out runs/bench/tput                       # the default plan
    python bench/agent_throughput.py --out DIR --config world:10000:64:sqlite --config manual:0:32:postgres \\
        --manual /tmp/pgdoc/usr/share/doc/postgresql-doc-15/html --delay 0.3 --rate 0

The endpoint (`serve`, run in its own process so its CPU is not pwd-agent's) is tests/servers'
ChatEndpoint answering with the scripted teacher's replies (the offline rules on our own prompts: a
source quote is a span of its chunk, so the agents' checks in code pass), each after `--delay` seconds
plus completion tokens / `--rate` (0: no rate term). HTTP/1.1 keep-alive, as real servers.

Each configuration is CORPUS:CHUNKS:CONCURRENCY:STORE. CORPUS `world` is a generated corpus
(bench/make_world.py, worlds of up to 500 processes under seeds 1000, 1001, ..., until CHUNKS chunks);
`manual` is the folder given by --manual (CHUNKS ignored). The run is driven in a child process the
way `pwd-agent run` drives it (create_run, the run lock, driver.execute: the real graph, checkpointer,
nodes and store, llm.backend=openai with a fresh response cache), and stopped after synthesize the way
`pwd-agent pause` stops a run: the child writes the pause file at synthesize's first log line, so the
driver pauses at the boundary before train. The parent samples the child's CPU time and RSS
(/proc) every 0.2 s; stage boundaries come from the store's events, calls from its ledger.

Per stage it reports units/s (extract: chunks; build_tests and synthesize: chains; ingest:
chunks), the ideal units/s = concurrency / (latency x calls per unit), the share of the ideal,
pwd-agent's own CPU ms per unit (process CPU time, not wall), peak RSS; per run the store size.
Results go to OUT/results.jsonl as each configuration ends (a configuration already there is
skipped: the bench resumes), and OUT/results.md is the table of all of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

STAGES = ("ingest", "extract", "build_tests", "synthesize")
AGENT_OF = {"extract": "extractor", "build_tests": "tester", "synthesize": "builder"}
PROCESSES_PER_WORLD = 500  # make_world's syllable inventory runs out well before a few thousand processes
DEFAULT_PLAN = ["world:50:1:sqlite", "world:50:1:postgres", "world:400:8:sqlite", "world:400:8:postgres",
                "world:2000:32:sqlite", "world:2000:32:postgres", "world:2000:64:sqlite", "world:2000:64:postgres",
                "world:10000:64:sqlite", "world:10000:64:postgres"]


# ---- the endpoint -------------------------------------------------------------------------------
def make_endpoint(delay: float, rate: float):
    """A ChatEndpoint (tests/servers) that answers as the scripted teacher does, after a delay."""
    from servers.chat_endpoint import ChatEndpoint, completion
    from servers.scripted_teacher import answer

    class DelayedTeacher(ChatEndpoint):
        def __init__(self):
            self.requests = 0
            super().__init__(keep_alive=True)

        def reply(self, body, handler):
            self.requests += 1
            prompt = body["messages"][1]["content"]
            content = json.dumps(answer(prompt))
            out_tokens = max(1, len(content) // 4)
            time.sleep(delay + (out_tokens / rate if rate > 0 else 0.0))
            self.send(handler, 200, completion(body["model"], content, max(1, len(prompt) // 4), out_tokens))

    return DelayedTeacher()


def serve(delay: float, rate: float) -> None:
    """Serve until stdin closes; prints the URL first."""
    endpoint = make_endpoint(delay, rate)
    print(endpoint.url, flush=True)
    sys.stdin.read()
    endpoint.close()


def start_endpoint(delay: float, rate: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "serve", "--delay", str(delay), "--rate", str(rate)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, proc.stdout.readline().strip()


# ---- corpora ------------------------------------------------------------------------------------
def world_chunks(processes: int, per_doc: int = 3) -> int:
    """Chunks of a make_world world: one per process section and one per document's opening."""
    return processes + -(-processes // per_doc)


def make_corpus(chunks: int, out: Path) -> Path:
    """A corpus of about `chunks` chunks: generated worlds side by side, one folder each (no README)."""
    from make_world import make_world

    if out.is_dir() and (out / ".done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    left, seed = chunks, 1000
    while left > 0:
        processes = PROCESSES_PER_WORLD
        while processes > 1 and world_chunks(processes) > left:
            processes -= 1
        folder = out / f"world-{seed}"
        folder.mkdir(parents=True)
        for name, text in make_world(seed, processes=processes).items():
            if name != "README.md":
                (folder / name).write_text(text, encoding="utf-8")
        left -= world_chunks(processes)
        seed += 1
    (out / ".done").touch()
    return out


# ---- one run, in a child process ----------------------------------------------------------------
def drive(spec: dict) -> None:
    """Create the run and drive it as `pwd-agent run` does (without the student preflight, which
    reads the student's weights config and imports torch: no stage measured here uses them)."""
    from pwd_agent.cli import _setup_logging
    from pwd_agent.config import load_config
    from pwd_agent.driver import execute
    from pwd_agent.errors import RunPaused
    from pwd_agent.runs import PAUSE_FILE, create_run, run_lock

    cfg = load_config(None, spec["sets"], db_url=spec.get("db_url"))
    ctx = create_run(cfg)
    with run_lock(ctx):
        _setup_logging(ctx.run_dir, quiet=True)
        logging.getLogger("pwd_agent").addHandler(PauseInSynthesize(ctx.run_dir / PAUSE_FILE))
        try:
            execute(ctx)
        except RunPaused:
            return
    raise SystemExit("the run did not pause after synthesize")


class PauseInSynthesize(logging.Handler):
    """Writes the pause file (what `pwd-agent pause` writes) at synthesize's first log line, so the
    driver stops at the boundary after synthesize, however fast the stage is."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and record.args[0] == "synthesize" and not self.path.exists():
            self.path.touch()


def read_proc(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / tick, int(fields[21]) * resource.getpagesize()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def run_config(spec: dict, run_dir: Path) -> dict:
    """Run the child (it pauses itself after synthesize), sample it; returns the samples and totals."""
    env = {**os.environ, "PWD_AGENT_CACHE": str(run_dir.parent / f".cache-{run_dir.name}")}
    child = subprocess.Popen([sys.executable, __file__, "drive", json.dumps(spec)], env=env,
                             stderr=open(run_dir.parent / f"{run_dir.name}.stderr", "w"))
    samples, start = [], time.time()
    try:
        status, usage = _watch(child, samples)
    finally:
        if child.poll() is None:  # the bench was stopped: the run stops with it
            child.terminate()
            child.wait()
    if status != 0:
        raise RuntimeError(f"the run failed (exit {status}): see {run_dir.parent / (run_dir.name + '.stderr')}")
    return {"samples": samples, "wall_s": time.time() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def _watch(child: subprocess.Popen, samples: list):
    """Sample the child's CPU time and RSS until it exits."""
    while True:
        now = time.time()
        got = read_proc(child.pid)
        if got:
            samples.append((now, *got))
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = status
            return status, usage
        time.sleep(0.2)


def cpu_between(samples: list, t0: float, t1: float) -> float:
    """CPU seconds of the child between two wall times, from the samples (linear between them)."""
    def at(t: float) -> float:
        if t <= samples[0][0]:
            return samples[0][1]
        for (ta, ca, _), (tb, cb, _) in zip(samples, samples[1:]):
            if ta <= t <= tb:
                return ca + (cb - ca) * (t - ta) / max(tb - ta, 1e-9)
        return samples[-1][1]
    return at(t1) - at(t0)


def store_stats(db_url: str, run_dir: Path, run_id: str) -> dict:
    """Stage boundaries (from events), units (completion markers), calls (ledger) and the store size."""
    from sqlalchemy import text
    from sqlmodel import func, select

    from pwd_agent.store import Chain, Chunk, Event, LLMCall, WorkUnit, postgres, session_scope

    def epoch(dt):
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()

    url = postgres.run_url(db_url, run_id) if db_url else f"sqlite:///{run_dir / 'run.db'}"
    out: dict = {}
    with session_scope(url) as s:
        events = s.exec(select(Event.node, Event.created_at).order_by(Event.id)).all()
        started = next(epoch(t) for node, t in events if node == "run")
        ends = {}
        for node, t in events:
            if node in STAGES:
                ends[node] = epoch(t)
        previous = started
        for stage in STAGES:
            agent = AGENT_OF.get(stage)
            calls = s.exec(select(func.count(), func.avg(LLMCall.latency_s), func.sum(LLMCall.output_tokens))
                           .where(LLMCall.agent == agent, LLMCall.cache_hit.is_(False))).one() if agent else (0, 0, 0)
            if stage == "ingest":
                units = s.exec(select(func.count()).select_from(Chunk)).one()
            else:
                units = s.exec(select(func.count()).select_from(WorkUnit).where(WorkUnit.stage == stage)).one()
            failed = s.exec(select(func.count()).select_from(WorkUnit).where(
                WorkUnit.stage == stage, WorkUnit.error.is_not(None))).one()
            out[stage] = {"t0": previous, "t1": ends[stage], "units": units, "calls": calls[0],
                          "client_latency_s": calls[1] or 0.0, "out_tokens": calls[2] or 0, "failed": failed}
            previous = ends[stage]
        out["chains"] = s.exec(select(func.count()).select_from(Chain)).one()
        if db_url:
            schema = postgres.schema_name(run_id)
            rows = s.exec(text("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                               "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r'"),
                          params={"s": schema}).all()
            out["store_mb"] = sum(b for name, b in rows if not name.startswith("checkpoint")) / 2**20
            out["checkpoints_mb"] = sum(b for name, b in rows if name.startswith("checkpoint")) / 2**20
    if not db_url:
        out["store_mb"] = sum(f.stat().st_size for f in run_dir.glob("run.db*")) / 2**20
        out["checkpoints_mb"] = sum(f.stat().st_size for f in run_dir.glob("checkpoints.sqlite*")) / 2**20
    return out


def measure(name: str, corpus: Path, concurrency: int, store: str, out: Path, url: str, args,
            pg_url: str | None) -> dict:
    run_id = name.replace(":", "-")
    runs = out / "runs"
    shutil.rmtree(runs / run_id, ignore_errors=True)
    shutil.rmtree(runs / f".cache-{run_id}", ignore_errors=True)
    runs.mkdir(parents=True, exist_ok=True)
    sets = [f"corpus.path={corpus}", f"runs_dir={runs}", f"run_id={run_id}", "llm.backend=openai",
            f"llm.base_url={url}", "llm.model=bench-teacher", f"llm.max_concurrency={concurrency}",
            "eval.general=none", *args.set]
    db_url = pg_url if store == "postgres" else None
    if db_url:  # a fresh schema for the run: drop the one an earlier, unfinished try left
        drop_schema(db_url, run_id)
    result = run_config({"sets": sets, "db_url": db_url}, runs / run_id)
    stats = store_stats(db_url, runs / run_id, run_id)
    latency = args.delay
    row = {"config": name, "corpus": str(corpus), "store": store, "concurrency": concurrency,
           "delay_s": args.delay, "rate_tok_s": args.rate, "chunks": stats["ingest"]["units"],
           "chains": stats["chains"], "wall_s": round(result["wall_s"], 1), "cpu_s": round(result["cpu_s"], 1),
           "peak_rss_mb": round(result["peak_rss_mb"]), "store_mb": round(stats["store_mb"], 1),
           "checkpoints_mb": round(stats["checkpoints_mb"], 2), "stages": {}}
    for stage in STAGES:
        st = stats[stage]
        wall = st["t1"] - st["t0"]
        cpu = cpu_between(result["samples"], st["t0"], st["t1"])
        rss = [r for t, _, r in result["samples"] if st["t0"] <= t <= st["t1"]]
        entry = {"units": st["units"], "wall_s": round(wall, 2), "units_per_s": round(st["units"] / wall, 2),
                 "cpu_s": round(cpu, 2), "cpu_ms_per_unit": round(1000 * cpu / max(st["units"], 1), 2),
                 "peak_rss_mb": round(max(rss) / 2**20) if rss else None, "failed_units": st["failed"]}
        if st["calls"]:
            per_call = latency + (st["out_tokens"] / st["calls"] / args.rate if args.rate > 0 else 0.0)
            calls_per_unit = st["calls"] / st["units"]
            ideal = concurrency / (per_call * calls_per_unit)
            entry.update(calls=st["calls"], calls_per_unit=round(calls_per_unit, 3),
                         client_latency_ms=round(1000 * st["client_latency_s"], 1),
                         cpu_ms_per_call=round(1000 * cpu / st["calls"], 2),
                         ideal_units_per_s=round(ideal, 2), share_of_ideal=round(st["units"] / wall / ideal, 3))
        row["stages"][stage] = entry
    return row


def drop_schema(db_url: str, run_id: str) -> None:
    from sqlalchemy import create_engine, text

    from pwd_agent.store import postgres

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{postgres.schema_name(run_id)}" CASCADE'))
    engine.dispose()


def at_client(entry: dict, concurrency: int) -> float:
    """The share of the ideal at the call latency pwd-agent saw (the ledger's, HTTP and endpoint
    included) rather than the endpoint's set delay: what the orchestration around the calls costs."""
    return entry["units_per_s"] * entry["client_latency_ms"] / 1000 * entry["calls_per_unit"] / concurrency


def table(rows: list[dict]) -> str:
    """The markdown table: a line per configuration and LLM stage (ingest: its own line)."""
    head = ("| corpus | chunks | chains | store | conc. | stage | units | wall s | units/s | ideal/s | share | "
            "client ms/call | share at client ms | CPU ms/unit | CPU ms/call | stage peak RSS MB | run peak RSS MB | "
            "store MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        corpus = "manual" if r["config"].startswith("manual") else "world"
        for stage in STAGES:
            e = r["stages"][stage]
            ideal = e.get("ideal_units_per_s")
            lines.append(
                f"| {corpus} | {r['chunks']} | {r['chains']} | {r['store']} | {r['concurrency']} | {stage} | "
                f"{e['units']} | {e['wall_s']} | {e['units_per_s']} | {ideal if ideal else '-'} | "
                f"{format(e['share_of_ideal'], '.0%') if ideal else '-'} | {e.get('client_latency_ms', '-')} | "
                f"{format(at_client(e, r['concurrency']), '.0%') if ideal else '-'} | "
                f"{e['cpu_ms_per_unit']} | {e.get('cpu_ms_per_call', '-')} | {e['peak_rss_mb']} | "
                f"{r['peak_rss_mb']} | {r['store_mb']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    p_serve = sub.add_parser("serve")
    p_drive = sub.add_parser("drive")
    p_drive.add_argument("spec")
    for p in (parser, p_serve):
        p.add_argument("--delay", type=float, default=0.3, help="seconds per request (default 0.3)")
        p.add_argument("--rate", type=float, default=0.0, help="completion tokens per second (0: none)")
    parser.add_argument("--out", default="runs/bench/agent_throughput", help="results folder")
    parser.add_argument("--config", action="append", default=[],
                        help="CORPUS:CHUNKS:CONCURRENCY:STORE, repeatable (default: the plan in the source)")
    parser.add_argument("--manual", help="the folder of the `manual` corpus (PostgreSQL 15 manual's html/)")
    parser.add_argument("--set", action="append", default=[], help="a config override for every run (a.b=v)")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.delay, args.rate)
        return 0
    if args.cmd == "drive":
        drive(json.loads(args.spec))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the run, the endpoint and the server too
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = {json.loads(line)["config"] for line in results.read_text().splitlines()} if results.exists() else set()
    plan = []
    for item in args.config or DEFAULT_PLAN:
        corpus, chunks, concurrency, store = item.split(":")
        name = f"{corpus}:{chunks}:{concurrency}:{store}:d{args.delay:g}:r{args.rate:g}"
        if name not in done:
            plan.append((name, corpus, int(chunks), int(concurrency), store))
    endpoint, url = start_endpoint(args.delay, args.rate)
    pg = None
    try:
        pg_url = None
        if any(store == "postgres" for *_, store in plan):
            from pg_server import postgres_server

            pg = postgres_server(Path(f"/tmp/pwd-bench-pg-{os.getpid()}"))
            pg_url = pg.__enter__()
        for name, corpus, chunks, concurrency, store in plan:
            if corpus == "manual":
                if not args.manual:
                    raise SystemExit("a `manual` configuration needs --manual FOLDER")
                folder = Path(args.manual)
            else:
                folder = make_corpus(chunks, out / "corpora" / f"world-{chunks}")
            print(f"{time.strftime('%H:%M:%S')} {name} ...", flush=True)
            row = measure(name, folder, concurrency, store, out, url, args, pg_url)
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            e = row["stages"]["extract"]
            print(f"  extract {e['units_per_s']} chunks/s (ideal {e.get('ideal_units_per_s')}, "
                  f"{e.get('share_of_ideal')}), {e['cpu_ms_per_unit']} CPU ms/chunk; wall {row['wall_s']} s, "
                  f"peak RSS {row['peak_rss_mb']} MB, store {row['store_mb']} MB", flush=True)
    finally:
        if pg is not None:
            pg.__exit__(None, None, None)
        endpoint.stdin.close()
        endpoint.wait(timeout=10)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    (out / "results.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
