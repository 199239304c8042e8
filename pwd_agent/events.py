"""The agents' log: milestones stored as Event rows and echoed to the `pwd_agent` logger."""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

from pwd_agent.store import Event, session_scope

logger = logging.getLogger("pwd_agent")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
LEVELS = tuple(_LEVELS)  # lowest first


def emit(db_url: str, node: str, message: str, level: str = "info", **data) -> None:
    """Record one event; `pwd-agent logs` and `status` read them back."""
    with session_scope(db_url) as session:
        event = record(session, node, message, level, **data)
    announce(event)


def record(session, node: str, message: str, level: str = "info", **data) -> Event:
    """emit's row, added to the caller's open transaction (a unit's events commit with its rows: one
    commit a unit, not two); the caller passes it to announce() once that transaction has committed."""
    event = Event(node=node, level=level, message=message, data=data)
    session.add(event)
    return event


def announce(event: Event) -> None:
    """What follows a committed event: its log line, the progress sink, the kill point."""
    logger.log(_LEVELS[event.level], "[%s] %s", event.node, event.message)
    data = event.data
    if _sink is not None and "done" in data and "total" in data:
        _sink.update(event.node, int(data["done"]), int(data["total"]))
    _kill_point(event.node)


_sink = None


def set_progress_sink(sink) -> None:
    """Where (node, done, total) of progress events go besides the log: the CLI's bars, or None."""
    global _sink
    if _sink is not None and sink is None:
        _sink.close()
    _sink = sink


_seen: Counter = Counter()


def _kill_point(node: str) -> None:
    """Fault injection for the resume tests: with PWD_AGENT_KILL_AT=NODE:N the process SIGKILLs
    itself right after the N-th event NODE records (a real SIGKILL: nothing is flushed or closed)."""
    target = os.environ.get("PWD_AGENT_KILL_AT")
    if not target:
        return
    _seen[node] += 1
    if target == f"{node}:{_seen[node]}":
        os.kill(os.getpid(), signal.SIGKILL)


# The agent whose LLM calls a stage's progress lines report (tokens and cost so far).
STAGE_AGENT = {"extract": "extractor", "build_tests": "tester", "synthesize": "builder"}


def agent_spend(session, agent: str | None) -> dict:
    """{"agent", "calls", "tokens", "cost"} of one agent's ledger so far ({} for no agent)."""
    from pwd_agent.store.queries import ledger_by_agent

    if agent is None:
        return {}
    row = next((r for r in ledger_by_agent(session) if r.agent == agent), None)
    if row is None:
        return {"agent": agent, "calls": 0, "tokens": 0, "cost": 0.0}
    return {"agent": agent, "calls": row.calls, "tokens": row.tokens, "cost": row.cost}


class Progress:
    """Reports done/total for a long stage about every quarter of the way, with the stage agent's
    calls, tokens and cost so far when it calls an LLM."""

    def __init__(self, db_url: str, node: str, unit: str, total: int, already: int = 0):
        self.db_url, self.node, self.unit, self.total = db_url, node, unit, total
        self.done = already
        self.step = max(1, total // 4)

    def advance(self, n: int = 1) -> None:
        """Every unit is a debug event (`logs --level debug`); about every quarter an info one."""
        with session_scope(self.db_url) as session:
            event = self.record(session, n)
        announce(event)

    def record(self, session, n: int = 1) -> Event:
        """advance's event, added to the unit's own open transaction (see `record`); the ledger it
        reports is read there, so it counts the unit's own calls as advance after the commit does."""
        self.done += n
        milestone = self.done == self.total or self.done % self.step == 0
        spend = agent_spend(session, STAGE_AGENT.get(self.node)) if milestone else {}
        suffix = (f" · {spend['agent']} {spend['calls']} calls, {spend['tokens']} tokens, ${spend['cost']:.4f}"
                  if spend.get("tokens") else "")  # the offline rules spend no tokens: nothing to say
        return record(session, self.node, f"{self.done}/{self.total} {self.unit}{suffix}",
                      "info" if milestone else "debug", done=self.done, total=self.total, **spend)
