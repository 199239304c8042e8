"""Drive a run's graph with its SQLite checkpointer: start, resume, and read the outcome."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Iterator

from langgraph.checkpoint.sqlite import SqliteSaver

from pwd_agent.events import emit
from pwd_agent.graph import build_graph
from pwd_agent.runs import RunContext


@contextmanager
def checkpointer(ctx: RunContext) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(ctx.run_dir / "checkpoints.sqlite", check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


def thread(ctx: RunContext) -> dict:
    return {"configurable": {"thread_id": ctx.run_id}, "recursion_limit": 200}


def execute(ctx: RunContext, resume: bool = False) -> dict:
    """Run the graph to its end; on resume, continue from the last finished node."""
    with checkpointer(ctx) as saver:
        graph = build_graph(saver)
        snapshot = graph.get_state(thread(ctx))
        if resume and snapshot.values and not snapshot.next:
            return snapshot.values  # already finished
        started = resume and bool(snapshot.values)
        emit(ctx.db_url, "run", f"{'resuming' if started else 'starting'} run {ctx.run_id}"
             + (f" at {', '.join(snapshot.next)}" if started else ""))
        payload = None if started else {"run_id": ctx.run_id, "round": 0, "scores": [], "counts": {}}
        graph.invoke(payload, thread(ctx), context=ctx)
        values = graph.get_state(thread(ctx)).values
    emit(ctx.db_url, "run", f"finished: {values.get('stop_reason')}", reason=values.get("stop_reason"))
    return values


def final_state(ctx: RunContext) -> dict:
    with checkpointer(ctx) as saver:
        snapshot = build_graph(saver).get_state(thread(ctx))
        return {"values": snapshot.values, "next": list(snapshot.next)}
