"""evaluate: run the unit tests (every item, both splits) on the round's model; every prediction stored."""

from __future__ import annotations

import json

from langgraph.runtime import Runtime
from sqlmodel import select

from pwd_agent.baselines import beside, split_baselines
from pwd_agent.events import emit
from pwd_agent.context import RunContext
from pwd_agent.state import RunState
from pwd_agent.evaluation.general import lm_eval_tasks, load_general, score_lm_eval
from pwd_agent.store import GeneralResult, ItemResult, LLMCall, Round, TestItem, session_scope
from pwd_agent.stats import compare
from pwd_agent.store.models import utcnow
from pwd_agent.store.queries import round_accuracy, round_mass, round_passes, round_scorer
from pwd_agent.evaluation.loader import loaded_evaluator, score_test_items
from pwd_agent.student import resolve_student
from pwd_agent.prompting import choice_prompt_version


def evaluate(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Score every test item and general-guard question with the round's model, resumable in slices."""
    ctx = runtime.context
    round_id = state.get("round", 0)
    with session_scope(ctx.db_url) as session:
        row = session.get(Round, round_id)
        scored = set(session.exec(select(ItemResult.item_id).where(ItemResult.round_id == round_id)).all())
        todo = [i for i in session.exec(select(TestItem).order_by(TestItem.id)).all() if i.id not in scored]
        done_general = set(session.exec(select(GeneralResult.item_key).where(GeneralResult.round_id == round_id)).all())
        adapter = row.adapter_path
    general = [g for g in load_general(ctx.config.eval.general) if g.key not in done_general]
    if row.status != "evaluated" and (todo or general):
        emit(ctx.db_url, "evaluate", f"round {round_id}: scoring {len(todo)} items ({len(scored)} already scored)"
             + (f" and {len(general)} general items" if general else ""))
        score_and_store(ctx, round_id, adapter, todo, general)
    if row.status != "evaluated" and lm_eval_tasks(ctx.config.eval.general) and not done_general:
        score_general_with_lm_eval(ctx, round_id, adapter)
    with session_scope(ctx.db_url) as session:
        row = session.get(Round, round_id)
        row.scorer = round_scorer(session, round_id)
        row.dev_acc = round_accuracy(session, round_id, "dev")
        row.holdout_acc = round_accuracy(session, round_id, "holdout")
        row.dev_mass = round_mass(session, round_id, "dev")
        row.holdout_mass = round_mass(session, round_id, "holdout")
        passes = session.exec(select(GeneralResult.passed).where(GeneralResult.round_id == round_id)).all()
        row.general_acc = sum(passes) / len(passes) if passes else None
        general_acc = row.general_acc
        row.prompt_versions = dict(session.exec(select(LLMCall.prompt_name, LLMCall.prompt_version).distinct()).all())
        flips = None
        if round_id > 0:
            flips = compare(round_passes(session, round_id - 1, "dev"), round_passes(session, round_id, "dev"))
            row.fixed, row.broken, row.still_failing, row.gain_p = (flips.fixed, flips.broken, flips.still_failing,
                                                                    flips.p_value)
        row.status, row.finished_at = "evaluated", utcnow()
        dev, holdout = row.dev_acc or 0.0, row.holdout_acc or 0.0
        floors = split_baselines(session, ctx.config.tests.one_key)
    scorer = f"{row.scorer} scorer" if row.scorer else "no items"
    vs = (f"; dev vs round {round_id - 1}: {flips.fixed} fixed, {flips.broken} broken, p={flips.p_value:.3f}"
          if flips else "")
    general_text = f"  general {general_acc:.3f}" if general_acc is not None else ""
    emit(ctx.db_url, "evaluate", f"round {round_id} ({scorer}): dev {beside(row.dev_acc, floors['dev'])}  "
         f"holdout {beside(row.holdout_acc, floors['holdout'])}{general_text}{vs}",
         round=round_id, dev=dev, holdout=holdout, general=general_acc, scorer=row.scorer)
    scores = [s for s in state.get("scores", []) if s["round"] != round_id]
    gain_p = flips.p_value if flips else None
    return {"scores": scores + [{"round": round_id, "dev": dev, "holdout": holdout, "gain_p": gain_p,
                                 "general": general_acc}]}


def score_and_store(ctx: RunContext, round_id: int, adapter: str | None, items: list[TestItem],
                    general: list | None = None) -> None:
    """Score in slices, committing each, so a killed evaluation resumes where it stopped; then the
    general-ability guard with the same model."""
    cfg = ctx.config.eval
    version = choice_prompt_version()
    slice_size = cfg.batch_size * 4
    with loaded_evaluator(ctx, adapter) as evaluator, open(ctx.round_dir(round_id) / "eval.jsonl", "a") as out:
        for start in range(0, len(items), slice_size):
            part = items[start : start + slice_size]
            preds = score_test_items(evaluator, ctx.config, part)
            with session_scope(ctx.db_url) as session:
                for item, pred in zip(part, preds):
                    session.add(ItemResult(round_id=round_id, item_id=item.id, raw=pred.raw,
                                           predicted=pred.predicted, passed=pred.passed, prompt_version=version,
                                           scorer=cfg.scorer, mass=pred.mass))
            for item, pred in zip(part, preds):
                out.write(json.dumps({"item_id": item.id, "split": item.split, "answer": item.answer,
                                      "scorer": cfg.scorer, "predicted": pred.predicted, "passed": pred.passed,
                                      "mass": pred.mass, "raw": pred.raw}) + "\n")
            done = min(start + slice_size, len(items))
            emit(ctx.db_url, "evaluate", f"round {round_id}: {done}/{len(items)} items", done=done, total=len(items))
        if general:  # single-answer questions
            preds = evaluator.score_items([(g.question, g.options, g.answer) for g in general], multi=False)
            with session_scope(ctx.db_url) as session:
                session.add_all(GeneralResult(round_id=round_id, item_key=g.key, raw=p.raw, predicted=p.predicted,
                                              passed=p.passed, scorer=cfg.scorer) for g, p in zip(general, preds))


def score_general_with_lm_eval(ctx: RunContext, round_id: int, adapter: str | None) -> None:
    """The guard as lm-eval tasks: one simple_evaluate call, its samples stored in one transaction
    (a kill before the commit re-runs the call on resume; after it, nothing is redone)."""
    cfg = ctx.config.eval
    emit(ctx.db_url, "evaluate",
         f"round {round_id}: general guard by lm-eval ({', '.join(lm_eval_tasks(cfg.general))})")
    rows = score_lm_eval(cfg.general, cfg.lm_eval_include_path, resolve_student(ctx.config.student), adapter,
                         cfg.batch_size, cfg.general_limit, ctx.config.student.dtype)
    with session_scope(ctx.db_url) as session:
        session.add_all(GeneralResult(round_id=round_id, item_key=key, raw=raw, predicted="", passed=passed,
                                      scorer="lm_eval") for key, raw, passed in rows)


