"""The agents' log: milestones stored as Event rows and echoed to the `pwd_agent` logger."""

from __future__ import annotations

import logging

from pwd_agent.store import Event, session_scope

logger = logging.getLogger("pwd_agent")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def emit(db_url: str, node: str, message: str, level: str = "info", **data) -> None:
    """Record one event; `pwd-agent logs` and `status` read them back."""
    with session_scope(db_url) as session:
        session.add(Event(node=node, level=level, message=message, data=data))
    logger.log(_LEVELS[level], "[%s] %s", node, message)


class Progress:
    """Reports done/total for a long stage about every quarter of the way."""

    def __init__(self, db_url: str, node: str, unit: str, total: int, already: int = 0):
        self.db_url, self.node, self.unit, self.total = db_url, node, unit, total
        self.done = already
        self.step = max(1, total // 4)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.done == self.total or self.done % self.step == 0:
            emit(self.db_url, self.node, f"{self.done}/{self.total} {self.unit}", "info", done=self.done, total=self.total)
