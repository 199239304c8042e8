"""decide: stop (goal met, max rounds, no significant gain for `loop.patience` repair rounds) or route on."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Command

from pwd_agent.events import emit
from pwd_agent.context import RunContext
from pwd_agent.state import RunState


def stop_reason(scores: list[dict], goal: float, goal_split: str, max_rounds: int, min_gain: float,
                alpha: float = 0.05, patience: int = 1) -> str | None:
    """Why the run should stop after the last scored round, or None to go on."""
    last = scores[-1]
    if last[goal_split] >= goal:
        return "goal_met"
    if last["round"] >= max_rounds:
        return "max_rounds"
    repairs = [s for s in scores if s["round"] >= 2]  # round 1 trains on V1; later rounds are repairs
    if len(repairs) >= patience and not any(significant_gain(s, scores, min_gain, alpha) for s in repairs[-patience:]):
        return "no_gain"
    return None


def significant_gain(score: dict, scores: list[dict], min_gain: float, alpha: float) -> bool:
    """A repair round gains when it beats every earlier trained round on dev by more than
    `min_gain`, and its flips against the previous round pass the exact McNemar test."""
    best_before = max(s["dev"] for s in scores if 1 <= s["round"] < score["round"])
    p = score.get("gain_p")
    return score["dev"] - best_before > min_gain and p is not None and p < alpha


def general_drop(scores: list[dict]) -> float | None:
    """How far the last round's general accuracy sits below the base model's (round 0)."""
    base, last = scores[0].get("general"), scores[-1].get("general")
    if base is None or last is None or scores[-1]["round"] == 0:
        return None
    return base - last


def decide(state: RunState, runtime: Runtime[RunContext]) -> Command[Literal["train", "diagnose", "__end__"]]:
    """Stop at the goal, the round budget or after patience rounds without a significant gain; else diagnose."""
    cfg = runtime.context.config.loop
    scores = state["scores"]
    last = scores[-1]
    drop = general_drop(scores)
    if drop is not None and drop > cfg.max_general_drop:
        emit(runtime.context.db_url, "decide", f"general-ability regression after round {last['round']}: "
             f"{drop:.3f} below the base model (loop.max_general_drop {cfg.max_general_drop:.3f})", "warning",
             drop=drop)
    reason = stop_reason(scores, cfg.goal, cfg.goal_split, cfg.max_rounds, cfg.min_gain, cfg.alpha, cfg.patience)
    if reason:
        emit(runtime.context.db_url, "decide", f"stop after round {last['round']}: {reason} "
             f"({cfg.goal_split} {last[cfg.goal_split]:.3f}, goal {cfg.goal:.3f})", reason=reason)
        return Command(goto=END, update={"stop_reason": reason, "goal_met": reason == "goal_met"})
    if last["round"] == 0:
        emit(runtime.context.db_url, "decide", "round 0 scored: training round 1 on the V1 data")
        return Command(goto="train", update={"round": 1})
    emit(runtime.context.db_url, "decide", f"round {last['round']} below goal: diagnosing its dev failures")
    return Command(goto="diagnose")
