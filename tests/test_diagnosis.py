"""Probe-based localisation on the item's own nodes: untaught / concept_gap name the failing nodes
(never trained on / trained on), chain_break needs every located probe to pass, item_suspect flags an
item every round got wrong the same way; the judge's view is kept."""

import pytest

from pwd_agent.schemas import DiagnosisDraft, KBChain, KBConcept, KBStatement
from pwd_agent.nodes.diagnose import localise
from pwd_agent.probes import concept_probe, statement_probe
from pwd_agent.store import (
    Concept, ConceptStatement, ItemResult, Probe, Round, Statement, TestItem, session_scope,
)

from conftest import add_chain

JUDGE = DiagnosisDraft(kind="chain_break", evidence={"rule": "ordering distractor chosen"})


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    with session_scope(url) as s:
        add_chain(s)
        for i in (1, 2):
            s.add(Statement(id=i, chain_id=1, position=i - 1, subject=f"s{i}", predicate="then", object=f"o{i}",
                            source_quote="q", spo_key=f"k{i}"))
        s.add(Concept(id=1, term="floc", type="term", definition="a clump"))
        s.flush()
        s.add(ConceptStatement(concept_id=1, statement_id=2))
        s.add(TestItem(id=1, chain_id=1, variant=0, split="dev", question="q", options=["a", "b", "c", "d"],
                       option_kinds=["key"] * 4, option_statements=[1, 2, None, None], answer="A,B"))
        for r in (0, 1):
            s.add(Round(id=r, status="evaluated"))
        s.flush()
        s.add_all(Probe(id=i, chain_id=1, target=t, node_id=n, question="q", options=["x", "y", "z"], answer="A")
                  for i, t, n in [(1, "statement", 1), (2, "statement", 2), (3, "concept", 1)])
    return url


TAUGHT = {("statement", 1): {"qa": 6.0}, ("statement", 2): {"qa": 6.0}, ("concept", 1): {"concept": 6.0}}


def verdict(url, passed: dict[int, bool], answers=("C", "D"), ledger=TAUGHT, key="A,B"):
    with session_scope(url) as s:
        s.get(TestItem, 1).answer = key
        for r, predicted in enumerate(answers):
            s.merge(ItemResult(round_id=r, item_id=1, raw=predicted, predicted=predicted, passed=False,
                               prompt_version="v"))
    with session_scope(url) as s:
        item, result = s.get(TestItem, 1), s.get(ItemResult, (1, 1))
        probes = [s.get(Probe, i) for i in (1, 2, 3)]
        return localise(s, 1, item, result, probes, passed, JUDGE, ledger)


def test_a_failing_concept_probe_is_a_concept_gap_on_that_concept_and_its_statements(store):
    d = verdict(store, {1: True, 2: True, 3: False})
    assert (d.kind, d.concept_ids, d.statement_ids) == ("concept_gap", [1], [2])
    assert d.evidence["failed_probes"] == [3] and d.judge_kind == "chain_break"


def test_a_failing_statement_probe_names_that_statement(store):
    d = verdict(store, {1: False, 2: True, 3: True})
    assert (d.kind, d.statement_ids, d.concept_ids) == ("concept_gap", [1], [])


def test_a_failing_node_never_trained_on_is_untaught(store):
    d = verdict(store, {1: False, 2: True, 3: True}, ledger={("statement", 2): {"qa": 6.0}})
    assert (d.kind, d.statement_ids) == ("untaught", [1])
    assert {n["id"]: n["exposures"] for n in d.evidence["nodes"] if n["target"] == "statement"} == {1: 0, 2: 6.0}
    # With exposures on the failing node it is a concept gap (taught, not learned) instead.
    assert verdict(store, {1: False, 2: True, 3: True}).kind == "concept_gap"


def test_all_probes_passing_is_a_chain_break_on_the_located_nodes(store):
    d = verdict(store, {1: True, 2: True, 3: True})
    assert (d.kind, d.statement_ids) == ("chain_break", [1, 2])
    assert d.evidence["rule"] == "every located node passes its probe: the composition fails"


def test_localisation_takes_the_items_key_and_chosen_option_not_the_whole_chain(store):
    # Key A rests on statement 1; the student chose C (no node). Statement 2 fails its probe, but the
    # item does not rest on it, so it is not located: the item passes statement 1's probe -> chain break on 1.
    d = verdict(store, {1: True, 2: False, 3: True}, key="A")
    assert (d.kind, d.statement_ids) == ("chain_break", [1])
    assert [n["id"] for n in d.evidence["nodes"] if n["target"] == "statement"] == [1]
    # Chose B (statement 2's option): now statement 2 is located too, and its failing probe is the gap.
    with session_scope(store) as s:
        s.merge(ItemResult(round_id=1, item_id=1, raw="B", predicted="B", passed=False, prompt_version="v"))
    d = verdict(store, {1: True, 2: False, 3: True}, answers=("C", "B"), key="A")
    assert (d.kind, d.statement_ids) == ("concept_gap", [2])


def test_same_wrong_answer_since_the_base_with_passing_probes_is_suspect(store):
    d = verdict(store, {1: True, 2: True, 3: True}, answers=("C", "C"))
    assert (d.kind, d.statement_ids) == ("item_suspect", [])


def test_probes_are_single_answer_items_on_one_node():
    chain = KBChain(id=1, process_name="Settling", domain="Water", summary="s", steps=["a", "b", "c", "d"])
    statements = [KBStatement(id=i + 1, chain_id=1, position=i, subject=f"step {i}", predicate="then",
                              object=f"step {i + 1}", source_quote="q") for i in range(3)]
    probe = statement_probe(chain, statements[1], statements, ["a foreign step"], seed=0)
    assert probe.target == "statement" and probe.node_id == 2 and len(probe.options) == 4
    assert probe.options["ABCD".index(probe.answer)] == "Step 2."
    assert set(probe.options) == {"Step 2.", "Step 1.", "Step 0.", "Step 3."}  # key, reversed, earlier, skipped
    concepts = [KBConcept(id=i, term=f"t{i}", definition=f"definition {i}", statement_ids=[i]) for i in range(1, 5)]
    cp = concept_probe("Water", concepts[0], concepts, seed=0)
    assert cp.options["ABCD".index(cp.answer)] == "Definition 1." and len(cp.options) == 4
    assert concept_probe("Water", concepts[0], concepts[:2], seed=0) is None  # one distractor proves nothing


class ScriptedTester:
    """A client that answers the tester's prompt with one fixed item (the LLM's side is tested in
    test_llm_loop and test_llm_server; here only what the node makes of the answer)."""

    def __init__(self, answer):
        self.answer = answer

    def ask(self, role, prompt, variables, schema, check):
        assert role == "tester" and check(self.answer) is None
        return self.answer


def test_an_llm_option_about_step_k_rests_on_the_statement_the_offline_tester_names():
    """Both testers map an option about step k to the statement that places step k: the pair that
    ends at it (step 0: the pair that starts it). The LLM tester used the pair starting at k, so its
    items were localised one pair off."""
    from pwd_agent.llm.llm_agents import ItemAnswer, ItemOption, LLMAgents
    from pwd_agent.schemas import step_nodes

    steps = ["the water is screened", "alum is dosed", "the floc settles", "the water is filtered"]
    chain = KBChain(id=1, process_name="Treatment", domain="water", summary="s", steps=steps)
    statements = [KBStatement(id=11 + i, chain_id=1, position=i, subject=steps[i], predicate="then",
                              object=steps[i + 1], source_quote="q") for i in range(3)]
    answer = ItemAnswer(question="q", options=[
        ItemOption(text="The floc settles.", correct=True, step=2),
        ItemOption(text="The water is screened.", correct=False, step=0),
        ItemOption(text="Alum is dosed.", correct=False, step=1),
        ItemOption(text="Something else happens.", correct=False, step=None)])
    item = LLMAgents(ScriptedTester(answer), one_key=True).write_test_item(chain, statements, [], 0)
    assert item.option_statements == [12, 11, 11, None]  # step 2 ends pair 1 (id 12); steps 0 and 1: pair 0
    # tests.distractors=same_anchor: an order item's wrong options rest on no statement, so the item
    # localises to its key alone, as the offline rules' items do.
    anchored = LLMAgents(ScriptedTester(answer), facets=("order",), one_key=True, same_process=True, anchored=True)
    assert anchored.write_test_item(chain, statements, [], 0).option_statements == [12, None, None, None]
    assert step_nodes(statements) == {0: 11, 1: 11, 2: 12, 3: 13}
    assert step_nodes([]) == {}


def test_the_repair_trace_reads_the_key_mass_when_the_located_probes_pass():
    """`blame`'s broken link: past the probes, the options scorer's key mass says whether the dose
    raised the key (and which distractor still wins) or lowered it; without a mass it says no more."""
    from types import SimpleNamespace

    from pwd_agent.report.blame import broken_link

    nodes = [{"label": "statement 7", "exposures": [0, 54], "probe": [False, True]}]
    result = lambda passed, mass, picked: SimpleNamespace(passed=passed, mass=mass, predicted=picked)  # noqa: E731
    before = result(False, 0.01, "A")
    assert broken_link(9, nodes, result(False, 0.2, "A"), before) == (
        "the located nodes pass their probes, the item still fails: the key gained mass, the distractor picked "
        "before still outweighs it (key mass 0.01 -> 0.2)")
    assert "another distractor still outweighs it" in broken_link(9, nodes, result(False, 0.2, "C"), before)
    assert "the key lost mass" in broken_link(9, nodes, result(False, 0.001, "C"), before)
    assert broken_link(9, nodes, result(False, None, "C"), before).endswith("the composition, or a node not located")
    assert broken_link(9, nodes, result(True, 0.9, "B"), before) == "repaired: the item passes after the patch"
    failing = [dict(nodes[0], probe=[False, False])]
    assert broken_link(9, failing, result(False, 0.2, "A"), before).startswith("the dose did not teach")
