"""The leakage gate drops training samples that reproduce a test item, and keeps ones that teach it."""

from pwd_agent.agents.schemas import SampleDraft
from pwd_agent.leakage import LeakageGate, gate_samples, item_text

QUESTION = ("This question is about rapid mixing in drinking water treatment. Each step can only start once "
            "the one before it is complete. Which statements correctly name a step and the step after it?")
OPTIONS = [
    "Right after the raw water enters the flash mixer, a high-speed impeller creates strong velocity gradients.",
    "Right after the coagulant is spread through the whole flow, the raw water enters the flash mixer.",
    "Right after a high-speed impeller creates strong velocity gradients, the coagulant is spread through the whole flow.",
    "Right after the sludge is pumped to the thickener, the belts wrap around a series of rollers.",
]
GATE = LeakageGate([(7, item_text(QUESTION, OPTIONS, "A,C"))], n=8, threshold=0.4)


def test_item_text_is_the_question_and_the_keys_only():
    text = item_text(QUESTION, OPTIONS, "A,C")
    assert OPTIONS[0] in text and OPTIONS[2] in text and OPTIONS[1] not in text


def test_a_sample_that_copies_the_item_is_caught():
    copy = f"{QUESTION} Answer: {OPTIONS[0]} {OPTIONS[2]}"
    leak = GATE.check(copy)
    assert leak is not None and leak.item_id == 7 and leak.overlap > 0.8
    assert GATE.check(QUESTION.upper() + " A") is not None  # case and punctuation do not hide a copy


def test_a_sample_that_teaches_one_step_pair_passes():
    fact = ("In rapid mixing, what happens once the raw water enters the flash mixer? A high-speed impeller "
            "creates strong velocity gradients throughout the water.")
    assert GATE.check(fact) is None
    assert GATE.check("Nothing in common with any item at all, about sludge belts.") is None


def test_gate_samples_splits_and_records_the_dropped():
    drafts = [SampleDraft(kind="qa", prompt=QUESTION, answer="A,C"),
              SampleDraft(kind="qa", prompt="What does a flash mixer do?", answer="It spreads the coagulant.")]
    kept, leaked = gate_samples(GATE, drafts, "patch", chain_id=3)
    assert kept == drafts[1:]
    [row] = leaked
    assert (row.origin, row.kind, row.item_id, row.chain_id) == ("patch", "qa", 7, 3) and row.overlap >= 0.4
