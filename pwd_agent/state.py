"""RunState: the small facts the graph carries between nodes (ids, counts, scores); data lives in the store."""

from __future__ import annotations

from typing import TypedDict


class RoundScore(TypedDict):
    round: int
    dev: float
    holdout: float
    gain_p: float | None  # dev, against the previous round (exact McNemar); None for round 0
    general: float | None  # the general-ability guard; None when eval.general is none


class RunState(TypedDict, total=False):
    run_id: str
    round: int  # the round being trained / evaluated; 0 is the base model
    counts: dict[str, int]  # KB and benchmark sizes
    scores: list[RoundScore]
    stop_reason: str | None
    goal_met: bool
