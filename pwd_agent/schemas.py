"""Pydantic schemas the agents return (offline rules and LLM backends alike), validated before rows.

A leaf: the store (KB views), llm/ (the backends), agents/ and the nodes all import it, so it imports
nothing of the package but `prompting.LETTERS`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from pwd_agent.prompting import LETTERS


# The facets of a chain that its test items ask about, item `variant` on facet `variant % 6`, so a
# chain's dev and holdout items test the same knowledge from different sides. Both backends use
# this order: the LLM tester gets the description, the offline rules write the first three.
ITEM_FACETS = {
    "order": "the order of the steps: which step comes directly after which",
    "later": "what follows from a given step: which events happen later in the process, and which happen before it",
    "member": "which steps belong to this process, against steps of similar processes",
    "precondition": "the preconditions: what must hold before the process or a step can start, and what goes "
                    "wrong if it does not",
    "pitfall": "the common confusions and what the process excludes",
    "application": "applying the process to a concrete situation: what happens next, or what an operator must do",
}


# Bounds on every list and string: an LLM answer always ends (llama.cpp turns them into its
# grammar), and nothing unbounded reaches the store.
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Sentence = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Passage = Annotated[str, StringConstraints(min_length=1, max_length=1500)]


class ChainDraft(BaseModel):
    """L3: one causal / procedural chain."""

    process_name: Short
    domain: Short
    summary: Sentence
    preconditions: list[Sentence] = Field([], max_length=5)
    negative_constraints: list[Sentence] = Field([], max_length=5)
    steps: list[Sentence] = Field(min_length=2, max_length=12)


class StatementDraft(BaseModel):
    """L2: one (subject, predicate, object) per adjacent step pair, with an exact source quote."""

    position: int = Field(ge=0, le=20, description="Index of the step pair (step i -> step i+1).")
    subject: Sentence
    predicate: Short
    object: Sentence
    source_quote: Passage


class ConceptDraft(BaseModel):
    """L1: a canonical term and its definition; `statements` index the chunk's statements."""

    term: Short
    type: Short = "term"
    definition: Passage
    statements: list[int] = Field([], max_length=20)


class KBChain(ChainDraft):
    id: int


class KBStatement(StatementDraft):
    id: int
    chain_id: int


def step_nodes(statements: list[KBStatement]) -> dict[int, int]:
    """Step index -> the statement that places that step: the pair it ends (the first step: the pair
    it starts). Every tester maps an option about step k to a statement by this one rule, so the
    Debugger localises the same way whichever backend wrote the item."""
    if not statements:
        return {}
    first = min(statements, key=lambda st: st.position)
    return {first.position: first.id} | {st.position + 1: st.id for st in statements}


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

    kind: Literal["qa", "choice", "tf", "concept", "walk", "counterfactual", "contrast", "text"]
    prompt: str  # empty for kind "text": plain text, trained without the chat layout
    answer: str
    statement_ids: list[int] = []
    concept_ids: list[int] = []


class DiagnosisDraft(BaseModel):
    """Why a test item failed: the located knowledge nodes and the evidence."""

    kind: Literal["untaught", "concept_gap", "chain_break", "item_suspect", "unknown"]
    statement_ids: list[int] = []
    concept_ids: list[int] = []
    evidence: dict = {}
    confidence: float = Field(0.5, ge=0, le=1)
