"""Extractor agent: one chunk -> L3 chain -> L2 statements -> L1 concepts, quotes checked in code."""

from __future__ import annotations

from dataclasses import dataclass, field

from pwd_agent.agents import run_agent
from pwd_agent.agents.schemas import ChainDraft, ConceptDraft, StatementDraft


@dataclass
class Extraction:
    chain: ChainDraft | None
    statements: list[StatementDraft] = field(default_factory=list)
    concepts: list[ConceptDraft] = field(default_factory=list)
    rejected_quotes: int = 0
    calls: list = field(default_factory=list)  # unsaved LLMCall rows, written with the chunk's KB nodes


def extract_chunk(backend, text: str, heading: str, title: str) -> Extraction:
    """Top-down extraction; a statement whose source_quote is not an exact span of the chunk is dropped."""
    chain, calls = run_agent(backend, "extractor", "l3_chain", backend.extract_chain, text, heading, title)
    if chain is None:
        return Extraction(chain=None, calls=calls)
    drafted, more = run_agent(backend, "extractor", "l2_statements", backend.extract_statements, text, chain)
    statements = [s for s in drafted if s.source_quote in text]
    concepts, rest = run_agent(backend, "extractor", "l1_concepts", backend.extract_concepts, text, chain, statements)
    return Extraction(chain, statements, concepts, len(drafted) - len(statements), calls + more + rest)
