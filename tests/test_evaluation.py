"""The hf evaluator: batching with left padding gives the same greedy answers as one at a time."""

import json

import pytest

from pwd_agent.evaluation.hf import HFEvaluator


def test_batched_equals_unbatched_and_scores_exact_sets(tiny_model):
    items = [(f"Question {i}: which step follows the dosing of alum{'?' * i}", ["a", "b", "c", "d"], "A,C")
             for i in range(5)]
    batched = HFEvaluator(str(tiny_model), None, batch_size=4, max_new_tokens=6).score_items(items)
    single = HFEvaluator(str(tiny_model), None, batch_size=1, max_new_tokens=6).score_items(items)
    assert [p.raw for p in batched] == [p.raw for p in single]
    assert len(batched) == 5
    for p in batched:
        assert p.passed == (p.predicted == "A,C")


def naive_loglik(evaluator, user_text: str, answer: str) -> float:
    """The same quantity from one full forward pass per answer, without the shared cache."""
    import torch

    from pwd_agent.student import chat_prompt

    prefix = evaluator.tokenizer(chat_prompt(evaluator.tokenizer, user_text), add_special_tokens=False)["input_ids"]
    tail = evaluator.tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = evaluator.model(torch.tensor([prefix + tail])).logits[0].float().log_softmax(-1)
    picked = sum(logp[len(prefix) - 1 + j, t] for j, t in enumerate(tail))
    goes_on = logp[len(prefix) + len(tail) - 1, evaluator._continuation_ids()].exp().sum()
    return float(picked + torch.log1p(-goes_on))


def test_loglik_scorer_ranks_every_answer_set_like_a_full_pass(tiny_model):
    from pwd_agent.evaluation.hf import answer_sets
    from pwd_agent.prompting import render_choice_prompt

    assert answer_sets(4)[:5] == ["A", "B", "C", "D", "A,B"] and len(answer_sets(4)) == 15
    evaluator = HFEvaluator(str(tiny_model), None, scorer="loglik")
    text = render_choice_prompt("Which steps follow the dosing of alum?",
                                ["mixing", "settling", "filtering", "boiling"])
    fast = evaluator.answer_logliks(text, answer_sets(4))
    slow = [naive_loglik(evaluator, text, a) for a in answer_sets(4)]
    assert fast == pytest.approx(slow, abs=1e-3)
    assert len(set(round(v, 4) for v in fast)) > 1  # the answers are told apart

    [pred] = evaluator.score_items([("Which steps follow the dosing of alum?",
                                     ["mixing", "settling", "filtering", "boiling"], "B")])
    best = answer_sets(4)[max(range(15), key=lambda i: fast[i])]
    assert pred.predicted == best and pred.passed == (best == "B")
    assert list(json.loads(pred.raw))[0] == best
    # One key per item (tests.keys=one): the answer is the best single letter, not the best set.
    [single] = evaluator.score_items([("Which steps follow the dosing of alum?",
                                       ["mixing", "settling", "filtering", "boiling"], "B")], multi=False)
    assert single.predicted == "ABCD"[max(range(4), key=lambda i: fast[i])]


def test_chance_counts_the_answers_the_items_allow():
    from pwd_agent.baselines import baselines

    items = [(4, "A"), (4, "B"), (4, "A"), (4, "C")]
    sets, one = baselines(items), baselines(items, one_key=True)
    assert sets.chance == pytest.approx(1 / 15) and one.chance == pytest.approx(1 / 4)
    assert one.best_constant == sets.best_constant == 0.5 and one.mass_chance == sets.mass_chance == 0.25


def test_unknown_scorer_is_refused(tiny_model):
    with pytest.raises(ValueError, match="letters, loglik, options, pmi, tail_pmi"):
        HFEvaluator(str(tiny_model), None, scorer="bleu")
    # The config accepts exactly the scorers the evaluator knows.
    from typing import get_args

    from pwd_agent.config import EvalConfig
    from pwd_agent.evaluation.hf import SCORERS

    assert get_args(EvalConfig.model_fields["scorer"].annotation) == SCORERS
