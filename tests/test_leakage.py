"""The leakage gate drops samples that reproduce an item's question or any one key option, and keeps
samples that teach the same facts in their own words."""

from pwd_agent.agents.schemas import SampleDraft
from pwd_agent.leakage import GateItem, LeakageGate, gate_samples, key_options
from pwd_agent.llm.offline import order_claim, taught_claim

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
