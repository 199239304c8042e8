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
                                ctx.config.student.chat_template, ctx.config.student.dtype)
    try:
        yield evaluator
    finally:
        evaluator.close()
