"""The V1 budget (builder.v1_budget: which statements V1 teaches, and that nothing in V1 teaches the
others) and the exposure ledger (samples x epochs per KB node, by kind, along a round's lineage).
Hand-made stores and the offline rules: no model, no training."""

import math

import pytest

from pwd_agent.config import BuilderConfig
from pwd_agent.exposures import round_ledger, total, v1_taught
from pwd_agent.llm.offline import OfflineAgents
from pwd_agent.nodes.synthesize import plan_units, v1_drafts
from pwd_agent.phrasing import step_phrase
from pwd_agent.recipes import PASSAGES, _fill
from pwd_agent.store import (
    Chain, Concept, ConceptStatement, Round, RoundSample, Sample, Statement, session_scope,
)

from conftest import SALT_STEPS as STEPS, add_chain

OTHER_STEPS = (
    "First, the reeds are cut along the northern shore.",
    "Then the cut reeds are bundled with willow twine.",
    "Finally, the bundles are stacked inside the smoke hut.",
)
STATEMENT_IDS = (11, 12, 13, 14, 15)  # positions 0..4: ids unlike positions, so a mix-up shows
TAUGHT = {12, 13, 15}  # runs: positions 1-2 (steps 1..3) and position 4 (steps 4..5); 0 and 3 untaught


def add_statements(session, chain_id: int, steps: tuple[str, ...], ids, order=None) -> None:
    pairs = list(enumerate(zip(steps, steps[1:])))
    for k in order or range(len(pairs)):
        position, (first, second) = pairs[k]
        session.add(Statement(id=ids[k], chain_id=chain_id, position=position, subject=step_phrase(first),
                              predicate="is followed by", object=step_phrase(second), source_quote=f"{first} {second}",
                              spo_key=f"{chain_id}:{position}"))
    session.flush()


def salt_store(url: str, summary: str = "Salt boiling is how the island makes its salt.") -> None:
    """Chain 1 (six steps, statements 11-15, three concepts) and chain 2 (another process, for foreign steps)."""
    with session_scope(url) as s:
        add_chain(s, STEPS)
        chain = s.get(Chain, 1)
        chain.process_name, chain.summary = "Salt boiling", summary
        s.add(Chain(id=2, chunk_id=1, process_name="Reed curing", domain="d", summary="Reed curing.",
                    steps=list(OTHER_STEPS), steps_hash="y"))
        s.flush()
        add_statements(s, 1, STEPS, STATEMENT_IDS)
        add_statements(s, 2, OTHER_STEPS, (21, 22))
        s.add_all([Concept(id=1, term="brine", definition="Brine is salt water from the pans."),
                   Concept(id=2, term="boiling pan", definition="A boiling pan is a shallow copper vessel."),
                   Concept(id=3, term="drying rack", definition="A drying rack is a slatted cedar shelf.")])
        s.flush()
        # brine: an untaught and a taught statement; boiling pan: untaught only; drying rack: taught only
        s.add_all([ConceptStatement(concept_id=1, statement_id=11), ConceptStatement(concept_id=1, statement_id=12),
                   ConceptStatement(concept_id=2, statement_id=14), ConceptStatement(concept_id=3, statement_id=15)])


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'run.db'}"


# ---- (a) which statements V1 teaches ---------------------------------------------------------------

SEVEN = ("one", "two", "three", "four", "five", "six", "seven", "eight")  # 7 statements: ceil differs from round


def seven_statements(url: str, ids, order) -> None:
    with session_scope(url) as s:
        add_chain(s, tuple(f"First, step {w} happens." for w in SEVEN))
        add_statements(s, 1, tuple(f"First, step {w} happens." for w in SEVEN), ids, order)


def taught_content(url: str, share, seed: int) -> set[tuple[str, str, str]] | None:
    with session_scope(url) as s:
        ids = v1_taught(s, share, seed)
        if ids is None:
            return None
        return {(st.subject, st.predicate, st.object) for st in (s.get(Statement, i) for i in ids)}


def test_the_budget_takes_the_ceiling_of_its_share_and_the_shares_nest(url):
    seven_statements(url, range(1, 8), None)
    sizes = {share: len(taught_content(url, share, 0)) for share in (0.01, 0.3, 0.5, 0.9, 1.0)}
    assert sizes == {0.01: 1, 0.3: 3, 0.5: 4, 0.9: 7, 1.0: 7}  # ceil(2.1) = 3, ceil(3.5) = 4, at least one
    # One seeded ranking: a smaller budget teaches a subset of a larger one's statements.
    assert taught_content(url, 0.3, 0) < taught_content(url, 0.5, 0) < taught_content(url, 1.0, 0)


def test_the_taught_set_follows_the_content_not_the_storing_order_and_moves_with_the_seed(tmp_path, url):
    seven_statements(url, range(1, 8), None)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    seven_statements(other, [107, 103, 101, 106, 102, 105, 104], [6, 2, 0, 5, 1, 4, 3])  # other ids, other order
    for seed in (0, 1, 7):
        assert taught_content(url, 0.5, seed) == taught_content(other, 0.5, seed)
    assert any(taught_content(url, 0.5, seed) != taught_content(url, 0.5, 0) for seed in (1, 2, 3))


def test_no_budget_means_every_statement():
    assert v1_taught(None, None, 0) is None  # not even a query: the session is not touched


# ---- (b) V1 under a budget teaches nothing else ----------------------------------------------------

CFG = BuilderConfig(paraphrases=3, text_passages=4, samples_per_statement=3, qa_share=0.4, choice_share=0.4)


def step_sequence(text: str, steps: list[str]) -> list[int]:
    """The chain's steps in the order the text names them (each occurrence)."""
    low = text.lower()
    found = []
    for k, step in enumerate(steps):
        start = low.find(step.lower())
        while start != -1:
            found.append((start, k))
            start = low.find(step.lower(), start + 1)
    return [k for _, k in sorted(found)]


def budget_drafts(url: str, taught):
    [unit] = plan_units(url, [1], CFG.concept_samples, taught)
    drafts, calls = v1_drafts(OfflineAgents(), unit, CFG, taught)
    assert calls and all(c.ok for c in calls)
    return unit, drafts


@pytest.mark.parametrize("summary", ["Salt boiling is how the island makes its salt.", STEPS[0]],
                         ids=["own-summary", "first-step-as-summary"])  # the offline extractor's fallback summary
def test_v1_on_a_budget_carries_no_untaught_statement_and_no_passage_joins_an_untaught_pair(url, summary):
    salt_store(url, summary)
    (chain, statements, concepts, _), drafts = budget_drafts(url, TAUGHT)
    untaught = {st.id for st in statements} - TAUGHT
    lessons = [d for d in drafts if d.kind != "concept"]
    assert {d.kind for d in lessons} >= {"qa", "choice", "tf", "text"}
    assert [d for d in lessons if set(d.statement_ids) & untaught] == []
    assert {sid for d in lessons for sid in d.statement_ids} == TAUGHT  # every taught statement is taught
    qa = [d for d in drafts if d.kind == "qa" and len(d.statement_ids) == 1]
    assert all(sum(d.statement_ids == [sid] for d in qa) >= CFG.paraphrases for sid in TAUGHT)

    steps = [step_phrase(x) for x in chain.steps]
    pos = {st.id: st.position for st in statements}
    passages = [d for d in drafts if d.kind == "text"]
    assert passages
    adjacent = set()
    for d in passages:
        seq = step_sequence(d.answer, steps)
        adjacent |= set(zip(seq, seq[1:]))
        for sid in untaught:  # an untaught pair's steps are never named one right after the other
            assert (pos[sid], pos[sid] + 1) not in adjacent, (sid, d.answer)
    assert {(pos[sid], pos[sid] + 1) for sid in TAUGHT} <= adjacent  # each taught pair is walked


def test_a_passage_of_a_later_run_does_not_call_its_first_step_the_start_of_the_process(url):
    """A run of taught steps that starts mid-process (positions 1-2 and 4 here) is not the process's
    beginning: no passage may say it starts there ("begins when", "Step 1 of", "At the start of")."""
    salt_store(url)
    (chain, statements, _, _), drafts = budget_drafts(url, TAUGHT)
    steps = [step_phrase(x) for x in chain.steps]
    passages = [d.answer for d in drafts if d.kind == "text"]
    for start in (1, 4):  # the first step of each run (statement positions 1 and 4)
        openings = [_fill(first, chain, b=steps[start], n=1) for _, first, _ in PASSAGES]
        wrong = [(o, p) for o in openings for p in passages if o in p]
        assert wrong == [], wrong[0]


def test_v1_on_a_budget_defines_only_concepts_of_taught_statements(url):
    salt_store(url)
    [(_, _, everything, _)] = plan_units(url, [1], True, None)
    [(_, _, budgeted, _)] = plan_units(url, [1], True, TAUGHT)
    assert [c.id for c in everything] == [1, 2, 3]
    assert [c.id for c in budgeted] == [1, 3]  # boiling pan rests on untaught statement 14 only
    _, drafts = budget_drafts(url, TAUGHT)
    assert sorted(cid for d in drafts if d.kind == "concept" for cid in d.concept_ids) == [1, 3]


def test_a_chain_with_no_taught_statement_gets_no_v1_at_all(url):
    salt_store(url)
    [unit] = plan_units(url, [2], True, TAUGHT)
    assert v1_drafts(OfflineAgents(), unit, CFG, TAUGHT) == ([], [])


def test_the_budget_run_through_plan_and_drafts_matches_v1_taught(url):
    """v1_taught's ids drive the drafts: ceil(0.5 x 7) statements of the store, no other."""
    salt_store(url)
    with session_scope(url) as s:
        taught = v1_taught(s, 0.5, 3)
    assert len(taught) == math.ceil(0.5 * 7)
    _, drafts = budget_drafts(url, taught)
    mine = taught & set(STATEMENT_IDS)
    assert {sid for d in drafts if d.kind != "concept" for sid in d.statement_ids} == mine


# ---- (c) the exposure ledger ------------------------------------------------------------------------

def ledger_store(url: str) -> None:
    """Statements 11-15 (chain 1) and 21-22 (chain 2), concept 1; rounds 1 (2 epochs), 2 (3 epochs,
    continued from 1), 3 (no epochs recorded, from the base)."""
    salt_store(url)
    samples = {
        1: ("qa", [11], []), 2: ("qa", [11], []), 3: ("text", [11, 12, 13], []),
        4: ("concept", [12, 13], [1]), 5: ("choice", [12], [1]), 6: ("walk", [11, 12], []),
        7: ("walk", [13, 21], []),  # two chains' statements: exposes no chain
        8: ("qa", [14], []),  # in no round's set
    }
    with session_scope(url) as s:
        s.add_all(Sample(id=i, origin="v1", kind=kind, prompt=f"p{i}", answer=f"a{i}", chain_id=1,
                         statement_ids=sts, concept_ids=cs) for i, (kind, sts, cs) in samples.items())
        s.add_all([Round(id=0, status="evaluated"), Round(id=1, status="evaluated", epochs=2),
                   Round(id=2, status="evaluated", epochs=3, parent_round=1),
                   Round(id=3, status="evaluated")])
        s.flush()
        members = {1: [1, 3, 4, 5], 2: [2, 6, 7], 3: [1]}
        s.add_all(RoundSample(round_id=r, sample_id=x, role="v1") for r, xs in members.items() for x in xs)


def ledger(url: str, round_id: int, default_epochs: float = 1.0) -> dict:
    with session_scope(url) as s:
        return round_ledger(s, round_id, default_epochs)


def test_the_ledger_counts_samples_times_epochs_by_kind(url):
    ledger_store(url)
    assert ledger(url, 1) == {
        ("statement", 11): {"qa": 2, "text": 2},
        ("statement", 12): {"text": 2, "choice": 2},  # the definition sample citing 12 exposes no statement
        ("statement", 13): {"text": 2},
        ("concept", 1): {"concept": 2, "choice": 2},
        ("chain", 1): {"text": 2},  # the passage (3 of its statements); not the definition (2 of them)
    }
    assert total(ledger(url, 1), ("statement", 11)) == 4 and total(ledger(url, 1), ("statement", 14)) == 0


def test_a_continued_round_adds_its_parents_exposures(url):
    ledger_store(url)
    assert ledger(url, 2) == {
        ("statement", 11): {"qa": 2 + 3, "text": 2, "walk": 3},
        ("statement", 12): {"text": 2, "choice": 2, "walk": 3},
        ("statement", 13): {"text": 2, "walk": 3},
        ("statement", 21): {"walk": 3},
        ("concept", 1): {"concept": 2, "choice": 2},
        ("chain", 1): {"text": 2, "walk": 3},  # sample 6 (11 and 12); sample 7 spans two chains
    }
    parent, child = ledger(url, 1), ledger(url, 2)
    assert all(total(child, node) >= total(parent, node) for node in parent)


def test_a_round_from_the_base_counts_only_its_own_set_at_the_default_epochs(url):
    ledger_store(url)
    assert ledger(url, 3, default_epochs=5) == {("statement", 11): {"qa": 5}}
    assert ledger(url, 1, default_epochs=5) == ledger(url, 1)  # a recorded epochs count wins over the default
    with session_scope(url) as s:
        s.get(Round, 2).parent_round = None
    assert ledger(url, 2) == {("statement", 11): {"qa": 3, "walk": 3}, ("statement", 12): {"walk": 3},
                              ("statement", 13): {"walk": 3}, ("statement", 21): {"walk": 3},
                              ("chain", 1): {"walk": 3}}
    assert ledger(url, 0) == {}  # the base model was trained on nothing


def test_a_round_that_stopped_early_counts_the_epochs_of_the_weights_it_kept():
    """train.epochs=3 with early stopping that kept epoch 1: the ledger's factor is 1, not 3."""
    from pwd_agent.nodes.train import kept_epochs

    assert kept_epochs(3, {"train_loss": 0.2, "best_epoch": 1, "epochs_run": 2}) == 1
    assert kept_epochs(3, {"train_loss": 0.2}) == 3  # no held-out share: every configured epoch
