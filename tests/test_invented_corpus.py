"""The invented corpus (examples/invented/corpus/): a world no model knows, readable by the offline extractor,
and the knowledge-injection recipe written from its KB."""

import re
from collections import Counter

import pytest

from pwd_agent.schemas import KBChain, KBStatement
from pwd_agent.corpus import chunk_document, read_corpus
from pwd_agent.leakage import GateItem, LeakageGate, key_options, sample_text
from pwd_agent.llm.offline import RULE_FACETS, OfflineAgents, clean, step_phrase
from pwd_agent.recipes import PASSAGES, WORDINGS, paraphrase_samples, text_passages

from conftest import ROOT

INVENTED = ROOT / "examples" / "invented" / "corpus"
# Pronouns that would leave a step sentence meaningless on its own.
_PRONOUN = re.compile(r"\b(it|its|this|these|those|they|them|their)\b", re.I)


@pytest.fixture(scope="module")
def extracted():
    """(documents, chunks, [(chain, statements, concepts, chunk text)]) for the invented corpus."""
    agents = OfflineAgents()
    docs = [d for d in read_corpus(INVENTED, [".md"]) if not d.path.endswith("README.md")]
    chunks, out = [], []
    for doc in docs:
        for chunk in chunk_document(doc.text, 1500):
            chunks.append(chunk)
            chain = agents.extract_chain(chunk.text, chunk.heading, doc.title)
            if chain is None:
                continue
            statements = agents.extract_statements(chunk.text, chain)
            concepts = agents.extract_concepts(chunk.text, chain, statements)
            out.append((chain, statements, concepts, chunk.text))
    return docs, chunks, out


def test_every_section_is_one_chunk_and_one_chain(extracted):
    docs, chunks, kb = extracted
    assert len(docs) == 12
    sections = sum(doc.text.count("\n## ") for doc in docs)
    assert len(kb) == sections >= 30  # no section split by size, none without a chain
    assert all(len(text) < 1400 for *_, text in kb)


def test_chains_are_long_grounded_and_distinct(extracted):
    _, _, kb = extracted
    steps = Counter()
    for chain, statements, _, text in kb:
        assert 4 <= len(chain.steps) <= 6
        assert len(statements) == len(chain.steps) - 1
        assert all(st.source_quote in text for st in statements)
        assert not any(_PRONOUN.search(step) for step in chain.steps), chain.process_name
        steps.update(clean(s).lower() for s in chain.steps)
    assert max(steps.values()) == 1  # no step sentence shared by two chains (or repeated in one)
    assert len({tuple(chain.steps) for chain, *_ in kb}) == len(kb)
    guarded = [c for c, *_ in kb if c.preconditions or c.negative_constraints]
    assert 2 * len(guarded) >= len(kb)


def test_concepts_have_definitions(extracted):
    _, _, kb = extracted
    defined = {}
    for *_, concepts, _ in kb:
        for c in concepts:
            if re.search(rf"{re.escape(c.term)}\w*\s+(is|are|refers to|means)\b", c.definition.lower()):
                defined.setdefault(c.term, c.definition)
    assert len(defined) >= 30


def test_every_chain_yields_an_item_on_each_facet(kb_with_items):
    for _, _, items, _ in kb_with_items:
        assert len(items) == len(RULE_FACETS)
        assert all(item is not None and len(set(item.options)) == 4 for item in items)


@pytest.fixture(scope="module")
def kb_with_items(extracted):
    """[(chain, statements, items, source)] with KB ids, each chain's items on every facet."""
    _, _, kb = extracted
    agents, chains, next_id = OfflineAgents(), [], 1
    for i, (chain, statements, _, text) in enumerate(kb):
        kb_sts = [KBStatement(id=next_id + j, chain_id=i + 1, **st.model_dump()) for j, st in enumerate(statements)]
        next_id += len(kb_sts)
        chains.append((KBChain(id=i + 1, **chain.model_dump()), kb_sts, text))
    out = []
    for i, (chain, statements, text) in enumerate(chains):
        foreign = [step_phrase(chains[(i + j) % len(chains)][0].steps[0]) for j in range(1, 5)]
        items = [agents.write_test_item(chain, statements, foreign, v) for v in range(len(RULE_FACETS))]
        source = "\n".join([text, chain.process_name, chain.domain, chain.summary, *chain.preconditions,
                            *chain.negative_constraints, *chain.steps,
                            *(f"{s.subject}\n{s.predicate}\n{s.object}" for s in statements)])
        out.append((chain, statements, items, source))
    return out


def test_passages_walk_every_step_in_order_naming_the_process(kb_with_items):
    for chain, statements, _, _ in kb_with_items:
        steps = [step_phrase(s) for s in chain.steps]
        texts = set()
        for draft in text_passages(chain, statements, len(PASSAGES)):
            assert (draft.kind, draft.prompt) == ("text", "")
            assert draft.statement_ids == [st.id for st in statements]
            where = [draft.answer.lower().find(step.lower()) for step in steps]
            assert -1 not in where and where == sorted(where), chain.process_name
            assert draft.answer.lower().count(chain.process_name.lower()) >= len(steps)
            texts.add(draft.answer)
        assert len(texts) == len(PASSAGES)  # every passage in its own wording


def test_paraphrases_ask_each_fact_in_other_words(kb_with_items):
    chain, statements, _, _ = kb_with_items[0]
    drafts = paraphrase_samples(chain, statements, len(WORDINGS))
    assert len(drafts) == len(WORDINGS) * len(statements)
    for st in statements:
        mine = [d for d in drafts if d.statement_ids == [st.id]]
        assert len({d.prompt for d in mine}) == len({d.answer for d in mine}) == len(WORDINGS)
        assert all(st.subject in d.prompt and chain.process_name.lower() in d.prompt.lower() for d in mine)
        assert all(st.object.lower() in d.answer.lower() for d in mine)


def test_no_recipe_sample_trips_the_leakage_gate(kb_with_items):
    """The recipe teaches the facts the items test, in frames the items do not use."""
    gate_items = [GateItem(n, item.question, key_options(item.options, item.answer), source)
                  for n, (_, _, items, source) in enumerate(kb_with_items) for item in items]
    gate = LeakageGate(gate_items, n=8, threshold=0.4)
    for chain, statements, _, _ in kb_with_items:
        drafts = text_passages(chain, statements, len(PASSAGES)) + paraphrase_samples(chain, statements, len(WORDINGS))
        assert [gate.check(sample_text(d)) for d in drafts] == [None] * len(drafts), chain.process_name
    # The gate is live on these items: a key option copied into a sample is caught.
    item = kb_with_items[0][2][0]
    assert gate.check(f"Note: {item.options['ABCD'.index(item.answer[0])]}") is not None


def test_patch_paraphrases_use_the_wordings_v1_did_not(kb_with_items):
    chain, statements, _, _ = kb_with_items[0]
    v1 = {d.prompt for d in paraphrase_samples(chain, statements, 3)}
    patch = {d.prompt for d in paraphrase_samples(chain, statements, 3, offset=3)}
    assert len(v1) == len(patch) == 3 * len(statements) and not v1 & patch


def test_one_key_same_process_items_leave_word_overlap_nothing(kb_with_items):
    """tests.keys=one, tests.distractors=same_process: one key per item and every distractor a step
    of the same process in the wrong place, so the options share the question's words alike."""
    agents = OfflineAgents(facets=("order", "later"), one_key=True, same_process=True)
    made = 0
    for chain, statements, _, _ in kb_with_items:
        steps = {step_phrase(s).lower() for s in chain.steps}
        for variant in range(4):
            item = agents.write_test_item(chain, statements, [], variant)
            if item is None:  # a chain too short for three earlier steps on the later facet
                assert variant % 2 == 1 and len(chain.steps) < 5
                continue
            made += 1
            assert item.option_kinds.count("key") == 1 and len(set(item.options)) == 4
            assert set(item.option_kinds) - {"key"} <= {"wrong_order", "skipped_step", "earlier_step"}
            if variant % 2 == 1:  # the later facet: every option is one of this chain's steps
                assert all(o.rstrip(".").lower() in steps for o in item.options)
    assert made >= 3 * len(kb_with_items)
