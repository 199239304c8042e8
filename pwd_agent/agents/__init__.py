"""The agents' work: backend call -> validated pydantic object, each call recorded in the ledger."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable

from sqlmodel import Session

from pwd_agent.config import RunConfig
from pwd_agent.store import LLMCall


def make_backend(config: RunConfig):
    """The agent backend named by `llm.backend` (imported only when chosen)."""
    if config.llm.backend == "offline":
        from pwd_agent.llm.offline import OfflineAgents

        return OfflineAgents(config.extract.min_steps, config.extract.max_steps, config.tests.seed)
    raise ValueError(f"unknown llm.backend {config.llm.backend}")  # config validation prevents this


def call_agent(session: Session, backend, agent: str, task: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Run one agent call and write its LLMCall ledger row (offline calls cost nothing)."""
    digest = hashlib.sha256(repr((task, args, sorted(kwargs.items()))).encode()).hexdigest()[:16]
    start = time.perf_counter()
    ok = True
    try:
        return fn(*args, **kwargs)
    except Exception:
        ok = False
        raise
    finally:
        session.add(
            LLMCall(
                agent=agent, prompt_name=f"{backend.name}/{task}", prompt_version=backend.version,
                prompt_hash=digest, model=backend.name, latency_s=time.perf_counter() - start, ok=ok,
            )
        )
