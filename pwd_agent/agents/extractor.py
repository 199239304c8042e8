"""Extractor agent: one chunk -> L3 chain -> L2 statements -> L1 concepts, quotes checked in code."""

from __future__ import annotations

from dataclasses import dataclass, field

from pwd_agent.agents.runner import run_unit, unit_failure
from pwd_agent.schemas import ChainDraft, ConceptDraft, StatementDraft
from pwd_agent.store import LLMCall

SHORT_CHARS = 200  # schemas.Short: a heading or title the chain is named after is cut to fit


@dataclass
class Extraction:
    chain: ChainDraft | None
    statements: list[StatementDraft] = field(default_factory=list)
    concepts: list[ConceptDraft] = field(default_factory=list)
    calls: list = field(default_factory=list)  # unsaved LLMCall rows, written with the chunk's KB nodes
    failure: str | None = None  # why the unit failed (an answer that failed its schema or checks for good)


class UnitFailed(Exception):
    """An agent answer failed its schema or checks, and re-asks (if any) did not mend it."""


def extract_chunk(backend, text: str, heading: str, title: str) -> Extraction:
    """Top-down extraction. Every statement's source_quote is an exact span of the chunk when it
    gets here: the offline rules cut quotes from the chunk, the LLM backend anchors each quote to the
    chunk's characters and re-asks for one it cannot anchor (agents/quotes.py). An answer that fails
    its schema or checks fails the unit: nothing of it is kept but its ledger rows and the reason."""
    calls: list[LLMCall] = []
    try:
        chain = _ask(backend, calls, "l3_chain", backend.extract_chain, text, fit(heading), fit(title))
        if chain is None:
            return Extraction(chain=None, calls=calls)
        statements = _ask(backend, calls, "l2_statements", backend.extract_statements, text, chain)
        concepts = _ask(backend, calls, "l1_concepts", backend.extract_concepts, text, chain, statements)
    except UnitFailed as failed:
        return Extraction(chain=None, calls=calls, failure=str(failed))
    return Extraction(chain, statements, concepts, calls)


def _ask(backend, calls: list, task: str, fn, *args):
    """One agent call; its ledger rows go to `calls`. Raises UnitFailed when the answer failed its
    schema (the offline rules raise) or every re-ask was rejected (the LLM client's last row)."""
    result, records = run_unit(backend, "extractor", task, fn, *args)
    calls.extend(records)
    if (failure := unit_failure(records)) is not None:
        raise UnitFailed(failure if failure.startswith(f"{task}: ") else f"{task}: {failure}")
    return result


def fit(text: str, limit: int = SHORT_CHARS) -> str:
    """`text` cut at a word boundary to at most `limit` characters (an ellipsis marks the cut)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip() + "…"
