"""Pydantic schemas the agents return (offline rules and LLM backends alike), validated before rows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from pwd_agent.prompting import LETTERS


class ChainDraft(BaseModel):
    """L3: one causal / procedural chain."""

    process_name: str
    domain: str
    summary: str
    preconditions: list[str] = []
    negative_constraints: list[str] = []
    steps: list[str] = Field(min_length=2)


class StatementDraft(BaseModel):
    """L2: one (subject, predicate, object) per adjacent step pair, with an exact source quote."""

    position: int = Field(ge=0, description="Index of the step pair (step i -> step i+1).")
    subject: str
    predicate: str
    object: str
    source_quote: str = Field(min_length=1)


class ConceptDraft(BaseModel):
    """L1: a canonical term and its definition; `statements` index the chunk's statements."""

    term: str
    type: str = "term"
    definition: str
    statements: list[int] = []


class KBChain(ChainDraft):
    id: int


class KBStatement(StatementDraft):
    id: int
    chain_id: int


class KBConcept(ConceptDraft):
    id: int
    statement_ids: list[int] = []


class TestItemDraft(BaseModel):
    """A multiple-choice unit test: four options, one to four keys, the answer as sorted letters."""

    __test__ = False
    question: str
    options: list[str] = Field(min_length=4, max_length=4)
    option_kinds: list[str] = Field(min_length=4, max_length=4)
    option_statements: list[int | None] = Field(min_length=4, max_length=4)
    answer: str

    @field_validator("answer")
    @classmethod
    def _sorted_letters(cls, value: str) -> str:
        letters = value.replace(" ", "").split(",")
        if not letters or any(x not in LETTERS for x in letters) or letters != sorted(set(letters)):
            raise ValueError(f"answer must be sorted distinct letters A-D like 'A,C', got '{value}'")
        return ",".join(letters)


class SampleDraft(BaseModel):
    """A training sample: the answer comes first, then a short explanation."""

    kind: Literal["qa", "choice", "tf", "concept", "walk", "counterfactual", "contrast"]
    prompt: str
    answer: str
    statement_ids: list[int] = []
    concept_ids: list[int] = []


class DiagnosisDraft(BaseModel):
    """Why a test item failed: the located knowledge nodes and the evidence."""

    kind: Literal["concept_gap", "chain_break", "unknown"]
    statement_ids: list[int] = []
    concept_ids: list[int] = []
    evidence: dict = {}
    confidence: float = Field(0.5, ge=0, le=1)
