"""What each page shows, read from a run's store (never from log text): plain dicts for the templates."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from sqlmodel import func, select

from pwd_agent.baselines import split_baselines
from pwd_agent.events import LEVELS
from pwd_agent.context import RunContext
from pwd_agent.report.status import runs_elsewhere
from pwd_agent.runs import is_running, list_run_ids, open_run
from pwd_agent.runstate import next_step, read_run, state_text
from pwd_agent.stats import compare
from pwd_agent.store import (
    Chain, Concept, ConceptStatement, Event, LLMCall, Sample, Statement, TestItem, session_scope,
)
from pwd_agent.store.queries import count_rows, round_passes, rounds

# What looks like a credential is masked wherever free text reaches the page.
_SECRET = re.compile(r"\b(sk|pk|rk|hf|ghp|gho|xox[abp])[-_][A-Za-z0-9_\-]{12,}\b|\bBearer\s+\S+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


# Views that read the whole store (coverage, blame, plots) are kept until the store changes: its
# fingerprint is the newest id of each table they read and the row count of those keyed otherwise.
_cache: dict[tuple, object] = {}
_CACHE_SIZE = 64


def fingerprint(ctx: RunContext) -> tuple:
    from pwd_agent.store import Diagnosis, ItemResult, Patch, Probe, ProbeResult, Round, RoundSample

    with session_scope(ctx.db_url) as s:
        newest = [s.exec(select(func.max(t.id))).one() for t in (Event, Sample, Diagnosis, Patch, Round, Statement,
                                                                   TestItem, Probe)]
        counts = [s.exec(select(func.count()).select_from(t)).one() for t in (ItemResult, ProbeResult, RoundSample)]
    return tuple(newest + counts)


def cached(ctx: RunContext, kind: str, make):
    """make() once per store state: what coverage, blame and the plots show is a function of the store."""
    key = (ctx.db_url, kind, fingerprint(ctx))
    if key not in _cache:
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = make()
    return _cache[key]


def total_cost(session) -> float:
    return float(session.exec(select(func.sum(LLMCall.cost))).one() or 0.0)


def run_row(ctx: RunContext) -> dict:
    """One line of the runs page: state, stage, alive, best score beside its floors, goal, rounds, cost."""
    loop = ctx.config.loop
    live = is_running(ctx)
    with session_scope(ctx.db_url) as s:
        run = read_run(s, ctx.run_id)
        rows = rounds(s)
        cost = total_cost(s)
    scores = [getattr(r, f"{loop.goal_split}_acc") for r in rows]
    scores = [x for x in scores if x is not None]
    return {"id": ctx.run_id, "state": state_text(run, live), "status": run.status if run else "not started",
            "stage": (run.stage if run else None) or "-", "alive": live, "best": max(scores) if scores else None,
            "goal": loop.goal, "goal_split": loop.goal_split, "rounds": len([r for r in rows if r.id > 0]),
            "max_rounds": loop.max_rounds, "cost": cost}


def runs_page(runs_dir: str, db_url: str | None = None) -> list[dict]:
    """Every run folder's row, then the runs a shared PostgreSQL database holds whose folders are
    elsewhere (listed with their state; their pages need the folder, so they are not linked)."""
    out = []
    ids = list_run_ids(runs_dir)
    for run_id in ids:
        try:
            out.append(run_row(open_run(run_id, runs_dir)))
        except Exception as exc:  # a broken run folder is listed with its error, not hidden
            out.append({"id": run_id, "state": f"unreadable ({type(exc).__name__})", "status": "error", "stage": "-",
                        "alive": False, "best": None, "goal": None, "goal_split": "", "rounds": 0, "max_rounds": 0,
                        "cost": 0.0})
    for run_id, state in runs_elsewhere(db_url, runs_dir, ids):
        out.append({"id": run_id, "state": state, "status": "elsewhere", "stage": "-", "alive": False, "best": None,
                    "goal": None, "goal_split": "", "rounds": 0, "max_rounds": 0, "cost": 0.0, "elsewhere": True})
    return out


def summary(ctx: RunContext) -> dict:
    """The live part of a run's page: state, stage, counts, the rounds table with its baselines and
    paired tests, cost per agent."""
    from pwd_agent.report.status import kb_line, stage_line
    from pwd_agent.store.queries import ledger_by_agent

    cfg = ctx.config
    live = is_running(ctx)
    with session_scope(ctx.db_url) as s:
        run = read_run(s, ctx.run_id)
        floors = split_baselines(s, cfg.tests.one_key)
        rows = rounds(s)
        evaluated = [r.id for r in rows if r.status == "evaluated"]
        repairs = []
        for before, after in zip(evaluated, evaluated[1:]):
            if after >= 2:
                flips = compare(round_passes(s, before, "holdout"), round_passes(s, after, "holdout"))
                repairs.append({"before": before, "after": after, "fixed": flips.fixed, "broken": flips.broken,
                                "p": flips.p_value})
        data = {
            "state": state_text(run, live), "status": run.status if run else "not started", "alive": live,
            "gate": run.gate if run and run.status == "paused" else None,
            "next": next_step(run) if run and not live and run.status != "finished" else None,
            "stage": None if run and run.status == "finished" else stage_line(s, run, datetime.now(timezone.utc), live),
            "kb": kb_line(s),
            "dev": count_rows(s, TestItem, TestItem.split == "dev"),
            "holdout": count_rows(s, TestItem, TestItem.split == "holdout"),
            "v1": count_rows(s, Sample, Sample.origin == "v1"),
            "patch": count_rows(s, Sample, Sample.origin == "patch"),
            "rounds": [r.model_dump() for r in rows],
            "mass": any(r.dev_mass is not None or r.holdout_mass is not None for r in rows),
            "floors": floors, "repairs": repairs,
            "agents": [a._asdict() for a in ledger_by_agent(s)], "cost": total_cost(s),
        }
    data.update(goal=cfg.loop.goal, goal_split=cfg.loop.goal_split, max_rounds=cfg.loop.max_rounds,
                max_cost=cfg.llm.max_cost)
    return data


def event_dict(e: Event) -> dict:
    return {"id": e.id, "time": f"{e.created_at:%H:%M:%S}", "level": e.level, "node": e.node,
            "message": redact(e.message)}


def _filtered(query, level: str, node: str):
    if level in LEVELS and level != LEVELS[0]:
        query = query.where(Event.level.in_(LEVELS[LEVELS.index(level):]))
    if node:
        query = query.where(Event.node == node)
    return query


def recent_events(ctx: RunContext, level: str = "info", node: str = "", limit: int = 300) -> tuple[list[dict], int]:
    """The last `limit` events shown by the filter, oldest first, and the newest event id of all
    (where the live stream starts)."""
    with session_scope(ctx.db_url) as s:
        rows = s.exec(_filtered(select(Event), level, node).order_by(Event.id.desc()).limit(limit)).all()
        last = s.exec(select(func.max(Event.id))).one() or 0
    return [event_dict(e) for e in reversed(rows)], last


def events_since(ctx: RunContext, after: int, level: str = "info", node: str = "",
                 limit: int = 500) -> tuple[list[dict], int]:
    """Events after id `after` shown by the filter, and the newest id looked at."""
    with session_scope(ctx.db_url) as s:
        last = s.exec(select(func.max(Event.id))).one() or 0
        rows = s.exec(_filtered(select(Event).where(Event.id > after, Event.id <= last), level, node)
                      .order_by(Event.id).limit(limit)).all()
    if len(rows) == limit:
        last = rows[-1].id
    return [event_dict(e) for e in rows], last


def event_nodes(ctx: RunContext) -> list[str]:
    with session_scope(ctx.db_url) as s:
        return sorted(s.exec(select(Event.node).distinct()).all())


def kb_page(ctx: RunContext, page: int = 1, per_page: int = 25) -> dict:
    """Chains with their statements and concepts, a page at a time."""
    with session_scope(ctx.db_url) as s:
        n_chains = count_rows(s, Chain)
        chains = s.exec(select(Chain).order_by(Chain.id).offset((page - 1) * per_page).limit(per_page)).all()
        ids = [c.id for c in chains]
        statements = s.exec(select(Statement).where(Statement.chain_id.in_(ids))
                            .order_by(Statement.chain_id, Statement.position)).all() if ids else []
        links = s.exec(select(ConceptStatement).where(
            ConceptStatement.statement_id.in_([st.id for st in statements]))).all() if statements else []
        concepts = {c.id: c for c in s.exec(select(Concept).where(
            Concept.id.in_({link.concept_id for link in links}))).all()} if links else {}
        items = s.exec(select(TestItem.id, TestItem.chain_id, TestItem.split).where(TestItem.chain_id.in_(ids))
                       .order_by(TestItem.id)).all() if ids else []
    concepts_of: dict[int, list[str]] = {}
    for link in links:
        concepts_of.setdefault(link.statement_id, []).append(concepts[link.concept_id].term)
    out = []
    for c in chains:
        out.append({"id": c.id, "process": c.process_name, "domain": c.domain, "summary": c.summary,
                    "statements": [{"id": st.id, "spo": f"{st.subject} {st.predicate} {st.object}",
                                    "quote": st.source_quote, "concepts": concepts_of.get(st.id, [])}
                                   for st in statements if st.chain_id == c.id],
                    "tests": [(i, split) for i, chain_id, split in items if chain_id == c.id]})
    return {"chains": out, "page": page, "pages": max(1, -(-n_chains // per_page)), "n_chains": n_chains}
