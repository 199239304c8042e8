"""The `options` scorer: each option's likelihood after the question alone, lm-eval multiple_choice style."""

import json
import math

import pytest

from pwd_agent.evaluation.hf import (
    HFEvaluator,
    encode_options,
    option_probabilities,
    options_prediction,
    split_continuation,
)
from pwd_agent.prompting import letters_of

QUESTION = "Which step follows the dosing of alum?"
# Unequal lengths, so the right padding of the shorter continuations is exercised.
OPTIONS = ["mixing", "the settling of the floc in the basin", "filtering", "boiling water slowly"]
# A layout whose prompt ends in a space, as a `Question:/Answer: ` base-model format would.
SPACE_LAYOUT = "{% for m in messages %}Question: {{ m['content'] }}\nAnswer: {% endfor %}"


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def naive_logliks(evaluator, context_ids: list[int], tails: list[list[int]]) -> list[tuple[float, int]]:
    """The same quantity from one full forward pass per option (context and option in one sequence), no cache."""
    import torch

    out = []
    for tail in tails:
        with torch.no_grad():
            logp = evaluator.model(torch.tensor([context_ids + tail])).logits[0].float().log_softmax(-1)
        out.append((float(sum(logp[len(context_ids) - 1 + j, t] for j, t in enumerate(tail))), len(tail)))
    return out


def test_cached_option_logliks_equal_a_full_pass_per_option(tiny_model):
    from pwd_agent.student import chat_prompt

    evaluator = HFEvaluator(str(tiny_model), None, scorer="options")
    context = chat_prompt(evaluator.tokenizer, QUESTION)
    assert QUESTION in context and "mixing" not in context  # the question alone: no options, no letters
    fast = evaluator.option_logliks(QUESTION, OPTIONS)
    slow = naive_logliks(evaluator, *encode_options(evaluator.tokenizer, context, OPTIONS))
    assert [n for _, n in fast] == [n for _, n in slow]
    assert [ll for ll, _ in fast] == pytest.approx([ll for ll, _ in slow], abs=1e-3)
    assert len({n for _, n in fast}) > 1 and len({round(ll, 4) for ll, _ in fast}) == len(OPTIONS)


def test_trailing_space_of_the_context_goes_onto_the_option(tiny_model):
    evaluator = HFEvaluator(str(tiny_model), None, scorer="options")
    tok = evaluator.tokenizer
    assert split_continuation("Answer: ", "copper") == ("Answer:", " copper")
    assert split_continuation("Answer:\n", "copper") == ("Answer:\n", "copper")  # the layout's newline stays
    assert split_continuation("Answer:", "copper") == ("Answer:", "copper")

    context = "Question: x\nAnswer: "
    options = ["copper", "water"]
    context_ids, tails = encode_options(tok, context, options)
    assert context_ids == encode(tok, "Question: x\nAnswer:")
    for option, tail in zip(options, tails):
        assert tail == encode(tok, " " + option)
        # Why it matters here: the joint encoding does not begin with the context's own encoding
        # (its lone trailing " " token is merged into the option's first token), so no split of it is clean.
        joint = encode(tok, context + option)
        assert joint[: len(encode(tok, context))] != encode(tok, context)
        assert joint == context_ids + tail

    # The same through the evaluator, with a chat layout that ends in that space.
    tok.chat_template = SPACE_LAYOUT
    fast = evaluator.option_logliks("x", ["copper pipe", "water pipe"])
    slow = naive_logliks(evaluator, context_ids, [encode(tok, " copper pipe"), encode(tok, " water pipe")])
    assert [ll for ll, _ in fast] == pytest.approx([ll for ll, _ in slow], abs=1e-3)
    assert fast[0][0] != pytest.approx(fast[1][0], abs=1e-3)  # the first word tells them apart


def test_an_option_without_tokens_is_refused(tiny_model):
    evaluator = HFEvaluator(str(tiny_model), None, scorer="options")
    with pytest.raises(ValueError, match="no tokens"):
        encode_options(evaluator.tokenizer, "Answer:", ["copper", ""])


def softmax(values: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in values)
    return [math.exp(v) / total for v in values]


def test_probabilities_use_the_mean_token_loglik_rescaled_to_the_mean_length():
    # Mean log-probs -1, -3, -1.2, -3; mean length 2.
    probs = option_probabilities([(-2.0, 2), (-9.0, 3), (-1.2, 1), (-6.0, 2)])
    assert probs == pytest.approx(softmax([-2.0, -6.0, -2.4, -6.0]))
    assert sum(probs) == pytest.approx(1.0)
    # A long option is judged per token: ten tokens at -1 beat one token at -2, though its sum is lower.
    long, short = option_probabilities([(-10.0, 10), (-2.0, 1)])
    assert long > short


def test_predicted_set_mass_and_exact_match():
    probs = softmax([-2.0, -6.0, -2.4, -6.0])  # about .59, .01, .39, .01
    multi = options_prediction(probs, "A,C", multi=True)
    assert multi.predicted == "A,C" and multi.passed
    assert multi.mass == pytest.approx(probs[0] + probs[2])
    single = options_prediction(probs, "A,C", multi=False)
    assert single.predicted == "A" and not single.passed and single.mass == pytest.approx(multi.mass)
    assert options_prediction(probs, "A", multi=False).passed
    assert options_prediction(probs, "C", multi=True).mass == pytest.approx(probs[2])
    assert json.loads(multi.raw) == {"A": round(probs[0], 3), "B": round(probs[1], 3),
                                     "C": round(probs[2], 3), "D": round(probs[3], 3)}
    # A tie at the uniform share keeps every option (>= 1/n); the argmax is the first.
    uniform = [0.25] * 4
    assert options_prediction(uniform, "B", multi=True).predicted == "A,B,C,D"
    assert options_prediction(uniform, "B", multi=False).predicted == "A"


def test_score_items_with_the_options_scorer(tiny_model):
    evaluator = HFEvaluator(str(tiny_model), None, scorer="options")
    items = [(QUESTION, OPTIONS, "A"),
             ("Which steps come before filtering?", ["dosing", "mixing", "boiling", "settling"], "B,D"),
             ("What does the floc carry away?", ["clay", "bacteria", "salt", "colour"], "A,B,C")]
    for multi in (True, False):
        preds = evaluator.score_items(items, multi=multi)
        assert len(preds) == 3
        for pred, (question, options, key) in zip(preds, items):
            probs = option_probabilities(evaluator.option_logliks(question, options))
            best = max(range(4), key=probs.__getitem__)
            chosen = [i for i, p in enumerate(probs) if p >= 1 / 4] if multi else [best]
            assert pred.predicted == letters_of(chosen)
            assert pred.passed == (set(pred.predicted.split(",")) == set(key.split(",")))
            in_key = [i for i in range(4) if letters_of([i]) in key.split(",")]
            assert pred.mass == pytest.approx(sum(probs[i] for i in in_key))
            assert 0 <= pred.mass <= 1
            assert list(json.loads(pred.raw).values()) == pytest.approx(probs, abs=1e-3)


def test_pmi_takes_out_what_the_content_free_prompt_already_gives_each_option():
    from pwd_agent.evaluation.hf import pmi_probabilities

    # Option A is the most likely after the question, but only because it is likely anywhere:
    # after the content-free prompt it is as likely again. B is what the question raises.
    conditional = [(-4.0, 4), (-6.0, 5), (-9.0, 3), (-8.0, 4)]
    neutral = [-3.5, -9.0, -9.5, -8.0]
    probs = pmi_probabilities(conditional, neutral)
    assert probs == pytest.approx(softmax([-0.5, 3.0, 0.5, 0.0]))
    assert max(range(4), key=probs.__getitem__) == 1
    assert max(range(4), key=option_probabilities(conditional).__getitem__) == 0  # the options scorer picks A


def test_score_items_with_the_pmi_scorer(tiny_model):
    items = [(QUESTION, OPTIONS, "B"),
             ("Which step comes before filtering?", ["mixing", "filtering", "boiling water slowly", "copper"], "A")]
    options = HFEvaluator(str(tiny_model), None, scorer="options")
    pmi = HFEvaluator(str(tiny_model), None, scorer="pmi", pmi_prompt="Answer:")
    preds = pmi.score_items(items, multi=False)
    for pred, (question, opts, key) in zip(preds, items):
        cond = options.option_logliks(question, opts)
        base = [ll for ll, _ in options.option_logliks("Answer:", opts)]  # each option after the prompt alone
        probs = softmax([c - b for (c, _), b in zip(cond, base)])
        assert list(json.loads(pred.raw).values()) == pytest.approx(probs, abs=1e-3)
        assert pred.predicted == letters_of([max(range(4), key=probs.__getitem__)])
        assert pred.mass == pytest.approx(probs["ABCD".index(key)], abs=1e-4)
    # Options shared by two items are scored once after the prompt, and give the same value both times.
    assert sorted(pmi._neutral) == sorted(set(OPTIONS) | set(items[1][1]))
    # A different prompt is a different calibration.
    other = HFEvaluator(str(tiny_model), None, scorer="pmi", pmi_prompt="Say something.").score_items(items, False)
    assert [p.raw for p in other] != [p.raw for p in preds]


def test_shared_opening_is_cut_at_a_word_boundary():
    from pwd_agent.evaluation.hf import shared_opening

    anchored = ["Right after the vat is sealed, the seed rests.", "Right after the vat is sealed, the seed dries.",
                "Right after the vat is sealed, a worker cuts bars.", "Right after the vat is sealed, the vat cools."]
    opening, tails = shared_opening(anchored)
    assert opening == "Right after the vat is sealed,"  # "the" is not shared by the third option
    assert tails[2] == " a worker cuts bars." and [opening + t for t in tails] == anchored
    opening, tails = shared_opening(["the seed rests", "the seeds dry", "the seedling", "the seed"])
    assert (opening, tails[0]) == ("the", " seed rests")  # "seed" is a word of one option, a prefix of another
    # An option that is all of the common prefix still keeps a tail: the cut falls inside it.
    assert shared_opening(["dry it", "dry it now"]) == ("dry", [" it", " it now"])
    # No whole word shared: the options as they are.
    assert shared_opening(["mixing", "filtering"]) == ("", ["mixing", "filtering"])
    assert shared_opening(["dry", "dry it"]) == ("", ["dry", "dry it"])


def test_score_items_with_the_tail_pmi_scorer(tiny_model):
    from pwd_agent.evaluation.hf import pmi_probabilities

    opening = "Right after dosing alum,"
    anchored = [f"{opening} {o}." for o in OPTIONS]
    evaluator = HFEvaluator(str(tiny_model), None, scorer="tail_pmi", pmi_prompt="Answer:")
    [pred] = evaluator.score_items([(QUESTION, anchored, "B")], multi=False)
    tails = [f" {o}." for o in OPTIONS]
    # Each tail after the question and the shared opening, less the tail after the prompt alone.
    cond = evaluator.option_logliks(QUESTION, tails, opening)
    base = [ll for ll, _ in evaluator.option_logliks("Answer:", tails)]
    probs = pmi_probabilities(cond, base)
    assert list(json.loads(pred.raw).values()) == pytest.approx(probs, abs=1e-3)
    assert pred.mass == pytest.approx(probs[1], abs=1e-4)
    # The opening is context: scoring the tails after it differs from scoring whole options.
    whole = HFEvaluator(str(tiny_model), None, scorer="pmi").score_items([(QUESTION, anchored, "B")], multi=False)
    assert whole[0].raw != pred.raw
    # Options with no shared opening are scored exactly as the pmi scorer scores them.
    plain = [(QUESTION, OPTIONS, "B")]
    assert (evaluator.score_items(plain, multi=False)[0].raw
            == HFEvaluator(str(tiny_model), None, scorer="pmi").score_items(plain, multi=False)[0].raw)
