"""The offline agents on the example corpus: extraction grounded in quotes, balanced items, sample mix."""

import random
import re
from collections import Counter

import pytest

from pwd_agent.schemas import KBChain, KBConcept, KBStatement, TestItemDraft
from pwd_agent.corpus import chunk_document, read_corpus
from pwd_agent.llm.offline import RULE_FACETS, OfflineAgents, order_claim, step_phrase
from pwd_agent.prompting import LETTERS, parse_letters, place_letters

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def kb():
    """(chain, statements, concepts, chunk text) for every chain of the example corpus."""
    agents = OfflineAgents()
    out, next_id = [], 1
    for doc in read_corpus(EXAMPLES, [".md"]):
        for chunk in chunk_document(doc.text, 1500):
            chain = agents.extract_chain(chunk.text, chunk.heading, doc.title)
            if chain is None:
                continue
            statements = agents.extract_statements(chunk.text, chain)
            concepts = agents.extract_concepts(chunk.text, chain, statements)
            kb_chain = KBChain(id=len(out) + 1, **chain.model_dump())
            kb_sts = []
            for st in statements:
                kb_sts.append(KBStatement(id=next_id, chain_id=kb_chain.id, **st.model_dump()))
                next_id += 1
            kb_cs = [KBConcept(id=i + 1, statement_ids=[kb_sts[j].id for j in c.statements], **c.model_dump())
                     for i, c in enumerate(concepts)]
            out.append((kb_chain, kb_sts, kb_cs, chunk.text))
    return out


def test_corpus_yields_at_least_30_chains_with_exact_quotes(kb):
    assert len(kb) >= 30
    for chain, statements, concepts, text in kb:
        assert len(chain.steps) >= 3
        assert len(statements) == len(chain.steps) - 1  # one per adjacent step pair
        for st in statements:
            assert st.source_quote in text
        for concept in concepts:
            assert concept.definition and concept.term == concept.term.lower()


def test_intro_without_steps_is_not_a_chain():
    text = "**Coagulation** is the first chemical step. It uses **alum**."
    assert OfflineAgents().extract_chain(text, "", "Coagulation") is None


def test_a_numbered_procedure_is_a_chain_in_list_order():
    """Manuals write procedures as numbered lists, without cue words: each item's first sentence is a step."""
    text = ("To create a cluster, follow these steps. A cluster **is** a set of databases.\n\n"
            "1. Create the data directory as root. It must be empty.\n"
            "2. Change its owner to the postgres user.\n"
            "3) Run initdb with the data directory as argument.\n"
            "10. Start the server with pg_ctl.\n\nThe cluster is now ready.")
    agents = OfflineAgents()
    chain = agents.extract_chain(text, "Creating a cluster", "Server setup")
    assert [step_phrase(s) for s in chain.steps] == [
        "create the data directory as root", "change its owner to the postgres user",
        "run initdb with the data directory as argument", "start the server with pg_ctl"]
    statements = agents.extract_statements(text, chain)
    assert [(st.position, st.source_quote in text) for st in statements] == [(0, True), (1, True), (2, True)]


def test_cue_only_and_repeated_sentences_give_no_empty_nodes():
    """Manual text the rules met in the PostgreSQL docs: "Next." (a cue and nothing else) and a step
    sentence that occurs twice; neither may yield an empty subject or quote."""
    text = ("First, stop the server. Then:\n\nNext.\n\n"
            "Then copy the data directory. Next, start the server. Then copy the data directory.")
    agents = OfflineAgents()
    chain = agents.extract_chain(text, "Moving a cluster", "Admin")
    assert chain is not None and [step_phrase(s) for s in chain.steps] == [
        "stop the server", "copy the data directory", "start the server", "copy the data directory"]
    statements = agents.extract_statements(text, chain)
    assert statements and all(st.subject and st.object and st.source_quote for st in statements)


def _items(kb):
    agents, answers, items = OfflineAgents(), Counter(), []
    for i, (chain, statements, _, _) in enumerate(kb):
        foreign = [step_phrase(kb[(i + j) % len(kb)][0].steps[0]) for j in range(1, 5)]
        for variant in range(len(RULE_FACETS)):
            item = place_letters(agents.write_test_item(chain, statements, foreign, variant), answers,
                                 random.Random(f"{chain.id}:{variant}"))
            answers[item.answer] += 1
            items.append((variant, item))
    return items, answers


def test_items_cover_three_facets_with_balanced_key_sets(kb):
    items, answers = _items(kb)
    assert len(items) == 3 * len(kb)  # every chain yields an item on each facet
    for variant, item in items:
        keys = [LETTERS[i] for i, kind in enumerate(item.option_kinds) if kind == "key"]
        assert ",".join(keys) == item.answer
        assert len(set(item.options)) == 4
        assert 40 <= len(item.question.split()) <= 100
    questions = {variant: {item.question.split("? ")[-1][-40:] for v, item in items if v == variant}
                 for variant in range(3)}
    assert all(not (questions[a] & questions[b]) for a in range(3) for b in range(a + 1, 3))  # facets ask apart
    kinds = Counter(k for _, item in items for k in item.option_kinds if k != "key")
    assert {"wrong_order", "skipped_step", "swapped_object", "earlier_step", "foreign_step"} <= set(kinds)
    # Every key set about equally often: no constant answer scores much above 1/15.
    sizes = Counter(len(answer.split(",")) for answer in answers.elements())
    assert set(sizes) == {1, 2, 3, 4}
    assert max(answers.values()) / len(items) <= 0.09 and len(answers) == 15
    letters = Counter(x for answer in answers.elements() for x in answer.split(","))
    assert max(letters.values()) - min(letters.values()) <= 0.1 * max(letters.values())


def test_sample_mix_meets_the_configured_shares_and_answers_come_first(kb):
    agents, samples = OfflineAgents(), []
    for chain, statements, concepts, _ in kb:
        samples += agents.write_samples(chain, statements, concepts, ["a foreign step"], 2, 0.6, 0.3)
    kinds = Counter(s.kind for s in samples if s.kind != "concept")
    total = sum(kinds.values())
    assert total == 2 * sum(len(st) for _, st, _, _ in kb)
    assert abs(kinds["qa"] / total - 0.6) < 0.02 and abs(kinds["choice"] / total - 0.3) < 0.02
    assert abs(kinds["tf"] / total - 0.1) < 0.02
    assert Counter(s.kind for s in samples)["concept"] == sum(len(c) for _, _, c, _ in kb)  # on top of the shares
    for s in samples:
        assert s.statement_ids or s.concept_ids
        if s.kind == "choice":
            first_line = s.answer.split("\n")[0]
            assert parse_letters(first_line) == first_line  # the letters come first
        if s.kind == "tf":
            assert s.answer.startswith(("True.", "False."))


def _item(kinds, answer, statements=(1, 2, 3, 4)):
    return TestItemDraft(question="q", options=["a", "b", "c", "d"], option_kinds=kinds,
                         option_statements=list(statements), answer=answer)


def test_judge_rules():
    agents = OfflineAgents()
    kinds = ["key", "wrong_order", "key", "swapped_object"]
    broken = agents.judge_failure(_item(kinds, "A,C"), "A,B")
    assert broken.kind == "chain_break" and broken.statement_ids == [2, 3]
    gap = agents.judge_failure(_item(kinds, "A,C"), "A,D")
    assert gap.kind == "concept_gap" and gap.statement_ids == [3, 4]
    missed = agents.judge_failure(_item(kinds, "A,C"), "")
    assert missed.kind == "concept_gap" and missed.evidence["missed_keys"] == ["A", "C"]


def test_patches_are_grounded_and_sized(kb):
    agents = OfflineAgents()
    chain, statements, concepts, text = kb[0]
    gap = agents.judge_failure(_item(["key", "swapped_object", "key", "key"], "A,C,D",
                                     [statements[0].id, statements[1].id, statements[1].id, statements[2].id]), "A")
    patch = agents.write_patch(gap, chain, statements, concepts, ["x happens"], 7, "s")
    assert len(patch) == 7 and Counter(s.kind for s in patch)["tf"] == 1
    assert all(set(s.statement_ids) & {st.id for st in statements} for s in patch)
    broken = gap.model_copy(update={"kind": "chain_break"})
    walk = [s for s in agents.write_patch(broken, chain, statements, concepts, ["x"], 7, "s") if s.kind == "walk"]
    assert walk and all(s.answer.count("Step ") >= 3 and s.answer.count("Source:") >= 3 for s in walk)


def test_option_claims_share_one_style():
    assert order_claim("a happens", "b happens") == "Right after a happens, b happens."


def test_an_items_wording_does_not_tell_how_many_keys_it_has(kb):
    """With varied key counts every item asks in the plural; the singular only when all have one."""
    varied, one = OfflineAgents(), OfflineAgents(one_key=True)
    for i, (chain, statements, _, _) in enumerate(kb[:6]):
        foreign = [step_phrase(kb[(i + j) % len(kb)][0].steps[0]) for j in range(1, 5)]
        for variant in range(len(RULE_FACETS)):
            asks = [agents.write_test_item(chain, statements, foreign, variant).question.rsplit(". ", 1)[-1]
                    for agents in (varied, one)]
            assert "Which of the following" in asks[0] and asks[0] != asks[1]
            assert not re.search(r"following (statement|event) ", asks[0])
