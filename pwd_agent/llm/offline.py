"""Offline agents: deterministic, rule-based stand-ins for every LLM role (no network).

They are honest about being weak: extraction reads sentence cues (First, Then, As a result...) and
Markdown bold terms; items and samples come from templates. Real corpora want an LLM backend.
"""

from __future__ import annotations

import random
import re

from pwd_agent.schemas import (
    ChainDraft,
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
from pwd_agent.config import RULE_FACETS
from pwd_agent.corpus import split_sentences
from pwd_agent.llm.backends import item_style
from pwd_agent.phrasing import BOLD, CUE, clean, sentence_case, step_phrase  # noqa: F401 (re-exported for tests)
from pwd_agent.prompting import LETTERS, letters_of, render_choice_prompt

_CAUSAL = re.compile(r"^(as a result|this causes|in turn)\b", re.I)
_NEGATIVE = re.compile(r"\b(not|never|mistake|confus\w*|avoid\w*|wrong)\b", re.I)
_PRECONDITION = re.compile(r"^(before|only)\b|\b(requires?|must first|only if|only when)\b", re.I)
_DEFINITION = re.compile(r"\b(is|are|refers to|means)\b")
_ORDERED_ITEM = re.compile(r"^\s*\d{1,3}[.)]\s+$")  # what precedes an item's first sentence on its line


def order_claim(before: str, after: str) -> str:
    """The test items' one option style for ordering claims, so a key cannot be spotted by form."""
    return f"Right after {before}, {after}."


def taught_claim(before: str, after: str) -> str:
    """Training data states the same facts in other words than the tests, so a pass needs the
    fact, not a memorised string."""
    return f"Once {before}, the next thing that happens is that {after}."


def event_claim(step: str) -> str:
    """One step as an option of its own (the later-step and membership facets)."""
    return f"{sentence_case(step)}."


# How many keys an item gets, cycled over items: in proportion to the number of letter sets of
# that size (4, 6, 4 and 1 of the 15), so that with letters placed evenly (place_letters) every
# set is the key about equally often and no constant answer scores much above 1/15.
KEY_COUNTS = (1, 2, 3, 2, 1, 3, 2, 4, 2, 1, 3, 2, 1, 3, 2)
# Distractor kinds whose choice shows the order of the steps was not composed (a chain break).
ORDERING_MISTAKES = ("wrong_order", "skipped_step", "earlier_step")


def _fill(keys: list[tuple], pool: list[tuple]) -> list[tuple]:
    """Keys first, then distractors from the pool that say something new, up to four options."""
    options = list(keys)
    for candidate in pool:
        if len(options) == 4:
            break
        if candidate[0] not in {o[0] for o in options}:
            options.append(candidate)
    return options


def ask_order(one_key: bool) -> str:
    """The order facet's question. Singular only when every item has one key: with varied keys the
    wording must not tell how many."""
    which = "statement correctly names" if one_key else "statements correctly name"
    return (f"Each step can only start once the one before it is complete. Which of the following {which} "
            "a step and the step that comes directly after it?")


def anchored_pool(steps: list[str], position: int, rng, occurrence: int = 0) -> list[tuple]:
    """tests.distractors=same_anchor: wrong claims "Right after X, W." for three other steps W of the
    process (X = steps[position], the key's first step): the other steps in the statement's seeded
    order (`rng`), a window of three that moves on by one for each further item on the same
    statement, so its items differ where the process has the steps to differ. Every option then
    shares "Right after X,", so a step made familiar by training lifts no option over another and
    only which step follows X decides the item (bench/anchor_items.py measured the frame). The
    distractors rest on no statement: a chosen one shows the key's own statement is not known, so
    the Debugger localises the item to that statement alone. Fewer than three when the process has
    under five steps (the item is then dropped)."""
    others = [k for k in range(len(steps)) if k not in (position, position + 1) and steps[k] != steps[position + 1]]
    rng.shuffle(others)
    drawn = [others[(occurrence + k) % len(others)] for k in range(min(3, len(others)))]
    return [(order_claim(steps[position], steps[k]), "wrong_order" if k < position else "skipped_step", None)
            for k in drawn]


def claims_choice(question: str, options: list[tuple[str, bool]], why: str, statement_ids: list[int],
                  rng) -> SampleDraft:
    """A choice sample over (claim, is_true) options, shuffled, letters first in the answer."""
    rng.shuffle(options)
    key = letters_of([k for k, (_, ok) in enumerate(options) if ok])
    return SampleDraft(
        kind="choice",
        prompt=render_choice_prompt(question, [text for text, _ in options]),
        answer=f"{key}\n{why}",
        statement_ids=statement_ids,
    )


def from_context(ctx, bulk: bool = False) -> "OfflineAgents":
    """llm.backend=offline: the rules under the run's extract.* and tests.* settings (`bulk` is for LLM backends)."""
    config = ctx.config
    return OfflineAgents(config.extract.min_steps, config.extract.max_steps, config.tests.seed,
                         *item_style(config.tests))


class OfflineAgents:
    """Rule-based implementations of the extractor, tester, builder and debugger roles."""

    name = "offline"
    version = "rules-1"

    def __init__(self, min_steps: int = 3, max_steps: int = 8, seed: int = 0, facets: tuple[str, ...] = (),
                 one_key: bool = False, same_process: bool = False, anchored: bool = False):
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.seed = seed
        # The facets the rules can write (config.RULE_FACETS), cycled over a chain's items: the order
        # of adjacent steps, what comes later than a given step, which steps belong to the process.
        self.facets = tuple(facets) or RULE_FACETS
        self.one_key = one_key  # tests.keys=one
        self.same_process = same_process  # tests.distractors=same_process (or same_anchor)
        self.anchored = anchored  # tests.distractors=same_anchor: order options share the key's first step

    # ---- extractor: L3 -> L2 -> L1 -------------------------------------------------------
    def extract_chain(self, chunk_text: str, heading: str, title: str) -> ChainDraft | None:
        """The chunk's process, or None when it describes fewer than `min_steps` ordered steps."""
        roles = self._sentence_roles(chunk_text)
        # A step must say something once its cue is gone ("Next." or "Then:" names no step).
        steps = [clean(chunk_text[s:e]) for role, (s, e) in roles
                 if role == "step" and re.search(r"\w", step_phrase(chunk_text[s:e]))][: self.max_steps]
        if len(steps) < self.min_steps:
            return None
        summaries = [clean(chunk_text[s:e]) for role, (s, e) in roles if role == "summary"]
        return ChainDraft(
            process_name=heading or title,
            domain=title,
            summary=summaries[0] if summaries else steps[0],
            preconditions=[clean(chunk_text[s:e]) for role, (s, e) in roles if role == "precondition"],
            negative_constraints=[clean(chunk_text[s:e]) for role, (s, e) in roles if role == "negative"],
            steps=steps,
        )

    def _sentence_roles(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """Each sentence's role; a step is a sentence opening with a sequence cue or the first
        sentence of a numbered list item ("1. Run initdb."), the form manuals write procedures in."""
        roles = []
        for span in split_sentences(text):
            sentence = clean(text[span[0] : span[1]])
            line_start = text.rfind("\n", 0, span[0]) + 1
            if CUE.match(sentence) or _ORDERED_ITEM.match(text[line_start : span[0]]):
                role = "step"
            elif _NEGATIVE.search(sentence):
                role = "negative"
            elif _PRECONDITION.search(sentence):
                role = "precondition"
            elif _DEFINITION.search(sentence):
                role = "summary"
            else:
                role = "other"
            roles.append((role, span))
        return roles

    def extract_statements(self, chunk_text: str, chain: ChainDraft) -> list[StatementDraft]:
        """One statement per adjacent step pair; the quote spans both steps in the raw chunk."""
        spans = {clean(chunk_text[s:e]): (s, e) for s, e in split_sentences(chunk_text)}
        statements = []
        for i, (first, second) in enumerate(zip(chain.steps, chain.steps[1:])):
            if first not in spans or second not in spans:
                continue
            start, end = spans[first][0], spans[second][1]
            if start >= end:  # a repeated sentence: its last place comes before the pair's start
                continue
            statements.append(
                StatementDraft(
                    position=i,
                    subject=step_phrase(first),
                    predicate="causes" if _CAUSAL.match(second) else "is followed by",
                    object=step_phrase(second),
                    source_quote=chunk_text[start:end],
                )
            )
        return statements

    def extract_concepts(self, chunk_text: str, chain: ChainDraft,
                         statements: list[StatementDraft]) -> list[ConceptDraft]:
        """Bold terms of the chunk, defined by the sentence that says what they are."""
        sentences = [clean(chunk_text[s:e]) for s, e in split_sentences(chunk_text)]
        concepts: dict[str, ConceptDraft] = {}
        for raw in BOLD.findall(chunk_text):
            term = clean(raw).lower()
            if term in concepts or len(term) < 3:
                continue
            mentions = [i for i, st in enumerate(statements) if term in f"{st.subject} {st.object}".lower()]
            definition = self._definition(term, sentences)
            if definition is None and not mentions:
                continue
            concepts[term] = ConceptDraft(
                term=term,
                type="process" if term in chain.process_name.lower() else "term",
                definition=definition or next(s for s in sentences if term in s.lower()),
                statements=mentions,
            )
        return list(concepts.values())

    @staticmethod
    def _definition(term: str, sentences: list[str]) -> str | None:
        for sentence in sentences:
            low = sentence.lower()
            if term in low and re.search(rf"{re.escape(term)}\w*\s+(is|are|refers to|means)\b", low):
                return sentence
        return None

    # ---- tester: unit tests from L3 ------------------------------------------------------
    def write_test_item(
        self,
        chain: KBChain,
        statements: list[KBStatement],
        foreign_steps: list[str],
        variant: int,
    ) -> TestItemDraft | None:
        """Item `variant` of a chain, each variant on another facet of it (RULE_FACETS): keys are
        true claims, distractors the ordering and membership mistakes a learner makes. Letters are
        placed later, by the node (`place_letters`)."""
        if len(statements) < 2:
            return None
        rng = random.Random(f"{self.seed}:item:{chain.id}:{variant}")
        facet = self.facets[variant % len(self.facets)]
        n_keys = 1 if self.one_key else KEY_COUNTS[(len(self.facets) * chain.id + variant) % len(KEY_COUNTS)]
        turn = variant // len(self.facets)  # how many items of this facet the chain had before this one
        options, ask = getattr(self, f"_{facet}_options")(chain, statements, foreign_steps, n_keys, rng, turn)
        if len(options) < 4:  # a chain too short for this facet's keys and distractors
            return None
        context = f" Precondition: {sentence_case(step_phrase(chain.preconditions[0]))}." if chain.preconditions else ""
        return TestItemDraft(
            question=(f"This question is about {chain.process_name.lower()}, part of {chain.domain.lower()}. "
                      f"{chain.summary}{context} {ask}"),
            options=[o[0] for o in options],
            option_kinds=[o[1] for o in options],
            option_statements=[o[2] for o in options],
            answer=letters_of([i for i, o in enumerate(options) if o[1] == "key"]),
        )

    def _order_options(self, chain, statements, foreign_steps, n_keys, rng, turn=0) -> tuple[list[tuple], str]:
        """True adjacent pairs; reversed pairs, skipped steps, another process's step as distractors.
        With tests.keys=one, items take the chain's statements in turn (from a seeded start), so a chain's order
        items cover its statements evenly instead of repeating some and missing others."""
        steps = [step_phrase(s) for s in chain.steps]
        if self.one_key:
            start = random.Random(f"{self.seed}:keys:{chain.id}").randrange(len(statements))
            keys = [statements[(start + turn) % len(statements)]]
        else:
            keys = rng.sample(statements, min(n_keys, len(statements)))
        if self.anchored:
            key, occurrence = keys[0], turn // len(statements)  # the how-manieth item on this statement
            draw = random.Random(f"{self.seed}:anchor:{chain.id}:{key.position}")
            return _fill([(order_claim(key.subject, key.object), "key", key.id)],
                         anchored_pool(steps, key.position, draw, occurrence)), ask_order(self.one_key)
        pool = [(order_claim(st.object, st.subject), "wrong_order", st.id) for st in statements]
        pool += [(order_claim(steps[i], steps[i + 2]), "skipped_step", None) for i in range(len(steps) - 2)]
        if not self.same_process:
            pool += [(order_claim(st.subject, rng.choice(foreign_steps)), "swapped_object", st.id)
                     for st in statements if foreign_steps]
        rng.shuffle(pool)
        return _fill([(order_claim(st.subject, st.object), "key", st.id) for st in keys], pool), ask_order(self.one_key)

    def _later_options(self, chain, statements, foreign_steps, n_keys, rng, turn=0) -> tuple[list[tuple], str]:
        """From one step of the chain: steps that come later (keys); earlier steps and another
        process's steps (distractors)."""
        steps = [step_phrase(s) for s in chain.steps]
        n_keys = min(n_keys, len(steps) - 1)
        # Same-process distractors are the anchor and the steps before it: it needs 4 - n_keys of them.
        lowest = 4 - n_keys - 1 if self.same_process else 0
        if lowest > len(steps) - 1 - n_keys:
            return [], ""
        anchor = rng.randint(lowest, len(steps) - 1 - n_keys)
        node = step_nodes(statements)
        keys = [(event_claim(steps[k]), "key", node.get(k)) for k in rng.sample(range(anchor + 1, len(steps)), n_keys)]
        pool = [(event_claim(steps[k]), "earlier_step", node.get(k)) for k in range(anchor + 1)]
        if not self.same_process:
            pool += [(event_claim(f), "foreign_step", None) for f in foreign_steps]
        rng.shuffle(pool)
        which = "event happens" if self.one_key else "events happen"
        ask = (f"The steps run in a fixed order. Which of the following {which} later in the process "
               f"than the moment when {steps[anchor]}?")
        return _fill(keys, pool), ask

    def _member_options(self, chain, statements, foreign_steps, n_keys, rng, turn=0) -> tuple[list[tuple], str]:
        """Steps of this chain (keys) among steps of other processes (distractors)."""
        steps = [step_phrase(s) for s in chain.steps]
        node = step_nodes(statements)
        keys = [(event_claim(steps[k]), "key", node.get(k))
                for k in rng.sample(range(len(steps)), min(n_keys, len(steps)))]
        pool = [(event_claim(f), "foreign_step", None) for f in foreign_steps if f not in steps]
        rng.shuffle(pool)
        which = "event is a step" if self.one_key else "events are steps"
        ask = ("Steps of other processes are easily mixed up with its own. "
               f"Which of the following {which} of this process itself?")
        return _fill(keys, pool), ask

    # ---- builder: training data from L1/L2 -------------------------------------------------
    def write_samples(
        self,
        chain: KBChain,
        statements: list[KBStatement],
        concepts: list[KBConcept],
        foreign_steps: list[str],
        per_statement: int,
        qa_share: float,
        choice_share: float,
        multi_select_share: float = 0.3,
    ) -> list[SampleDraft]:
        """V1 samples: open QA, choice and true/false per statement in the configured shares, plus one
        definition sample per concept (on top of the shares; synthesize reports the whole mix)."""
        rng = random.Random(f"{self.seed}:samples:{chain.id}")
        steps = [step_phrase(s) for s in chain.steps]
        samples = []
        for st in statements:
            concept_ids = [c.id for c in concepts if st.id in c.statement_ids]
            for j in range(per_statement):
                # A golden-ratio sequence over (statement, copy) instead of random draws: statement ids
                # run through the whole KB, so the kinds meet their shares across it, not just on average.
                u = ((st.id * per_statement + j) * 0.6180339887498949) % 1.0
                if u < qa_share:
                    draft = self._qa_sample(chain, st)
                elif u < qa_share + choice_share * (1 - multi_select_share):
                    draft = self._next_step_choice(chain, st, steps, foreign_steps, rng)
                elif u < qa_share + choice_share:
                    draft = self._multi_select_choice(chain, st, statements, steps, rng)
                else:
                    draft = self._tf_sample(chain, st, steps, rng)
                samples.append(draft.model_copy(update={"concept_ids": concept_ids}))
        samples += [self._concept_sample(chain, c) for c in concepts]
        return samples

    @staticmethod
    def _qa_sample(chain: KBChain, st: KBStatement) -> SampleDraft:
        return SampleDraft(
            kind="qa",
            prompt=f"In {chain.process_name.lower()}, what is the next step once {st.subject}?",
            answer=f"{sentence_case(st.object)}. The source says: \"{clean(st.source_quote)}\"",
            statement_ids=[st.id],
        )

    @staticmethod
    def _next_step_choice(chain, st, steps, foreign_steps, rng) -> SampleDraft:
        wrong = [s for s in steps if s not in (st.subject, st.object)]
        wrong += rng.sample(foreign_steps, min(2, len(foreign_steps)))
        options = rng.sample(wrong, 3) + [st.object]
        rng.shuffle(options)
        key = letters_of([options.index(st.object)])
        return SampleDraft(
            kind="choice",
            prompt=render_choice_prompt(
                f"In {chain.process_name.lower()}, which step comes directly after this one: {st.subject}?",
                [sentence_case(o) + "." for o in options],
            ),
            answer=f"{key}\n{sentence_case(st.object)} is the next step.",
            statement_ids=[st.id],
        )

    @staticmethod
    def _multi_select_choice(chain, st, statements, steps, rng) -> SampleDraft:
        """METHOD.md's 30% multi-select: true and false ordering claims about one process."""
        true = [taught_claim(o.subject, o.object) for o in statements if o.id != st.id]
        false = [taught_claim(o.object, o.subject) for o in statements]
        false += [taught_claim(steps[k], steps[k + 2]) for k in range(len(steps) - 2)]
        n_true = min(len(true), rng.randint(0, 3))
        options = [(taught_claim(st.subject, st.object), True)] + [(c, True) for c in rng.sample(true, n_true)]
        options += [(c, False) for c in rng.sample(false, min(len(false), 4 - len(options)))]
        return claims_choice(
            f"Which of these statements about the order of steps in {chain.process_name.lower()} are correct?",
            options, "The correct statements keep adjacent steps in their true order.", [st.id], rng,
        )

    @staticmethod
    def _tf_sample(chain, st, steps, rng) -> SampleDraft:
        if rng.random() < 0.5:
            claim, verdict = taught_claim(st.object, st.subject), "False"
            why = f"The order is the other way round: first {st.subject}, then {st.object}."
        else:
            claim, verdict = taught_claim(st.subject, st.object), "True"
            why = f"The source says: \"{clean(st.source_quote)}\""
        return SampleDraft(
            kind="tf",
            prompt=f"True or false? In {chain.process_name.lower()}: {claim}",
            answer=f"{verdict}. {why}",
            statement_ids=[st.id],
        )

    @staticmethod
    def _concept_sample(chain: KBChain, concept: KBConcept) -> SampleDraft:
        return SampleDraft(
            kind="concept",
            prompt=f"In {chain.domain.lower()}, what is meant by {concept.term}?",
            answer=concept.definition,
            statement_ids=concept.statement_ids,
            concept_ids=[concept.id],
        )

    # ---- debugger: judge and patch ---------------------------------------------------------
    def judge_failure(self, item: TestItemDraft, predicted: str,
                      statements: list[KBStatement] | None = None) -> DiagnosisDraft:
        """First rule: a chosen ordering distractor means a broken chain; anything else (missed
        keys, a step of another process chosen, no answer) points at the knowledge itself."""
        chosen = {LETTERS.index(x) for x in predicted.split(",") if x}
        keys = {LETTERS.index(x) for x in item.answer.split(",")}
        wrong = sorted(chosen - keys)
        missed = sorted(keys - chosen)
        wrong_kinds = [item.option_kinds[i] for i in wrong]
        ordering = [k for k in wrong_kinds if k in ORDERING_MISTAKES]
        kind = "chain_break" if ordering else "concept_gap"
        nodes = [item.option_statements[i] for i in missed + wrong if item.option_statements[i] is not None]
        return DiagnosisDraft(
            kind=kind,
            statement_ids=sorted(set(nodes)),
            evidence={
                "predicted": predicted,
                "answer": item.answer,
                "chosen_distractors": wrong_kinds,
                "missed_keys": [LETTERS[i] for i in missed],
                "rule": "ordering distractor chosen" if ordering else "key missed or foreign step chosen",
            },
            confidence=0.7 if ordering or missed else 0.5,
        )

    def write_patch(
        self,
        diagnosis: DiagnosisDraft,
        chain: KBChain,
        statements: list[KBStatement],
        concepts: list[KBConcept],
        foreign_steps: list[str],
        n_samples: int,
        salt: str,
    ) -> list[SampleDraft]:
        """Samples grounded in the located nodes (never in the test item's text)."""
        rng = random.Random(f"{self.seed}:patch:{salt}")
        located = [s for s in statements if s.id in diagnosis.statement_ids] or statements
        # The paper's mixes, interleaved so a smaller patch size still gets every kind: a chain break
        # 3 walks + 2 skip choices + 1 skip true/false + 1 counterfactual (the paper's 3 + 3 + 1 with
        # one choice traded for the counterfactual its repair calls for); a concept gap 4 QA + 2
        # choice + 1 true/false, as in the paper.
        if diagnosis.kind == "chain_break":
            makers = [self._walk_sample, self._skip_choice_sample, self._skip_tf_sample, self._counterfactual_sample,
                      self._walk_sample, self._skip_choice_sample, self._walk_sample]
        else:
            makers = [self._qa_sample_from_located, self._choice_from_located, self._tf_from_located,
                      self._qa_sample_from_located, self._choice_from_located, self._qa_sample_from_located,
                      self._qa_sample_from_located]
        samples = []
        for i in range(n_samples):
            maker = makers[i % len(makers)]
            samples.append(maker(chain, statements, located, concepts, foreign_steps, rng, i))
        return samples

    def _qa_sample_from_located(self, chain, statements, located, concepts, foreign, rng, i) -> SampleDraft:
        st = located[i % len(located)]
        linked = [c for c in concepts if st.id in c.statement_ids]
        if linked and i % 2:
            c = linked[i % len(linked)]
            return SampleDraft(
                kind="contrast",
                prompt=f"In {chain.process_name.lower()}, what is {c.term}, and which step follows {st.subject}?",
                answer=f"{c.definition} {taught_claim(st.subject, st.object)}",
                statement_ids=[st.id],
                concept_ids=[c.id],
            )
        return self._qa_sample(chain, st)

    def _choice_from_located(self, chain, statements, located, concepts, foreign, rng, i) -> SampleDraft:
        st = located[i % len(located)]
        return self._next_step_choice(chain, st, [step_phrase(s) for s in chain.steps], foreign, rng)

    def _tf_from_located(self, chain, statements, located, concepts, foreign, rng, i) -> SampleDraft:
        st = located[i % len(located)]
        return self._tf_sample(chain, st, [step_phrase(s) for s in chain.steps], rng)

    def _walk_sample(self, chain, statements, located, concepts, foreign, rng, i) -> SampleDraft:
        lines = [
            f"Step {n}: {sentence_case(st.subject if n == 1 else st.object)}. Source: \"{clean(st.source_quote)}\""
            for n, st in enumerate([statements[0]] + statements, start=1)
        ]
        return SampleDraft(
            kind="walk",
            prompt=f"Walk through {chain.process_name.lower()} step by step, citing the source for each step.",
            answer="\n".join(lines),
            statement_ids=[st.id for st in statements],
        )

    def _counterfactual_sample(self, chain, statements, located, concepts, foreign, rng, i) -> SampleDraft:
        st = located[i % len(located)]
        return SampleDraft(
            kind="counterfactual",
            prompt=f"In {chain.process_name.lower()}, what goes wrong if this step is skipped: {st.subject}?",
            answer=(
                f"The next step cannot happen as intended: {st.object} depends on the step before it. "
                f"The source says: \"{clean(st.source_quote)}\""
            ),
            statement_ids=[st.id],
        )

    def _skip_choice_sample(self, chain, statements, located, concepts, foreign, rng, i) -> SampleDraft:
        st = located[i % len(located)]
        others = [o for o in statements if o.id != st.id]
        options = [(taught_claim(st.subject, st.object), True)]
        options += [(taught_claim(o.object, o.subject), False) for o in rng.sample(others, min(2, len(others)))]
        steps = [step_phrase(s) for s in chain.steps]
        options += [(taught_claim(steps[k], steps[k + 2]), False) for k in range(len(steps) - 2)]
        options = options[:4]
        while len(options) < 4:
            options.append((taught_claim(st.subject, rng.choice(foreign or steps)), False))
        return claims_choice(
            f"In {chain.process_name.lower()}, which statements name a step and the step directly after it?",
            options, "Only adjacent steps in their true order are correct; skipping a step or reversing two is wrong.",
            [st.id], rng,
        )

    def _skip_tf_sample(self, chain, statements, located, concepts, foreign, rng, i) -> SampleDraft:
        steps = [step_phrase(s) for s in chain.steps]
        k = i % max(1, len(steps) - 2)
        if len(steps) < 3:
            return self._tf_from_located(chain, statements, located, concepts, foreign, rng, i)
        return SampleDraft(
            kind="tf",
            prompt=f"True or false? In {chain.process_name.lower()}: {taught_claim(steps[k], steps[k + 2])}",
            answer=f"False. A step is skipped: after {steps[k]}, first {steps[k + 1]}.",
            statement_ids=[st.id for st in statements if st.position in (k, k + 1)],
        )
