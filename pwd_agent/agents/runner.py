"""Running the agents: a backend call -> validated pydantic object, each call recorded in the ledger."""

from __future__ import annotations

import hashlib
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

from pydantic import ValidationError
from sqlmodel import Session

from pwd_agent.errors import first_error
from pwd_agent.store import LLMCall, session_scope


def make_backend(ctx, bulk: bool = False):
    """The agent backend named by `llm.backend`, built by its factory in llm/ (llm/backends.py's table);
    `bulk` (extraction, test items, V1 samples) sends first requests through the Batch API when
    llm.batch is on; the Debugger's calls stay live."""
    from pwd_agent.llm.backends import backend_factory

    return backend_factory(ctx.config.llm.backend)(ctx, bulk)


def workers_for(backend, config) -> int:
    """Units in flight at once: rules gain nothing from threads, and one at a time keeps their
    ids (and everything keyed by them) reproducible; in batch mode a wave of llm.batch_size units
    waits on batches (live calls are still bounded by llm.max_concurrency)."""
    if backend.name == "offline":
        return 1
    batching = getattr(getattr(backend, "client", None), "batcher", None) is not None
    return config.llm.batch_size if batching else config.llm.max_concurrency


def run_agent(backend, agent: str, task: str, fn: Callable[..., Any], *args) -> tuple[Any, list[LLMCall]]:
    """Run one agent call; returns its result and the (unsaved) ledger rows it made; thread-safe."""
    if backend.name != "offline":
        from pwd_agent.llm.openai_compat import take_records

        take_records()  # start this unit with an empty list
        result = fn(*args)
        return result, take_records()
    digest = hashlib.sha256(repr((task, args)).encode()).hexdigest()[:16]
    start = time.perf_counter()
    result = fn(*args)
    row = LLMCall(agent=agent, prompt_name=f"offline/{task}", prompt_version=backend.version, prompt_hash=digest,
                  model="offline-rules", latency_s=time.perf_counter() - start)
    return result, [row]


def run_unit(backend, agent: str, task: str, fn: Callable[..., Any], *args,
             empty: Any = None) -> tuple[Any, list[LLMCall]]:
    """run_agent for a unit that must not stop the run: an offline answer that fails its schema
    comes back as `empty` with a failed ledger row naming the reason (the LLM client already records
    an answer it could not mend and returns nothing)."""
    try:
        return run_agent(backend, agent, task, fn, *args)
    except ValidationError as exc:
        return empty, [failed_call(backend, agent, task, exc)]


def failed_call(backend, agent: str, task: str, exc: ValidationError) -> LLMCall:
    """The ledger row of an answer that failed its schema: the first error, as one line."""
    where, message, _ = first_error(exc, exc.title)
    reason = f"{task}: {where}: {message}"
    return LLMCall(agent=agent, prompt_name=f"{backend.name}/{task}", ok=False, error=reason,
                   model="offline-rules" if backend.name == "offline" else backend.name,
                   prompt_version=getattr(backend, "version", ""), prompt_hash="")


def unit_failure(calls: list[LLMCall]) -> str | None:
    """Why a call failed for good (its last ledger row failed: earlier rows may be re-asks that
    mended it), or None."""
    return (calls[-1].error or "rejected") if calls and not calls[-1].ok else None


def warn_failures(ctx, node: str, unit: str, failures: list[str]) -> None:
    """A warning in the run log per failed call of a unit; the run goes on."""
    from pwd_agent.events import announce

    with session_scope(ctx.db_url) as session:
        events = record_failures(session, node, unit, failures)
    for event in events:
        announce(event)


def record_failures(session: Session, node: str, unit: str, failures: list[str]) -> list:
    """warn_failures' events, added to the unit's own open transaction (announce them after its commit)."""
    from pwd_agent.events import record

    return [record(session, node, f"{unit} failed: {failure}", "warning", failure=failure) for failure in failures]


def call_agent(session: Session, backend, agent: str, task: str, fn: Callable[..., Any], *args) -> Any:
    """run_agent, writing the ledger rows into `session` (the unit's own transaction)."""
    result, records = run_agent(backend, agent, task, fn, *args)
    session.add_all(records)
    return result


def map_units(fn: Callable[[Any], Any], units: Iterable[Any], workers: int) -> Iterator[tuple[Any, Any]]:
    """(unit, fn(unit)) in completion order, `workers` at a time; the caller stores each result.
    `units` is read lazily, a window of 2 x workers ahead of the results, and a finished unit is
    dropped once the caller has it, so a stage's memory follows the window, not the corpus, and a
    unit's inputs can be read from the store while earlier units' calls are in flight."""
    if workers <= 1:
        for unit in units:
            yield unit, fn(unit)
        return
    pending: dict[Future, Any] = {}
    source = iter(units)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            _top_up(pool, fn, source, pending, 2 * workers)
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    unit = pending.pop(future)
                    yield unit, future.result()
                    _top_up(pool, fn, source, pending, 2 * workers)
        except BaseException:
            for future in pending:
                future.cancel()
            if "pwd_agent.llm.batch" in sys.modules:  # threads waiting on a batch would hold the pool open
                sys.modules["pwd_agent.llm.batch"].abandon_all()
            raise


def _top_up(pool: ThreadPoolExecutor, fn: Callable, source: Iterator, pending: dict, window: int) -> None:
    """Submit units from `source` until `window` are in flight or it runs out."""
    for unit in islice(source, max(window - len(pending), 0)):
        pending[pool.submit(fn, unit)] = unit
