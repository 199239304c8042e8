"""tests.distractors=same_anchor (every order option opens on the key's first step) and tests.split=key
(a key statement's items divided between dev and holdout), on the demo's generated world."""

from collections import Counter, defaultdict

import pytest

from pwd_agent.config import TestsConfig
from pwd_agent.corpus import chunk_document, read_corpus
from pwd_agent.llm.offline import OfflineAgents, order_claim
from pwd_agent.nodes.build_tests import assign_splits, key_splits
from pwd_agent.nodes.diagnose import item_nodes
from pwd_agent.schemas import KBChain, KBStatement, TestItemDraft

from conftest import ROOT

GUILD = ROOT / "examples" / "guild"


@pytest.fixture(scope="module")
def guild_kb():
    """[(chain, statements)] of the demo's world, with KB ids."""
    agents, out, next_id = OfflineAgents(), [], 1
    docs = [d for d in read_corpus(GUILD, [".md"]) if not d.path.endswith("README.md")]
    for doc in docs:
        for chunk in chunk_document(doc.text, 1500):
            chain = agents.extract_chain(chunk.text, chunk.heading, doc.title)
            if chain is None:
                continue
            drafts = agents.extract_statements(chunk.text, chain)
            kb_chain = KBChain(id=len(out) + 1, **chain.model_dump())
            statements = [KBStatement(id=next_id + j, chain_id=kb_chain.id, **st.model_dump())
                          for j, st in enumerate(drafts)]
            next_id += len(statements)
            out.append((kb_chain, statements))
    assert len(out) == 9 and all(len(c.steps) == 6 and len(s) == 5 for c, s in out)
    return out


def _anchored_items(chain, statements, seed=0):
    agents = OfflineAgents(seed=seed, facets=("order",), one_key=True, same_process=True, anchored=True)
    return [agents.write_test_item(chain, statements, [], v) for v in range(2 * len(statements))]


def test_every_option_opens_on_the_keys_first_step_and_only_the_key_is_true(guild_kb):
    for chain, statements in guild_kb:
        by_id = {st.id: st for st in statements}
        true_claims = {order_claim(st.subject, st.object) for st in statements}
        for item in _anchored_items(chain, statements):
            key = item.option_kinds.index("key")
            st = by_id[item.option_statements[key]]
            assert item.options[key] == order_claim(st.subject, st.object)
            anchor = order_claim(st.subject, "")[:-1]  # "Right after X, "
            assert all(o.startswith(anchor) for o in item.options), item.options
            assert len(set(item.options)) == 4 and set(item.options) & true_claims == {item.options[key]}
            # A chosen distractor names no other statement: the item localises to its key alone.
            assert [s for s, k in zip(item.option_statements, item.option_kinds) if k != "key"] == [None] * 3


def test_each_statement_gets_two_items_with_other_distractors(guild_kb):
    for chain, statements in guild_kb:
        options = defaultdict(list)
        for item in _anchored_items(chain, statements):
            options[item.option_statements[item.option_kinds.index("key")]].append(frozenset(item.options))
        assert sorted(options) == sorted(st.id for st in statements)
        assert all(len(sets) == 2 and sets[0] != sets[1] for sets in options.values())


def test_seeds_are_honoured(guild_kb):
    chain, statements = guild_kb[0]
    a = [i.options for i in _anchored_items(chain, statements, seed=0)]
    assert a == [i.options for i in _anchored_items(chain, statements, seed=0)]
    assert a != [i.options for i in _anchored_items(chain, statements, seed=1)]


def test_a_failed_anchored_item_localises_to_its_key_statement(guild_kb):
    chain, statements = guild_kb[0]
    item = _anchored_items(chain, statements)[0]
    key = item.option_kinds.index("key")
    wrong = next(i for i in range(4) if i != key)
    stored = type("Item", (), {"answer": "ABCD"[key], "option_statements": item.option_statements})
    assert item_nodes(stored, "ABCD"[wrong]) == [item.option_statements[key]]


def test_same_anchor_needs_one_key():
    with pytest.raises(ValueError, match="tests.keys=one"):
        TestsConfig(distractors="same_anchor")
    assert TestsConfig(distractors="same_anchor", keys="one").one_key


def _draft(statement_id: int) -> TestItemDraft:
    return TestItemDraft(question="q", options=["a", "b", "c", "d"], option_kinds=["key", "x", "x", "x"],
                         option_statements=[statement_id, None, None, None], answer="A")


def test_key_split_puts_one_item_of_each_statement_on_each_side():
    drafts = [_draft(s) for s in (1, 2, 3, 4, 5) * 2]
    for seed in range(5):
        splits = key_splits(drafts, "hash", 0.5, seed)
        sides = defaultdict(set)
        for draft, split in zip(drafts, splits):
            sides[draft.option_statements[0]].add(split)
        assert all(s == {"dev", "holdout"} for s in sides.values())
    # Which item of a pair goes where follows the seed.
    assert len({tuple(key_splits(drafts, "hash", 0.5, seed)) for seed in range(5)}) > 1


def test_key_split_single_items_follow_the_fraction():
    drafts = [_draft(s) for s in range(400)]
    counts = Counter(key_splits(drafts, "hash", 0.25, 0))
    assert 60 <= counts["holdout"] <= 140, counts


def test_the_settings_reach_the_tester_and_the_split():
    """tests.distractors=same_anchor and tests.split=key as a run's config passes them on."""
    from types import SimpleNamespace

    from pwd_agent.config import load_config
    from pwd_agent.llm.offline import from_context

    cfg = load_config(None, ['tests.distractors="same_anchor"', 'tests.keys="one"', 'tests.split="key"'])
    agents = from_context(SimpleNamespace(config=cfg))
    assert agents.anchored and agents.same_process and agents.one_key
    drafts = [_draft(s) for s in (1, 2, 3) * 2]
    splits = assign_splits(cfg.tests, drafts, "hash")
    assert all({splits[i], splits[i + 3]} == {"dev", "holdout"} for i in range(3))
    assert len(set(assign_splits(cfg.tests.model_copy(update={"split": "chain"}), drafts, "hash"))) == 1
