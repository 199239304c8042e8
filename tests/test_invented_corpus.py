"""The invented corpus (examples/invented/corpus/): a world no model knows, still readable by the offline extractor."""

import re
from collections import Counter

import pytest

from pwd_agent.corpus import chunk_document, read_corpus
from pwd_agent.agents.schemas import KBChain, KBStatement
from pwd_agent.llm.offline import RULE_FACETS, OfflineAgents, clean, step_phrase

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


def test_every_chain_yields_an_item_on_each_facet(extracted):
    _, _, kb = extracted
    agents, chains, next_id = OfflineAgents(), [], 1
    for i, (chain, statements, _, _) in enumerate(kb):
        kb_sts = [KBStatement(id=next_id + j, chain_id=i + 1, **st.model_dump()) for j, st in enumerate(statements)]
        next_id += len(kb_sts)
        chains.append((KBChain(id=i + 1, **chain.model_dump()), kb_sts))
    for i, (chain, statements) in enumerate(chains):
        foreign = [step_phrase(chains[(i + j) % len(chains)][0].steps[0]) for j in range(1, 5)]
        for variant in range(len(RULE_FACETS)):
            item = agents.write_test_item(chain, statements, foreign, variant)
            assert item is not None and len(set(item.options)) == 4
