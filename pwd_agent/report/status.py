"""Plain-text views of a run's store: the status table, the log lines, the runs list."""

from __future__ import annotations

from sqlalchemy import Integer, cast
from sqlmodel import Session, func, select

from pwd_agent.events import LEVELS
from pwd_agent.runs import RunContext
from pwd_agent.store import (
    Chain, Chunk, Concept, Document, Event, LeakedSample, LLMCall, Sample, Statement, TestItem, session_scope,
)
from pwd_agent.store.queries import count_rows, rounds


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def stop_reason(session: Session) -> str | None:
    events = session.exec(select(Event).where(Event.node == "decide").order_by(Event.id.desc())).all()
    return next((e.data["reason"] for e in events if "reason" in e.data), None)


def kb_line(session: Session) -> str:
    return (f"KB: {count_rows(session, Document)} documents, {count_rows(session, Chunk)} chunks, "
            f"{count_rows(session, Chain)} chains, {count_rows(session, Statement)} statements, "
            f"{count_rows(session, Concept)} concepts")


def render_status(ctx: RunContext) -> str:
    """The run at a glance: KB counts, benchmark, one row per round, the stop reason."""
    loop = ctx.config.loop
    with session_scope(ctx.db_url) as session:
        reason = stop_reason(session)
        lines = [
            f"run {ctx.run_id}: {'stopped (' + reason + ')' if reason else 'not finished'}",
            kb_line(session),
            f"tests: {count_rows(session, TestItem, TestItem.split == 'dev')} dev, "
            f"{count_rows(session, TestItem, TestItem.split == 'holdout')} holdout; "
            f"goal {loop.goal:.3f} on {loop.goal_split}",
            f"training data: {count_rows(session, Sample, Sample.origin == 'v1')} V1, "
            f"{count_rows(session, Sample, Sample.origin == 'patch')} patch; "
            f"{count_rows(session, LeakedSample)} dropped by the leakage gate",
            "",
            f"{'round':>5}  {'status':<10} {'train':>5} {'patch':>5} {'replay':>6} {'loss':>6} {'dev':>6} {'holdout':>7}"
            f" {'general':>7}  {'fixed':>5} {'broken':>6} {'p':>6}",
        ]
        for r in rounds(session):
            loss = "-" if r.train_loss is None else f"{r.train_loss:.3f}"
            flips = (f"{r.fixed:>5} {r.broken:>6} {r.gain_p:>6.3f}" if r.gain_p is not None else f"{'-':>5} {'-':>6} {'-':>6}")
            lines.append(f"{r.id:>5}  {r.status:<10} {r.n_train:>5} {r.n_patch:>5} {r.n_replay:>6} "
                         f"{loss:>6} {_pct(r.dev_acc):>6} {_pct(r.holdout_acc):>7} {_pct(r.general_acc):>7}  {flips}")
        lines += ["", *llm_lines(session)]
    return "\n".join(lines)


def ledger_by_agent(session: Session) -> list[tuple[str, int, int, int, int, int, float]]:
    """Per agent, from the LLMCall ledger: calls, cache hits, failures, tokens in, tokens out, cost."""
    rows = session.exec(
        select(LLMCall.agent, func.count(), func.sum(cast(LLMCall.cache_hit, Integer)), func.sum(LLMCall.input_tokens),
               func.sum(LLMCall.output_tokens), func.sum(LLMCall.cost), func.sum(cast(LLMCall.ok, Integer)))
        .group_by(LLMCall.agent).order_by(LLMCall.agent)
    ).all()
    return [(agent, calls, cached or 0, calls - (ok or 0), tokens_in or 0, tokens_out or 0, cost or 0.0)
            for agent, calls, cached, tokens_in, tokens_out, cost, ok in rows]


def llm_lines(session: Session) -> list[str]:
    """Agent calls, cache hits, tokens and cost per stage (agent)."""
    lines = [f"{'agent':<10} {'calls':>6} {'cached':>6} {'failed':>6} {'tokens in':>10} {'tokens out':>10} {'cost':>8}"]
    for agent, calls, cached, failed, tokens_in, tokens_out, cost in ledger_by_agent(session):
        lines.append(f"{agent:<10} {calls:>6} {cached:>6} {failed:>6} {tokens_in:>10} {tokens_out:>10} {cost:>8.4f}")
    return lines


def is_terminal(event: Event) -> bool:
    """The run's last event of a process: finished, stopped on an error, or paused."""
    return event.node == "run" and event.message.startswith(("finished", "stopped", "paused"))


def event_json(event: Event) -> str:
    import json

    return json.dumps({"id": event.id, "time": event.created_at.isoformat(), "level": event.level, "node": event.node,
                       "message": event.message, "data": event.data}, default=str)


def format_event(event: Event) -> str:
    return f"{event.created_at:%H:%M:%S} {event.level:<7} [{event.node}] {event.message}"


def events_after(db_url: str, last_id: int) -> list[Event]:
    with session_scope(db_url) as session:
        return list(session.exec(select(Event).where(Event.id > last_id).order_by(Event.id)).all())


def event_shown(event: Event, level: str, nodes: list[str]) -> bool:
    """At `level` or above, and from one of `nodes` when any are named."""
    return LEVELS.index(event.level) >= LEVELS.index(level) and (not nodes or event.node in nodes)


def run_summary(ctx: RunContext) -> tuple[str, str, str]:
    """(run id, state, best goal-split score) for `pwd-agent list`."""
    with session_scope(ctx.db_url) as session:
        reason = stop_reason(session) or "not finished"
        scores = [getattr(r, f"{ctx.config.loop.goal_split}_acc") for r in rounds(session)]
    scores = [s for s in scores if s is not None]
    return ctx.run_id, reason, _pct(max(scores)) if scores else "-"
