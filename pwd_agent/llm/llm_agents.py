"""LLM agents: every role as prompt file -> structured answer -> checks in code -> the shared drafts.

Same methods and drafts as llm/offline.py, so switching `llm.backend` changes no node.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pwd_agent.llm.quotes import anchor_quote
from pwd_agent.schemas import (
    ITEM_FACETS,
    ChainDraft,
    Passage,
    Sentence,
    Short,
    ConceptDraft,
    DiagnosisDraft,
    KBChain,
    KBConcept,
    KBStatement,
    SampleDraft,
    StatementDraft,
    TestItemDraft,
    step_nodes,
)
from pwd_agent.llm.backends import item_style
from pwd_agent.llm.openai_compat import StructuredClient
from pwd_agent.prompting import PROMPTS_DIR, letters_of, load_prompt, render_choice_prompt

# ---- what the LLM is asked to return (validated before anything is stored) ----------------


class ChainAnswer(BaseModel):
    chain: ChainDraft | None


class StatementsAnswer(BaseModel):
    statements: list[StatementDraft] = Field(max_length=12)


class ConceptsAnswer(BaseModel):
    concepts: list[ConceptDraft] = Field(max_length=10)


class ItemOption(BaseModel):
    text: Sentence
    correct: bool
    fault: Short = "none"
    step: int | None = None


class ItemAnswer(BaseModel):
    question: Passage
    options: list[ItemOption] = Field(min_length=4, max_length=4)


class SampleOption(BaseModel):
    text: Sentence
    correct: bool


class SampleItem(BaseModel):
    kind: Literal["qa", "choice", "tf"]
    question: Passage
    options: list[SampleOption] = Field([], max_length=4)
    correct: bool | None = None
    answer: Passage
    statements: list[int] = Field([], max_length=12)


class SamplesAnswer(BaseModel):
    samples: list[SampleItem] = Field(max_length=40)


class JudgeAnswer(BaseModel):
    kind: Literal["concept_gap", "chain_break"]
    statements: list[int] = Field([], max_length=12)
    reason: Sentence
    confidence: float = Field(ge=0, le=1)


def strip_label(text: str) -> str:
    """An option without a leading enumerator ("1.", "B)", "(c)"): letters are ours to assign."""
    return re.sub(r"^\s*\(?([A-Da-d]|\d)[.):]\s+", "", text).strip()


def numbered(lines: list[str]) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines))


def facts(statements: list[KBStatement]) -> str:
    return numbered([f"{s.subject} {s.predicate} {s.object} (text: \"{s.source_quote}\")" for s in statements])


def from_context(ctx, bulk: bool = False) -> "LLMAgents":
    """llm.backend=openai: the roles on a StructuredClient that starts from the run's LLM spend so far,
    with the shared response cache when llm.cache is on; `bulk` lets it batch (llm.batch)."""
    from sqlmodel import func, select

    from pwd_agent.config import cache_root
    from pwd_agent.llm.cache import ResponseCache
    from pwd_agent.store import LLMCall, session_scope

    config = ctx.config
    with session_scope(ctx.db_url) as session:
        spent = session.exec(select(func.coalesce(func.sum(LLMCall.cost), 0.0))).one()
    cache = ResponseCache(cache_root() / "llm_cache.sqlite") if config.llm.cache else None
    client = StructuredClient(config.llm, cache, spent=spent, batch_store=ctx.db_url if bulk else None)
    return LLMAgents(client, config.llm.prompts_dir, config.tests.seed, *item_style(config.tests))


class LLMAgents:
    """The extractor, tester, builder and debugger roles on an OpenAI-compatible endpoint."""

    name = "openai"

    def __init__(self, client: StructuredClient, prompts_dir: str | None = None, seed: int = 0,
                 facets: tuple[str, ...] = (), one_key: bool = False, same_process: bool = False,
                 anchored: bool = False):
        self.client = client
        self.prompts_dir = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
        self.seed = seed
        self.facets = tuple(facets) or tuple(ITEM_FACETS)  # tests.facets, cycled over a chain's items
        self.one_key = one_key  # tests.keys=one
        self.same_process = same_process  # tests.distractors=same_process (or same_anchor)
        self.anchored = anchored  # tests.distractors=same_anchor

    def _anchored_order(self, facet: str) -> bool:
        """tests.distractors=same_anchor applies to this facet's items: every option opens on the key's first step."""
        return self.anchored and facet == "order"

    def _distractor_rule(self, facet: str) -> str:
        """The tests.distractors setting as an instruction to the tester (empty for `any`)."""
        if self._anchored_order(facet):
            return ("Every option names the same step first, the correct one's first step, and a different step "
                    "of this process as the one right after it; only the step named second may differ.")
        if self.same_process:
            return ("Every wrong option is about this process's own steps (wrong order, a skipped step, a "
                    "step put too early or too late), never about another process.")
        return ""

    def _prompt(self, name: str):
        return load_prompt(name, self.prompts_dir)

    # ---- extractor ----------------------------------------------------------------------------
    def extract_chain(self, chunk_text: str, heading: str, title: str) -> ChainDraft | None:
        def check(answer: ChainAnswer) -> str | None:
            if answer.chain is None:
                return None
            steps = [s.strip().lower() for s in answer.chain.steps]
            if len(set(steps)) < len(steps):
                return "steps repeat: each step must be a different event, in order"
            if not any(word in chunk_text.lower() for s in steps for word in s.split() if len(word) > 6):
                return "the steps do not use the passage's words: take them from the passage"
            return None

        answer = self.client.ask("extractor", self._prompt("extract/l3_chain"),
                                 {"title": title, "heading": heading, "chunk": chunk_text}, ChainAnswer, check)
        return answer.chain if answer else None

    def extract_statements(self, chunk_text: str, chain: ChainDraft) -> list[StatementDraft]:
        def check(answer: StatementsAnswer) -> str | None:
            for st in answer.statements:
                if anchor_quote(st.source_quote, chunk_text) is None:
                    return (f"source_quote {st.source_quote[:80]!r} is not copied from the passage "
                            "(or is under 12 characters)")
                if not 0 <= st.position < len(chain.steps) - 1:
                    return f"position {st.position} is not the index of an adjacent step pair"
            return None

        answer = self.client.ask("extractor", self._prompt("extract/l2_statements"),
                                 {"chunk": chunk_text, "steps": numbered(chain.steps)}, StatementsAnswer, check)
        if not answer:
            return []
        # Store the passage's own characters, not the model's copy of them.
        return [st.model_copy(update={"source_quote": anchor_quote(st.source_quote, chunk_text)})
                for st in answer.statements]

    def extract_concepts(self, chunk_text: str, chain: ChainDraft,
                         statements: list[StatementDraft]) -> list[ConceptDraft]:
        def check(answer: ConceptsAnswer) -> str | None:
            for c in answer.concepts:
                bad = [i for i in c.statements if not 0 <= i < len(statements)]
                if bad:
                    return f"concept {c.term!r} cites statements {bad}, which do not exist"
            return None

        if not statements:
            return []
        lines = [f"{s.subject} {s.predicate} {s.object}" for s in statements]
        answer = self.client.ask("extractor", self._prompt("extract/l1_concepts"),
                                 {"chunk": chunk_text, "statements": numbered(lines)}, ConceptsAnswer, check)
        if not answer:
            return []
        return [c.model_copy(update={"term": c.term.strip().lower()}) for c in answer.concepts if c.term.strip()]

    # ---- tester -------------------------------------------------------------------------------
    def write_test_item(self, chain: KBChain, statements: list[KBStatement], foreign_steps: list[str],
                        variant: int) -> TestItemDraft | None:
        def check(answer: ItemAnswer) -> str | None:
            if not any(o.correct for o in answer.options):
                return "at least one option must be correct"
            if self.one_key and sum(o.correct for o in answer.options) != 1:
                return "exactly one option must be correct"
            if len({strip_label(o.text).lower() for o in answer.options}) < 4:
                return "the four options must say four different things"
            return None

        facet = self.facets[variant % len(self.facets)]
        variables = {
            "process_name": chain.process_name, "domain": chain.domain, "summary": chain.summary,
            "preconditions": "; ".join(chain.preconditions) or "none stated",
            "negative_constraints": "; ".join(chain.negative_constraints) or "none stated",
            "steps": numbered(chain.steps), "variant": variant + 1,
            "facet": ITEM_FACETS[facet],
            "keys": "Exactly one of them is correct" if self.one_key else "Between 1 and 4 of them are correct",
            "distractors": self._distractor_rule(facet),
        }
        answer = self.client.ask("tester", self._prompt("tests/test_item"), variables, ItemAnswer, check)
        if answer is None:
            return None
        # The LLM says which options are right; the node places the letters (place_letters), so
        # keys stay balanced across the benchmark whatever order the model wrote them in.
        options = answer.options
        by_step = step_nodes(statements)
        # A same-anchor order item's wrong options rest on no statement (as the offline rules write
        # them): a chosen one shows only that the key's own statement is not known.
        anchored = self._anchored_order(facet)
        return TestItemDraft(
            question=answer.question,
            options=[strip_label(o.text) for o in options],
            option_kinds=["key" if o.correct else (o.fault or "distractor") for o in options],
            option_statements=[by_step.get(o.step) if o.step is not None and (o.correct or not anchored) else None
                               for o in options],
            answer=letters_of([i for i, o in enumerate(options) if o.correct]),
        )

    # ---- builder ------------------------------------------------------------------------------
    def write_samples(self, chain: KBChain, statements: list[KBStatement], concepts: list[KBConcept],
                      foreign_steps: list[str], per_statement: int, qa_share: float, choice_share: float,
                      multi_select_share: float = 0.3) -> list[SampleDraft]:
        if not statements:
            return []
        total = per_statement * len(statements)
        n_qa, n_choice = round(total * qa_share), round(total * choice_share)
        variables = {
            "process_name": chain.process_name, "statements": facts(statements),
            "concepts": numbered([f"{c.term}: {c.definition}" for c in concepts]) or "none",
            "n_qa": n_qa, "n_choice": n_choice, "n_tf": max(0, total - n_qa - n_choice),
        }
        answer = self.client.ask("builder", self._prompt("builder/samples"), variables, SamplesAnswer,
                                 lambda a: self._check_samples(a, statements))
        drafts = [self._sample(s, statements) for s in answer.samples] if answer else []
        drafts += [SampleDraft(kind="concept", prompt=f"In {chain.domain.lower()}, what is meant by {c.term}?",
                               answer=c.definition, statement_ids=c.statement_ids, concept_ids=[c.id])
                   for c in concepts]
        return drafts

    @staticmethod
    def _check_samples(answer: SamplesAnswer, statements: list[KBStatement]) -> str | None:
        for n, s in enumerate(answer.samples):
            if s.kind == "choice" and (len(s.options) != 4 or not any(o.correct for o in s.options)):
                return f"sample {n} is a choice question: it needs exactly 4 options, at least one correct"
            if s.kind == "tf" and s.correct is None:
                return f"sample {n} is true/false: set 'correct'"
            bad = [i for i in s.statements if not 0 <= i < len(statements)]
            if bad:
                return f"sample {n} cites statements {bad}, which do not exist"
        return None

    @staticmethod
    def _sample(item: SampleItem, statements: list[KBStatement]) -> SampleDraft:
        ids = [statements[i].id for i in item.statements] or [s.id for s in statements]
        if item.kind == "choice":
            key = letters_of([i for i, o in enumerate(item.options) if o.correct])
            prompt = render_choice_prompt(item.question, [strip_label(o.text) for o in item.options])
            return SampleDraft(kind="choice", prompt=prompt, answer=f"{key}\n{item.answer}", statement_ids=ids)
        if item.kind == "tf":
            verdict = "True" if item.correct else "False"
            return SampleDraft(kind="tf", prompt=f"True or false? {item.question}", answer=f"{verdict}. {item.answer}",
                               statement_ids=ids)
        return SampleDraft(kind="qa", prompt=item.question, answer=item.answer, statement_ids=ids)

    # ---- debugger -----------------------------------------------------------------------------
    def judge_failure(self, item: TestItemDraft, predicted: str,
                      statements: list[KBStatement] | None = None) -> DiagnosisDraft:
        statements = statements or []
        variables = {
            "question": item.question, "options": "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(item.options)),
            "answer": item.answer, "predicted": predicted or "(no letters)", "statements": facts(statements) or "none",
        }
        answer = self.client.ask("debugger", self._prompt("debugger/failure_judge"), variables, JudgeAnswer,
                                 lambda a: None if all(0 <= i < len(statements) for i in a.statements)
                                 else "unknown statement number")
        if answer is None:
            return DiagnosisDraft(kind="unknown",
                                  evidence={"predicted": predicted, "rule": "judge gave no valid answer"})
        return DiagnosisDraft(kind=answer.kind, statement_ids=[statements[i].id for i in answer.statements],
                              evidence={"predicted": predicted, "answer": item.answer, "rule": "llm judge",
                                        "reason": answer.reason},
                              confidence=answer.confidence)

    def write_patch(self, diagnosis: DiagnosisDraft, chain: KBChain, statements: list[KBStatement],
                    concepts: list[KBConcept], foreign_steps: list[str], n_samples: int,
                    salt: str) -> list[SampleDraft]:
        located = [s for s in statements if s.id in diagnosis.statement_ids] or statements
        if diagnosis.kind == "chain_break":
            name, variables, basis = "debugger/chain_patch", {"facts": facts(statements)}, statements
        else:
            linked = [c for c in concepts if set(c.statement_ids) & {s.id for s in located}]
            name, basis = "debugger/concept_patch", located
            variables = {"facts": facts(located),
                         "concepts": numbered([f"{c.term}: {c.definition}" for c in linked]) or "none"}
        variables.update(process_name=chain.process_name, n_samples=n_samples)
        answer = self.client.ask("debugger", self._prompt(name), variables, SamplesAnswer,
                                 lambda a: self._check_samples(a, basis))
        return [self._sample(s, basis) for s in answer.samples][:n_samples] if answer else []
