"""The Run row: the driver writes a run's state there, and readers take it from there, never from log text."""

from __future__ import annotations

import os

from sqlmodel import Session

from pwd_agent.store import Run, session_scope
from pwd_agent.store.models import utcnow

# How a process can leave a run; "running" with no process holding the run lock means it was killed.
ENDED = ("paused", "finished", "stopped", "interrupted", "crashed")


def mark(db_url: str, run_id: str, **fields) -> None:
    """Update the run's row (made on the first call)."""
    with session_scope(db_url) as session:
        row = session.get(Run, run_id) or Run(run_id=run_id)
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        session.add(row)


def mark_started(db_url: str, run_id: str, stage: str | None) -> None:
    """This process drives the run from now on."""
    mark(db_url, run_id, status="running", pid=os.getpid(), process_started_at=utcnow(), finished_at=None,
         error=None, gate=None, stage=stage)


def mark_ended(db_url: str, run_id: str, status: str, **fields) -> None:
    """This process leaves the run: `status` is one of ENDED."""
    assert status in ENDED, status
    mark(db_url, run_id, status=status, finished_at=utcnow(), **fields)


def read_run(session: Session, run_id: str) -> Run | None:
    """The run's row; None before its first start (or in a store older than the table)."""
    return session.get(Run, run_id)


def next_step(run: Run) -> str:
    """The command that takes a stopped run on: `review` at a gate, else `resume`."""
    verb = "review" if run.status == "paused" and run.gate else "resume"
    return f"pwd-agent {verb} {run.run_id}"


def state_text(run: Run | None, live: bool) -> str:
    """The run's state in a few words, for `status` and `list`; `live`: a process holds the run lock."""
    if run is None:
        return "running" if live else "not started"
    if live or run.status == "running":
        return "running" if live else "not running, its process died"
    return {
        "paused": f"waiting at the {run.gate} gate" if run.gate else f"paused before {run.stage} on request",
        "finished": f"finished ({run.stop_reason})",
        "stopped": f"stopped on an error ({run.error})",
        "interrupted": "interrupted (Ctrl-C)",
        "crashed": f"crashed ({run.error})",
    }[run.status]
