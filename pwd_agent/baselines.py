"""Baselines beside every score: what chance and the best constant answer score on the same items.

An exact-set score means little alone: with 1 to 4 keys among 4 options there are 15 possible
answers, and if one key set is common, a student that always gives it scores that set's share
without reading a question. So every split's score is shown beside
- `chance`: a uniformly random answer among the valid ones (non-empty option sets, 1/15 on
  4 options; with tests.keys=one, single options, 1/4), the expected exact-set score of a
  student that knows nothing;
- `best constant`: always giving the split's commonest key set (read off the keys, so no
  student that answers every item the same way can beat it);
- `mass chance`: for the options scorer's continuous score (probability mass on the keys), a
  uniform spread over the options, n_keys / n_options on average.
Round 0 (the base model before any training) is the third baseline, in the rounds table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Baselines:
    n_items: int
    chance: float
    best_constant: float
    constant_answer: str  # the commonest key set, e.g. "A,C"
    mass_chance: float


def baselines(items: list[tuple[int, str]], one_key: bool = False) -> Baselines | None:
    """Baselines of items given as (number of options, key letters 'A,C'); None for no items.
    `one_key` (tests.keys=one): the valid answers are single options, not option sets."""
    if not items:
        return None
    keys = Counter(answer for _, answer in items)
    answer, count = max(sorted(keys.items()), key=lambda kv: kv[1])  # ties: the first set in letter order
    n = len(items)
    return Baselines(
        n_items=n,
        chance=sum(1 / (n_options if one_key else 2**n_options - 1) for n_options, _ in items) / n,
        best_constant=count / n,
        constant_answer=answer,
        mass_chance=sum(len(a.split(",")) / n_options for n_options, a in items) / n,
    )


SPLITS = ("dev", "holdout")


def split_baselines(session, one_key: bool = False) -> dict[str, Baselines | None]:
    """The baselines of each split's test items, read once: {"dev": ..., "holdout": ...}."""
    from sqlmodel import select

    from pwd_agent.store import TestItem

    rows = session.exec(select(TestItem.split, TestItem.options, TestItem.answer)).all()
    return {split: baselines([(len(options), answer) for s, options, answer in rows if s == split], one_key)
            for split in SPLITS}


def goal_warning(goal: float, split: str, floors: dict[str, Baselines | None]) -> str | None:
    """Why a goal says nothing, when it is at or below the best constant answer on its split."""
    b = floors.get(split)
    if b is None or goal > b.best_constant:
        return None
    return (f"the goal {goal:.3f} is at or below the best constant answer on {split} ({b.best_constant:.3f}, "
            f"always \"{b.constant_answer}\"): meeting it says nothing about the student; raise loop.goal")


def beside(score: float | None, b: Baselines | None) -> str:
    """A score with its split's chance and best constant answer, for log lines."""
    if score is None:
        return "-"
    return f"{score:.3f}" + (f" (chance {b.chance:.3f}, constant {b.best_constant:.3f})" if b else "")


def baseline_text(split: str, b: Baselines | None) -> str:
    """One line per split for `status` and the log."""
    if b is None:
        return f"{split}: no items"
    return (f"{split}: {b.n_items} items, chance {b.chance:.3f}, best constant {b.best_constant:.3f} "
            f"(always \"{b.constant_answer}\"), mass chance {b.mass_chance:.3f}")
