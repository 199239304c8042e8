"""The evaluator of a round: the student (plus the round's adapter) under the eval config's backend."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from pwd_agent.student import resolve_student


@contextmanager
def loaded_evaluator(ctx, adapter: str | None) -> Iterator:
    """The round's model under `ctx.config`'s eval settings (eval.backend); closed on exit, so its
    memory goes back before the next trainer starts, whoever still holds the evaluator object."""
    cfg = ctx.config.eval
    path = resolve_student(ctx.config.student)
    if cfg.backend == "vllm":
        from pwd_agent.evaluation.vllm_backend import VLLMEvaluator

        evaluator = VLLMEvaluator(path, adapter, ctx.config)
    else:
        from pwd_agent.evaluation.hf import HFEvaluator

        evaluator = HFEvaluator(path, adapter, cfg.batch_size, cfg.max_new_tokens, cfg.scorer,
                                ctx.config.student.chat_template, ctx.config.student.dtype, cfg.pmi_prompt)
    try:
        yield evaluator
    finally:
        evaluator.close()


def score_test_items(evaluator, config, items: list) -> list:
    """Predictions for benchmark items (TestItem rows) under the run's answer space: with
    tests.keys=one each item has one key, judged by the argmax, not by a selected option set."""
    return evaluator.score_items([(i.question, i.options, i.answer) for i in items], multi=not config.tests.one_key)
