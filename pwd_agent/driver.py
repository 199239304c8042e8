"""Drive a run's graph with its checkpointer (SQLite file or PostgreSQL): start, resume, read the outcome."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from pwd_agent import tracking
from pwd_agent.events import emit
from pwd_agent.graph import build_graph
from pwd_agent.errors import PwdAgentError, RunPaused
from pwd_agent.runstate import mark, mark_ended, mark_started
from pwd_agent.store import ConfigChange, get_engine, session_scope
from pwd_agent.context import RunContext
from pwd_agent.runs import PAUSE_FILE, PENDING_SET_FILE, checked_overrides, context_for, save_overrides


@contextmanager
def checkpointer(ctx: RunContext) -> Iterator[BaseCheckpointSaver]:
    """The run's checkpoints live beside its store: the same PostgreSQL schema, or a SQLite file."""
    from pwd_agent.store import postgres

    if postgres.is_postgres(ctx.db_url):
        get_engine(ctx.db_url)  # the run's schema exists (made with the store, under its lock)
        with postgres.checkpointer(ctx.db_url) as saver:
            yield saver
        return
    conn = sqlite3.connect(ctx.run_dir / "checkpoints.sqlite", check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


def thread(ctx: RunContext) -> dict:
    return {"configurable": {"thread_id": ctx.run_id}, "recursion_limit": 200}


def execute(ctx: RunContext, resume: bool = False, answer: dict | None = None) -> dict:
    """Run the graph to its end; on resume, continue from the last finished node. `answer` is a
    reviewer's decision for the gate the run waits at. However the process leaves the run, the
    Run row says how (runstate.py), after the event that logs it."""
    try:
        return _execute(ctx, resume, answer)
    except RunPaused:
        raise  # the row was written where the pause was decided
    except PwdAgentError as exc:
        end_run(ctx, "stopped", f"stopped: {exc.message}", level="error", event={"hint": exc.hint},
                error=exc.message)
        raise
    except KeyboardInterrupt:
        end_run(ctx, "interrupted", "interrupted (Ctrl-C); state saved", level="warning")
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        end_run(ctx, "crashed", f"crashed: {error}", level="error", error=error)
        raise


def end_run(ctx: RunContext, status: str, message: str, *, level: str = "info",
            event: dict | None = None, **row) -> None:
    """This process leaves the run: log `message` (with `event` data), then write `status` and `row` to the Run row."""
    # The event goes first, so a reader who sees the row's final status also finds the line that explains it.
    emit(ctx.db_url, "run", message, level, **(event or {}))
    mark_ended(ctx.db_url, ctx.run_id, status, **row)


def _execute(ctx: RunContext, resume: bool, answer: dict | None) -> dict:
    (ctx.run_dir / PAUSE_FILE).unlink(missing_ok=True)  # a request left by an earlier process is stale
    with checkpointer(ctx) as saver, tracking.open_trackers(ctx) as trackers:
        graph = build_graph(saver)
        snapshot = graph.get_state(thread(ctx))
        if resume and snapshot.values and not snapshot.next:
            return snapshot.values  # already finished
        if snapshot.interrupts and answer is None:
            raise waiting_error(ctx, snapshot.interrupts[0].value)
        started = resume and bool(snapshot.values)
        mark_started(ctx.db_url, ctx.run_id, ", ".join(snapshot.next) if started else None)
        emit(ctx.db_url, "run", f"{'resuming' if started else 'starting'} run {ctx.run_id}"
             + (f" at {', '.join(snapshot.next)}" if started else ""))
        payload = None if started else {"run_id": ctx.run_id, "round": 0, "scores": [], "counts": {}}
        if answer is not None:
            payload = Command(resume=answer)
        while True:
            ctx, again = _drive(graph, payload, ctx, trackers)
            if not again:
                break
            payload = None  # continue from the checkpoint under the changed config
        tracking.sync(ctx, trackers)
        snapshot = graph.get_state(thread(ctx))
        if snapshot.interrupts:
            waiting = snapshot.interrupts[0].value
            end_run(ctx, "paused", f"paused: waiting at the {waiting['gate']} gate", event={"gate": waiting["gate"]},
                    gate=waiting["gate"], stage=", ".join(snapshot.next))
            raise waiting_error(ctx, waiting)
        values = snapshot.values
        end_run(ctx, "finished", f"finished: {values.get('stop_reason')}",
                event={"reason": values.get("stop_reason")}, stop_reason=values.get("stop_reason"),
                goal_met=bool(values.get("goal_met")), stage=None, round=values.get("round", 0))
        tracking.finish(ctx, trackers)
    return values


def waiting_gate(ctx: RunContext) -> dict | None:
    """What the run waits for at a gate ({"gate": name, ...}), or None."""
    with checkpointer(ctx) as saver:
        snapshot = build_graph(saver).get_state(thread(ctx))
        return snapshot.interrupts[0].value if snapshot.interrupts else None


def waiting_error(ctx: RunContext, waiting: dict) -> RunPaused:
    return RunPaused(f"run {ctx.run_id} waits at the {waiting['gate']} gate",
                     f"`pwd-agent review {ctx.run_id}` shows what waits; answer with "
                     f"`pwd-agent review {ctx.run_id} approve`, `reject --reason TEXT` or `edit FILE`")


def _drive(graph, payload, ctx: RunContext, trackers: list) -> tuple[RunContext, bool]:
    """Stream the graph node by node; between nodes, send new round metrics to the trackers and
    honour `pause` and `set` requests. Returns the (maybe updated) context and whether to go on under it."""
    for _ in graph.stream(payload, thread(ctx), context=ctx, stream_mode="updates", durability="sync"):
        tracking.sync(ctx, trackers)
        snapshot = graph.get_state(thread(ctx))
        if not snapshot.next:
            break  # the last node ran: nothing to pause before
        waiting = ", ".join(snapshot.next)
        mark(ctx.db_url, ctx.run_id, stage=waiting, round=snapshot.values.get("round", 0))
        pause = ctx.run_dir / PAUSE_FILE
        if pause.exists():
            pause.unlink()
            end_run(ctx, "paused", f"paused before {waiting} on request", event={"next": waiting})
            raise RunPaused(f"run {ctx.run_id} paused before {waiting}",
                            f"continue with `pwd-agent resume {ctx.run_id}`")
        changed = apply_pending_sets(ctx)
        if changed is not None:
            return changed, True
    return ctx, False


def apply_pending_sets(ctx: RunContext) -> RunContext | None:
    """Changes `pwd-agent set` left for this running run: applied at a node boundary and logged."""
    import json

    path = ctx.run_dir / PENDING_SET_FILE
    if not path.exists():
        return None
    sets = json.loads(path.read_text())
    path.unlink()
    try:
        updated, changes = checked_overrides(ctx, sets)
    except PwdAgentError as exc:  # validated by `set` already; a race with another change lands here
        emit(ctx.db_url, "run", f"set refused: {exc.message}", "warning")
        return None
    save_overrides(ctx, updated)
    record_changes(ctx, changes, "set mid-run")
    return context_for(updated, ctx.run_dir)


def record_changes(ctx: RunContext, changes: list[tuple[str, object, object]], how: str) -> None:
    """Each config change as an event: `how` says where it came from (resume, set, mid-run)."""
    for key, old, new in changes:
        emit(ctx.db_url, "run", f"config {how}: {key} {old!r} -> {new!r}", key=key, old=old, new=new)
    with session_scope(ctx.db_url) as session:
        session.add_all(ConfigChange(key=key, old=old, new=new, how=how) for key, old, new in changes)


def final_state(ctx: RunContext) -> dict:
    with checkpointer(ctx) as saver:
        snapshot = build_graph(saver).get_state(thread(ctx))
        return {"values": snapshot.values, "next": list(snapshot.next)}
