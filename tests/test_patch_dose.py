"""Patch dosing (builder.patch_exposures): each located node gets ceil(exposures / epochs) samples in
wordings V1 did not use, both directions; a node is dosed once per round; no sample repeats a stored
one; no dose sample trips the leakage gate. The recipes, the patch node's helpers, and the node itself
on a hand-made store with the offline rules: no model, no training."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlmodel import select

from pwd_agent.schemas import DiagnosisDraft, KBChain, KBConcept, KBStatement, SampleDraft
from pwd_agent.config import RULE_FACETS, BuilderConfig, RunConfig
from pwd_agent.corpus import chunk_document, read_corpus
from pwd_agent.leakage import GateItem, LeakageGate, chain_source, key_options, sample_text
from pwd_agent.llm.offline import OfflineAgents
from pwd_agent.nodes.patch import claim_nodes, dose, patch, unseen
from pwd_agent.phrasing import step_phrase
from pwd_agent.recipes import (
    PATCH_WORDINGS, _fill, chain_dose, concept_dose, contrast_samples, dose_samples, paraphrase_samples,
    text_passages,
)
from pwd_agent.context import RunContext
from pwd_agent.store import (
    Chain, Chunk, Concept, ConceptStatement, Diagnosis, Document, Patch, Round, Sample, Statement, TestItem,
    session_scope,
)

from conftest import ROOT, SALT_STEPS as STEPS

CHAIN = KBChain(id=1, process_name="Salt boiling", domain="Island crafts", summary="Salt boiling makes salt.",
                steps=list(STEPS))
STATEMENTS = [KBStatement(id=11 + k, chain_id=1, position=k, subject=step_phrase(a), predicate="is followed by",
                          object=step_phrase(b), source_quote=f"{a} {b}")
              for k, (a, b) in enumerate(zip(STEPS, STEPS[1:]))]
CONCEPTS = [KBConcept(id=1, term="brine", definition="Brine is salt water from the pans.", statement_ids=[11, 12]),
            KBConcept(id=2, term="drying rack", definition="A drying rack is a slatted cedar shelf.",
                      statement_ids=[15])]


def pairs(drafts) -> list[tuple[str, str]]:
    return [(d.prompt, d.answer) for d in drafts]


def renderings(st: KBStatement) -> set[tuple[str, str]]:
    """Every PATCH_WORDINGS sentence pair about one statement: what a recipe dose of it may say."""
    return {(_fill(q, CHAIN, st.subject, st.object), _fill(a, CHAIN, st.subject, st.object)) for q, a in PATCH_WORDINGS}


# ---- recipes.dose_samples --------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 13))
def test_a_dose_of_n_is_n_distinct_samples_of_one_statement_both_ways(n):
    st = STATEMENTS[2]
    drafts = dose_samples(CHAIN, st, n)
    assert len(drafts) == n == len(set(pairs(drafts)))
    assert all(d.kind == "qa" and d.statement_ids == [st.id] for d in drafts)
    forward = [d for d in drafts if st.subject in d.prompt and st.object not in d.prompt]
    backward = [d for d in drafts if st.object in d.prompt and st.subject not in d.prompt]
    assert len(forward) + len(backward) == n
    assert all(st.subject.lower() in d.answer.lower() for d in backward)  # the earlier step is the answer
    if n >= 2:
        assert forward and backward


def test_a_dose_of_twelve_uses_every_patch_wording():
    st = STATEMENTS[0]
    assert set(pairs(dose_samples(CHAIN, st, 12))) == renderings(st)


@pytest.mark.parametrize("used", [1, 2, 3])
def test_a_dose_repeats_no_v1_paraphrase_of_its_statement(used):
    """V1 gave each taught statement `used` forward wordings (builder.paraphrases; paraphrase_samples
    shifts them by the statement's position); a dose teaches the same fact in the others."""
    for st in STATEMENTS:
        v1 = set(pairs(paraphrase_samples(CHAIN, [st], used)))
        dosed = pairs(dose_samples(CHAIN, st, len(PATCH_WORDINGS) - used, used))
        assert len(set(dosed)) == len(dosed) == len(PATCH_WORDINGS) - used
        assert not v1 & set(dosed), (st.position, sorted(v1 & set(dosed)))


@pytest.mark.parametrize("used", [0, 3])
def test_a_forward_dose_never_asks_the_way_back(used):
    """builder.patch_wordings=forward: every sample asks what follows the earlier step and answers with
    the later one; where the answer names both steps, the earlier comes first. No V1 wording repeats."""
    for st in STATEMENTS:
        drafts = dose_samples(CHAIN, st, len(PATCH_WORDINGS), used, "forward")
        assert len(drafts) == len(set(pairs(drafts))) == len(PATCH_WORDINGS) - used
        for d in drafts:
            assert st.subject in d.prompt and st.object not in d.prompt, d.prompt
            answer = d.answer.lower()
            assert st.object.lower() in answer
            if st.subject.lower() in answer:
                assert answer.index(st.subject.lower()) < answer.index(st.object.lower()), d.answer
        assert not set(pairs(paraphrase_samples(CHAIN, [st], used))) & set(pairs(drafts))


def test_a_contrast_dose_alternates_forward_questions_and_true_claims_among_false_ones():
    st = STATEMENTS[2]
    a, b = st.subject, st.object
    before, after_next = step_phrase(STEPS[1]), step_phrase(STEPS[4])
    drafts = dose_samples(CHAIN, st, 12, 0, "contrast")
    assert len(drafts) == len(set(pairs(drafts))) == 12
    assert [d.kind for d in drafts] == ["qa", "contrast"] * 6
    for d in drafts[1::2]:
        options = [line[2:] for line in d.prompt.splitlines()[1:]]
        assert len(options) == 4 and d.answer in options  # the true claim, written out, among the false ones
        true = d.answer.lower()
        assert true.index(a) < true.index(b)
        # The false claims: reversed, the next step skipped, the step before put in a's place.
        false = [o.lower() for o in options if o != d.answer]
        assert any(o.index(b) < o.index(a) for o in false if a in o and b in o)
        assert any(a in o and after_next in o and b not in o for o in false)
        assert any(before in o and b in o and a not in o for o in false)
    # The true claim stands in every place among the options, in turn.
    assert {[line[2:] for line in d.prompt.splitlines()[1:]].index(d.answer) for d in drafts[1::2]} == {0, 1, 2, 3}


def test_a_text_dose_alternates_forward_questions_and_plain_text_walks_over_the_pair():
    """builder.patch_wordings=text: V1's kind of sample (plain text, loss on every token) for the pair."""
    st = STATEMENTS[3]
    drafts = dose_samples(CHAIN, st, 12, 0, "text")
    assert len(drafts) == len(set(pairs(drafts))) == 12
    assert [d.kind for d in drafts] == ["qa", "text"] * 6
    for d in drafts[1::2]:
        text = d.answer.lower()
        assert d.prompt == "" and d.statement_ids == [st.id] and "salt boiling" in text
        assert text.index(st.subject) < text.index(st.object)
    # Every form has the same cap: twelve less the wordings V1 used.
    for form in ("both", "forward", "contrast", "text"):
        assert len(dose_samples(CHAIN, st, 99, 3, form)) == 9


def test_a_text_dose_never_repeats_a_v1_walk_whatever_v1_taught():
    """A taught single pair is walked by V1 in MIDDLE_ or START_PASSAGES; the text dose's walks over the
    pair must be new wordings, or the patch retrains V1's own samples (an earlier wording did)."""
    from itertools import combinations
    ids = [st.id for st in STATEMENTS]
    tried = 0
    for size in range(1, len(ids) + 1):
        for taught in combinations(ids, size):
            v1 = {d.answer for d in text_passages(CHAIN, STATEMENTS, 8, set(taught))}
            for st in STATEMENTS:
                walks = [d.answer for d in dose_samples(CHAIN, st, 12, 0, "text") if d.kind == "text"]
                assert walks and not v1 & set(walks), (taught, st.id)
                tried += 1
    assert tried == (2 ** len(ids) - 1) * len(ids)


def test_contrast_needs_a_step_to_skip_and_an_unknown_form_is_refused():
    two = KBChain(id=2, process_name="Knot tying", domain="Ropes", summary="Tying.", steps=["Loop it.", "Pull it."])
    st = KBStatement(id=99, chain_id=2, position=0, subject="loop it", predicate="then", object="pull it",
                     source_quote="Loop it. Pull it.")
    assert contrast_samples(two, st, 4) == []
    assert [d.kind for d in dose_samples(two, st, 3, 0, "contrast")] == ["qa"] * 3
    with pytest.raises(ValueError, match="forward"):
        dose_samples(CHAIN, STATEMENTS[0], 3, 0, "sideways")


# ---- nodes.patch.dose -------------------------------------------------------------------------------

def builder(**kw) -> BuilderConfig:
    return BuilderConfig(**{"paraphrases": 2, "patch_exposures": 7, **kw})


@pytest.mark.parametrize("kind", ["untaught", "concept_gap"])
@pytest.mark.parametrize(("exposures", "epochs"), [(7, 2), (4, 2), (9, 3), (5, 1.5)])
def test_a_gap_dose_is_ceil_exposures_over_epochs_per_located_node_and_nothing_else(kind, exposures, epochs):
    draft = DiagnosisDraft(kind=kind, statement_ids=[12, 14], concept_ids=[1])
    out = dose(CHAIN, STATEMENTS, CONCEPTS, draft, builder(patch_exposures=exposures), epochs)
    per_node = math.ceil(exposures / epochs)
    statement_samples = [d for d in out if d.kind != "concept"]
    assert sorted(d.statement_ids[0] for d in statement_samples) == [12] * per_node + [14] * per_node
    assert all(len(d.statement_ids) == 1 and not d.concept_ids for d in statement_samples)
    assert all(set(pairs([d])) <= renderings(STATEMENTS[d.statement_ids[0] - 11]) for d in statement_samples)
    definitions = [d for d in out if d.kind == "concept"]  # the failing concept 1 only, not concept 2
    assert len(definitions) == per_node and all(d.concept_ids == [1] for d in definitions)
    assert len(set(pairs(definitions))) == min(per_node, 4)  # CONCEPT_WORDINGS cycled
    assert all("brine" in d.prompt for d in definitions)


def test_an_untaught_node_gets_the_forward_wordings_a_taught_one_already_had():
    st = STATEMENTS[0]
    untaught = dose(CHAIN, STATEMENTS, [], DiagnosisDraft(kind="untaught", statement_ids=[st.id]), builder(), 1)
    gap = dose(CHAIN, STATEMENTS, [], DiagnosisDraft(kind="concept_gap", statement_ids=[st.id]), builder(), 1)
    v1 = set(pairs(paraphrase_samples(CHAIN, [st], 2)))
    assert len(untaught) == len(gap) == 7
    assert v1 & set(pairs(untaught)) and not v1 & set(pairs(gap))


def test_without_patch_exposures_a_dose_is_the_old_paraphrases_past_v1():
    draft = DiagnosisDraft(kind="concept_gap", statement_ids=[13], concept_ids=[1])
    out = dose(CHAIN, STATEMENTS, CONCEPTS, draft, builder(patch_exposures=None, paraphrases=3), 2)
    assert pairs(out) == pairs(paraphrase_samples(CHAIN, [STATEMENTS[2]], 3, offset=3))


def test_a_chain_break_dose_is_chain_dose_on_the_located_statements():
    draft = DiagnosisDraft(kind="chain_break", statement_ids=[12, 13])
    out = dose(CHAIN, STATEMENTS, CONCEPTS, draft, builder(patch_exposures=6), 2)
    located = [STATEMENTS[1], STATEMENTS[2]]
    assert pairs(out) == pairs(chain_dose(CHAIN, STATEMENTS, located, 3 * 2))
    assert len(out) == 6 and {d.kind for d in out} == {"walk"} and len(set(pairs(out))) == 6
    assert all({12, 13} & set(d.statement_ids) for d in out)  # every sample carries a located statement
    assert not [d for d in out if d.concept_ids]  # a chain break doses no concept
    assert dose(CHAIN, STATEMENTS, CONCEPTS, DiagnosisDraft(kind="chain_break"), builder(), 2) == []


def test_chain_dose_gives_both_hops_then_the_later_facts_never_repeating():
    st = STATEMENTS[2]
    out = chain_dose(CHAIN, STATEMENTS, [st], 100)
    steps = [step_phrase(s) for s in STEPS]
    hops = [d for d in out if d.statement_ids == [13, 14]]
    later = [d for d in out if d.statement_ids == [13, 14, 15]]
    assert len(out) == len(set(pairs(out))) == len(hops) + len(later) and len(hops) >= 4 and len(later) >= 3
    assert all(st.object in d.answer and STATEMENTS[3].object in d.answer for d in hops)
    for d in later:  # every later step, none of the earlier ones
        assert all(s in d.answer for s in steps[st.position + 1:])
        assert not any(s in d.answer for s in steps[:st.position])
    assert chain_dose(CHAIN, STATEMENTS, [st], 3) == out[:3]


# ---- claim_nodes and unseen ---------------------------------------------------------------------------

def unit(diagnosis_id: int, kind: str, statement_ids: list[int], concept_ids: list[int] = ()) -> tuple:
    return (diagnosis_id, CHAIN, STATEMENTS, CONCEPTS, ["foreign"],
            DiagnosisDraft(kind=kind, statement_ids=statement_ids, concept_ids=list(concept_ids)))


def test_each_node_goes_to_the_first_diagnosis_that_names_it():
    units = [unit(3, "concept_gap", [12, 13], [1]), unit(5, "untaught", [13, 14], [1, 2]),
             unit(8, "chain_break", [12]), unit(9, "concept_gap", [15], [2])]
    claimed = claim_nodes(units)
    assert [u[0] for u in claimed] == [3, 5, 8, 9]
    assert [(u[-1].statement_ids, u[-1].concept_ids) for u in claimed] == [
        ([12, 13], [1]), ([14], [2]), ([], []), ([15], [])]
    assert [u[-1].kind for u in claimed] == ["concept_gap", "untaught", "chain_break", "concept_gap"]
    assert all(c[1:-1] == u[1:-1] for c, u in zip(claimed, units))
    assert units[1][-1].statement_ids == [13, 14]  # the diagnoses themselves are not changed


def test_unseen_drops_stored_and_repeated_samples_and_remembers_the_rest():
    d = [SampleDraft(kind="qa", prompt=p, answer=a) for p, a in
         [("p1", "a1"), ("p2", "a2"), ("p2", "a2"), ("p2", "other"), ("p3", "a3")]]
    seen = {("p1", "a1")}
    kept, dropped = unseen(d, seen)
    assert pairs(kept) == [("p2", "a2"), ("p2", "other"), ("p3", "a3")] and dropped == 2
    assert seen == {("p1", "a1"), ("p2", "a2"), ("p2", "other"), ("p3", "a3")}
    assert unseen(d, seen) == ([], 5)  # a second batch of the same samples: all repeats


# ---- the patch node on a hand-made store ------------------------------------------------------------

CHUNK = " ".join(STEPS) + " **Brine** is salt water from the pans. A **drying rack** is a slatted cedar shelf."


def patch_store(url: str) -> None:
    """The salt chain with V1's paraphrases stored, its order items, and round 1's diagnoses:
    1 concept_gap on 12, 13 and concept 1; 2 untaught on 13, 14; 3 concept_gap on 12 (every node
    taken by 1); 4 item_suspect; 5 chain_break on 15."""
    agents = OfflineAgents()
    with session_scope(url) as s:
        s.add(Document(id=1, path="d.md", title="d", content_hash="h", n_chars=1))
        s.flush()
        s.add(Chunk(id=1, document_id=1, position=0, text=CHUNK, content_hash="c"))
        s.flush()
        s.add(Chain(id=1, chunk_id=1, process_name=CHAIN.process_name, domain=CHAIN.domain, summary=CHAIN.summary,
                    steps=list(STEPS), steps_hash="x"))
        s.flush()
        s.add_all(Statement(spo_key=str(st.id), **st.model_dump()) for st in STATEMENTS)
        s.add_all(Concept(id=c.id, term=c.term, definition=c.definition) for c in CONCEPTS)
        s.flush()
        s.add_all(ConceptStatement(concept_id=c.id, statement_id=sid) for c in CONCEPTS for sid in c.statement_ids)
        for i in range(1, 6):
            item = agents.write_test_item(CHAIN, STATEMENTS, ["the reeds are cut along the shore"] * 4, i - 1)
            s.add(TestItem(id=i, chain_id=1, variant=i - 1, split="dev", **item.model_dump()))
        taught = [st for st in STATEMENTS if st.id != 14]  # V1 on a budget: 14 untaught
        s.add_all(Sample(origin="v1", chain_id=1, **d.model_dump()) for d in paraphrase_samples(CHAIN, taught, 2))
        s.add_all(Round(id=r, status="evaluated") for r in (0, 1))
        s.flush()
        for i, kind, sts, cs in [(1, "concept_gap", [12, 13], [1]), (2, "untaught", [13, 14], []),
                                 (3, "concept_gap", [12], []), (4, "item_suspect", [], []),
                                 (5, "chain_break", [15], [])]:
            s.add(Diagnosis(id=i, round_id=1, item_id=i, kind=kind, statement_ids=sts, concept_ids=cs,
                            evidence={"rule": "test"}))


def run_patch(tmp_path: Path, **builder_keys) -> str:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    patch_store(url)
    config = RunConfig.model_validate({"builder": {"paraphrases": 2, **builder_keys}, "train": {"epochs": 2}})
    ctx = RunContext(config=config, run_dir=tmp_path, db_url=url)
    assert patch({"round": 1}, SimpleNamespace(context=ctx)) == {"round": 2}
    return url


def test_the_patch_node_doses_each_located_node_once_and_repeats_nothing(tmp_path):
    url = run_patch(tmp_path, patch_exposures=8)  # 8 exposures at 2 epochs: 4 samples per node
    with session_scope(url) as s:
        patches = {p.diagnosis_id: p for p in s.exec(select(Patch)).all()}
        samples = s.exec(select(Sample)).all()
    assert sorted(patches) == [1, 2, 3, 5]  # item_suspect is not patched
    by_patch = {d: [x for x in samples if x.patch_id == p.id] for d, p in patches.items()}
    assert all(p.n_samples == len(by_patch[d]) and p.target_round == 2 for d, p in patches.items())
    assert patches[3].n_samples == 0  # every node it located was dosed by diagnosis 1
    assert len(set(pairs(samples))) == len(samples)  # no sample repeats a V1 sample or another patch's

    def recipe(diagnosis_id: int, st: KBStatement) -> list:
        return [x for x in by_patch[diagnosis_id] if (x.prompt, x.answer) in renderings(st)]

    definitions = [x for x in by_patch[1] if x.kind == "concept"]
    assert len(definitions) == 4 and all(x.concept_ids == [1] for x in definitions)
    assert all(set(x.statement_ids) <= {12, 13} for x in by_patch[1] if x.kind != "concept")
    assert all(set(x.statement_ids) <= {14} for x in by_patch[2])
    broken = set(pairs(chain_dose(CHAIN, STATEMENTS, [STATEMENTS[4]], 4)))  # the chain break's recipe, stored whole
    assert len(broken) == 4 and broken <= set(pairs(by_patch[5]))
    # Each located statement gets its full dose, none of it lost as a repeat of a V1 paraphrase.
    assert [len(recipe(2, st)) for st in STATEMENTS] == [0, 0, 0, 4, 0]  # 13 went to diagnosis 1
    assert [len(recipe(1, st)) for st in STATEMENTS] == [0, 4, 4, 0, 0]


def test_a_dose_beyond_the_distinct_wordings_is_capped_there_and_the_patch_node_says_so(tmp_path):
    """builder.patch_exposures is a count of exposures (samples x epochs) per located node; 40 at 2
    epochs is 20 samples, more than the 12 patch wordings. A repeat would teach the wording, not the
    fact, so the dose stops at the wordings left (12 for an untaught node) and the node logs a warning
    that names the fix."""
    from pwd_agent.store import Event

    url = run_patch(tmp_path, patch_exposures=40)
    with session_scope(url) as s:
        patch_id = s.exec(select(Patch.id).where(Patch.diagnosis_id == 2)).one()
        stored = s.exec(select(Sample).where(Sample.patch_id == patch_id)).all()
        warnings = [e.message for e in s.exec(select(Event).where(Event.node == "patch", Event.level == "warning"))]
    dosed = [x for x in stored if (x.prompt, x.answer) in renderings(STATEMENTS[3])]
    assert len(dosed) == len(set(pairs(dosed))) == 12
    assert any("asks 20 samples per node" in w and "raise train.epochs" in w for w in warnings)


def test_the_patch_node_without_patch_exposures_keeps_the_old_paraphrases(tmp_path):
    url = run_patch(tmp_path)
    with session_scope(url) as s:
        patches = {p.diagnosis_id: p for p in s.exec(select(Patch)).all()}
        samples = s.exec(select(Sample).where(Sample.origin == "patch")).all()
    v1_done = set(pairs(paraphrase_samples(CHAIN, STATEMENTS, 2)))
    past_v1 = set(pairs(paraphrase_samples(CHAIN, STATEMENTS, 2, offset=2)))
    assert not v1_done & set(pairs(samples))
    assert {(x.prompt, x.answer) for x in samples if x.patch_id == patches[1].id} & past_v1
    assert patches[3].n_samples == 0


# ---- the leakage gate on every dose sample of the invented corpus -----------------------------------

@pytest.fixture(scope="module")
def invented_kb():
    """[(chain, statements, concepts, gate over the chain's own items)] for the invented corpus."""
    agents = OfflineAgents()
    docs = [d for d in read_corpus(ROOT / "examples" / "invented" / "corpus", [".md"])
            if not d.path.endswith("README.md")]
    drafts = [(agents.extract_chain(c.text, c.heading, d.title), c.text) for d in docs
              for c in chunk_document(d.text, 1500)]
    out, next_id = [], 1
    for i, (draft, text) in enumerate([x for x in drafts if x[0] is not None]):
        chain = KBChain(id=i + 1, **draft.model_dump())
        raw = agents.extract_statements(text, draft)
        statements = [KBStatement(id=next_id + j, chain_id=chain.id, **st.model_dump()) for j, st in enumerate(raw)]
        next_id += len(statements)
        concepts = [KBConcept(id=100 * chain.id + k, term=c.term, type=c.type, definition=c.definition,
                              statement_ids=[statements[j].id for j in c.statements])
                    for k, c in enumerate(agents.extract_concepts(text, draft, raw))]
        foreign = ["the reeds are cut along the northern shore", "the bundles are stacked inside the smoke hut",
                   "the kiln is sealed with wet clay", "the nets are hung to dry"]
        items = [agents.write_test_item(chain, statements, foreign, v) for v in range(len(RULE_FACETS))]
        source = chain_source(text, chain, statements)
        gate = LeakageGate([GateItem(v, item.question, key_options(item.options, item.answer), source)
                            for v, item in enumerate(items) if item is not None], n=8, threshold=0.4)
        out.append((chain, statements, concepts, items, gate))
    return out


def test_no_dose_sample_trips_the_leakage_gate_of_its_chains_items(invented_kb):
    assert len(invented_kb) >= 30
    checked = 0
    for chain, statements, concepts, items, gate in invented_kb:
        drafts = [x for st in statements for form in ("both", "forward", "contrast", "text")
                  for x in dose_samples(chain, st, len(PATCH_WORDINGS), 0, form)]
        drafts += [x for st in statements for x in chain_dose(chain, statements, [st], 6)]
        drafts += [x for c in concepts for x in concept_dose(chain, c, 4)]
        leaks = [(d.prompt, d.answer, gate.check(sample_text(d))) for d in drafts]
        assert [x for x in leaks if x[2] is not None] == [], chain.process_name
        checked += len(drafts)
        # The gate is live on these items: an order item's copied key option is caught.
        order = items[RULE_FACETS.index("order")]
        assert gate.check(f"Note: {order.options['ABCD'.index(order.answer[0])]}") is not None
    assert checked > 1000
