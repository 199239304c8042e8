"""The leakage gate drops samples that reproduce an item's question or any one key option, and keeps
samples that teach the same facts in their own words."""

import random
import re

from pwd_agent.schemas import DiagnosisDraft, KBChain, KBStatement, SampleDraft
from pwd_agent.leakage import GateItem, LeakageGate, chain_source, gate_samples, key_options, sample_text
from pwd_agent.llm.offline import OfflineAgents, order_claim, step_phrase, taught_claim
from pwd_agent.prompting import render_choice_prompt
from pwd_agent.recipes import paraphrase_samples, text_passages

# Long steps (12+ words each): a fact stated in another frame shares most of its words with the key.
STEP_1 = "the raw water enters the flash mixer through a wide inlet pipe at the bottom of the tank"
STEP_2 = "a high-speed impeller creates strong velocity gradients that spread the coagulant through the whole flow"
STEP_3 = "the coagulant reaches every particle of the raw water within about thirty seconds of mixing"
SOURCE = f"First, {STEP_1}. Then {STEP_2}. As a result, {STEP_3}."
QUESTION = ("This question is about rapid mixing in drinking water treatment. Each step can only start once "
            "the one before it is complete. Which statements correctly name a step and the step after it?")
OPTIONS = [
    order_claim(STEP_1, STEP_2),
    order_claim(STEP_3, STEP_1),
    order_claim(STEP_2, STEP_3),
    "Right after the sludge is pumped to the thickener, the belts wrap around a series of rollers.",
]
GATE = LeakageGate([GateItem(7, QUESTION, key_options(OPTIONS, "A,C"), SOURCE)], n=8, threshold=0.4)


def test_a_copy_of_one_key_option_is_caught_on_its_own():
    leak = GATE.check(f"What happens in rapid mixing? {OPTIONS[2]}")
    assert leak is not None and (leak.item_id, leak.part) == (7, "option C") and leak.overlap == 1.0
    assert GATE.check(OPTIONS[0].upper()) is not None  # case and punctuation do not hide a copy
    assert GATE.check(f"Is this so? {OPTIONS[1]} No.") is None  # a distractor gives nothing away


def test_a_copy_of_the_question_is_caught():
    leak = GATE.check(f"{QUESTION} Answer: the first and the third.")
    assert leak is not None and leak.part == "question" and leak.overlap > 0.8


def test_the_same_fact_in_its_own_frame_passes_though_it_shares_the_steps_words():
    fact = f"In rapid mixing: {taught_claim(STEP_1, STEP_2)} The source says: \"{SOURCE}\""
    assert GATE.check(fact) is None
    # Without the source's words taken out, the key's n-grams are mostly the steps' own.
    from pwd_agent.leakage import ngrams

    key = ngrams(OPTIONS[0], 8)
    assert len(key & ngrams(fact, 8)) / len(key) >= 0.4


def test_parts_too_short_to_copy_are_not_checked():
    gate = LeakageGate([GateItem(1, "Why?", [("A", "Yes.")], "")], n=8, threshold=0.4)
    assert gate.parts == [] and gate.check("Why? Yes.") is None


def test_gate_samples_splits_and_records_the_dropped():
    drafts = [SampleDraft(kind="contrast", prompt="Which step follows?", answer=OPTIONS[0]),
              SampleDraft(kind="qa", prompt="What does a flash mixer do?", answer="It spreads the coagulant.")]
    kept, leaked = gate_samples(GATE, drafts, "patch", chain_id=3)
    assert kept == drafts[1:]
    [row] = leaked
    assert (row.origin, row.kind, row.item_id, row.chain_id, row.part) == ("patch", "contrast", 7, 3, "option A")
    assert row.overlap == 1.0


# ---- keys that only restate a step (the later and member facets), on items the offline tester writes ----
STEP_4 = "the dosed water leaves the mixer over a broad weir and flows on towards the slow flocculation basins"
CHUNK = ("Rapid mixing is the stage of coagulation where the coagulant is spread through the raw water. "
         f"First, {STEP_1}. Then {STEP_2}. As a result, {STEP_3}. Finally, {STEP_4}.")
FOREIGN = ["the sludge is pumped to the thickener through a long pipe", "the belts wrap around a series of rollers",
           "the filter bed is backwashed with clean water from below"]
AGENTS = OfflineAgents(facets=("later", "member"), one_key=True)  # examples/demo.yaml's items: one key each


def _kb():
    draft = AGENTS.extract_chain(CHUNK, "Rapid mixing", "Drinking water treatment")
    chain = KBChain(id=1, **draft.model_dump())
    statements = [KBStatement(id=j + 1, chain_id=1, **st.model_dump())
                  for j, st in enumerate(AGENTS.extract_statements(CHUNK, draft))]
    return chain, statements


CHAIN, STATEMENTS = _kb()
LATER, MEMBER = (AGENTS.write_test_item(CHAIN, STATEMENTS, FOREIGN, variant) for variant in (0, 1))
[(_, LATER_KEY)] = key_options(LATER.options, LATER.answer)
[(_, MEMBER_KEY)] = key_options(MEMBER.options, MEMBER.answer)
ANCHOR = re.search(r"than the moment when (.+)\?$", LATER.question).group(1)
SOURCE_1 = chain_source(CHUNK, CHAIN, STATEMENTS)
# Both facets' items beside the order item above, as the pipeline builds one gate over every item.
FACETS_GATE = LeakageGate([GateItem(1, LATER.question, key_options(LATER.options, LATER.answer), SOURCE_1),
                           GateItem(2, MEMBER.question, key_options(MEMBER.options, MEMBER.answer), SOURCE_1),
                           GateItem(7, QUESTION, key_options(OPTIONS, "A,C"), SOURCE)], n=8, threshold=0.4)


def ask(question: str) -> str:
    """The question's last sentence: what a copy of the item's frame takes."""
    return re.split(r"(?<=\.) ", question)[-1]


def test_the_offline_items_keys_only_restate_steps():
    steps = [step_phrase(s) for s in CHAIN.steps]
    assert len(steps) == 4 and {LATER_KEY.rstrip(".").lower(), MEMBER_KEY.rstrip(".").lower()} <= set(steps)
    assert ANCHOR in steps and steps.index(LATER_KEY.rstrip(".").lower()) > steps.index(ANCHOR)
    # Without the frame parts these items would give the gate nothing but their whole questions.
    parts = {(item, part) for item, part, _, _ in FACETS_GATE.parts}
    assert {(1, "question frame"), (2, "question frame"), (7, "option A"), (7, "option C")} <= parts
    assert not [part for item, part, _, _ in FACETS_GATE.parts if item == 7 and "frame" in part]  # order: as before


def test_a_copy_of_a_later_items_question_frame_is_caught():
    copied = SampleDraft(kind="choice", prompt=render_choice_prompt(f"In rapid mixing: {ask(LATER.question)}",
                                                                    LATER.options[::-1]), answer="B")
    leak = FACETS_GATE.check(sample_text(copied))
    assert leak is not None and (leak.item_id, leak.part) == (1, "question frame") and leak.overlap == 1.0
    # The anchor and the key paired in the item's own relation, only part of the frame copied.
    pairing = f"Later than the moment when {ANCHOR}, {LATER_KEY.lower()}"
    leak = FACETS_GATE.check(pairing)
    assert leak is not None and (leak.item_id, leak.part) == (1, f"option {LATER.answer} in the question's frame")
    assert leak.overlap >= 0.5
    # The whole question's own n-grams alone (the gate before frames) do not reach the threshold here.
    whole = LeakageGate([GateItem(1, LATER.question, [], SOURCE_1)], n=8, threshold=0.4)
    assert whole.check(pairing) is None
    assert FACETS_GATE.check(f"{LATER_KEY[:-1]} happens later in the process than the moment when {ANCHOR}.")


def test_stating_the_later_key_or_walking_the_process_is_kept():
    kept = [
        f"In rapid mixing, this is one of the steps: {LATER_KEY}",
        f"In rapid mixing, {ANCHOR} well before {LATER_KEY.lower()}",  # the same order, in its own frame
        taught_claim(ANCHOR, LATER_KEY.rstrip(".").lower()),
    ]
    assert [FACETS_GATE.check(text) for text in kept] == [None] * len(kept)
    # Every sample the offline builder and the recipes write about this chain: V1 (QA, choice, true/false,
    # multi-select, text passages walking every step in order, paraphrases) and a chain-break patch (walks).
    rng = random.Random(0)
    drafts = AGENTS.write_samples(CHAIN, STATEMENTS, [], FOREIGN, 3, 0.4, 0.4)
    drafts += text_passages(CHAIN, STATEMENTS, 4) + paraphrase_samples(CHAIN, STATEMENTS, 6)
    drafts += AGENTS.write_patch(DiagnosisDraft(kind="chain_break", statement_ids=[1]), CHAIN, STATEMENTS, [],
                                 FOREIGN, 7, "t")
    drafts.append(AGENTS._walk_sample(CHAIN, STATEMENTS, STATEMENTS, [], FOREIGN, rng, 0))
    assert {d.kind for d in drafts} >= {"qa", "choice", "tf", "text", "walk", "counterfactual"}
    assert [FACETS_GATE.check(sample_text(d)) for d in drafts] == [None] * len(drafts)


def test_a_copy_of_a_member_items_question_frame_is_caught_and_a_step_statement_kept():
    frame = ask(MEMBER.question)
    assert frame.startswith("Which of the following") and frame.endswith("of this process itself?")
    copied = SampleDraft(kind="choice", prompt=render_choice_prompt(f"In rapid mixing: {frame}", MEMBER.options),
                         answer=MEMBER.answer)
    leak = FACETS_GATE.check(sample_text(copied))
    assert leak is not None and (leak.item_id, leak.part) == (2, "question frame")
    # The whole question's own n-grams alone (the gate before frames) do not reach the threshold here.
    whole = LeakageGate([GateItem(2, MEMBER.question, [], SOURCE_1)], n=8, threshold=0.4)
    assert whole.check(sample_text(copied)) is None
    kept = [f"{MEMBER_KEY[:-1]} is a step of rapid mixing.", f"Rapid mixing includes this step: {MEMBER_KEY}",
            f"Which steps belong to rapid mixing? {MEMBER_KEY}"]
    assert [FACETS_GATE.check(text) for text in kept] == [None] * len(kept)


def test_order_keys_are_checked_as_before_in_the_gate_over_every_facet():
    leak = FACETS_GATE.check(f"What happens in rapid mixing? {OPTIONS[2]}")
    assert leak is not None and (leak.item_id, leak.part, leak.overlap) == (7, "option C", 1.0)
    assert FACETS_GATE.check(f"In rapid mixing: {taught_claim(STEP_1, STEP_2)} The source says: \"{SOURCE}\"") is None
