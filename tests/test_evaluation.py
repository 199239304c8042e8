"""The hf evaluator: batching with left padding gives the same greedy answers as one at a time."""

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
