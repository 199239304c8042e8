"""Where a run's repair gain comes from: its items grouped by what their key statement was given.

    python bench/repair_groups.py RUN [--runs-dir runs] [--round N]

A repair round's holdout gain is a sum of two things that pull apart: items whose fact the patches
dosed (the aim) and items whose fact the student already had (what a dose can cost). For the repair
round N (default: the last) against the round before, each test item is put in one group by its
key's statement (single-key items; others are left out): `taught` (V1 trained on it), `dosed`
(not taught by V1, among the statements the Debugger's diagnoses of round N-1 named), `taught,
dosed` (both) and `neither`. Per split and group: the items, each round's accuracy, and round N
against N-1 and against round 0 (the base: the `dosed` items were chosen because their dev twin
failed in round N-1, so against N-1 part of their gain is that selection): fixed, broken,
one-sided exact McNemar p. Then, for the taught-key items the repair
broke, how many chose an option that names the object of a dosed statement as its step ("Right
after X, W." with W such an object), beside how many of those items' wrong options do: a pull toward
what the patches repeated shows as the first count above `expected` (the sum over those items of
their dosed share of wrong options), with the one-sided Poisson-binomial p. One JSON object; the README
and docs/results.md quote it. Read-only: nothing is written to the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GROUPS = ("taught", "dosed", "taught,dosed", "neither")


def group_of(statement: int, taught: set[int], dosed: set[int]) -> str:
    if statement in taught:
        return "taught,dosed" if statement in dosed else "taught"
    return "dosed" if statement in dosed else "neither"


def key_statement(item) -> int | None:
    """The statement of the item's one key option, or None (several keys, or no statement)."""
    keys = [st for st, kind in zip(item.option_statements or [], item.option_kinds or []) if kind == "key"]
    return keys[0] if len(keys) == 1 and keys[0] is not None else None


def names_dosed(option: str, objects: set[str]) -> bool:
    """Whether the option names a dosed statement's object as its step ("Right after X, W." with W
    such an object): its text ends with ", " and that object."""
    text = option.strip().rstrip(".").casefold()
    return any(text.endswith(", " + obj) for obj in objects)


def at_least(k: int, shares: list[float]) -> float:
    """P(at least k successes) when trial j succeeds with probability shares[j] (Poisson binomial):
    the one-sided p of k broken items choosing a dosed step, if each chose among its wrong options
    at random."""
    dist = [1.0]
    for q in shares:
        dist = [a * (1 - q) + b * q for a, b in zip(dist + [0.0], [0.0] + dist)]
    return sum(dist[k:])


def groups_report(session, repair_round: int) -> dict:
    """The report for `repair_round` against the round before, read from a run's store."""
    from sqlmodel import select

    from pwd_agent.exposures import round_ledger
    from pwd_agent.stats import compare
    from pwd_agent.store import Diagnosis, ItemResult, Round, Statement, TestItem

    before = repair_round - 1
    taught = {node_id for (kind, node_id), kinds in round_ledger(session, 1).items()
              if kind == "statement" and sum(v for k, v in kinds.items() if k != "concept") > 0}
    dosed = {sid for d in session.exec(select(Diagnosis).where(Diagnosis.round_id == before)).all()
             for sid in (d.statement_ids or [])}
    objects = {st.object.strip().rstrip(".").casefold() for st in session.exec(select(Statement)).all()
               if st.id in dosed}
    rounds = [r.id for r in session.exec(select(Round).order_by(Round.id)).all() if r.status == "evaluated"]
    results = defaultdict(dict)
    for row in session.exec(select(ItemResult)).all():
        results[row.round_id][row.item_id] = row
    report = {"repair_round": repair_round, "against": before, "taught": len(taught), "dosed": len(dosed),
              "splits": {}}
    pulled = {"broken": 0, "chose_dosed_step": 0, "wrong_options": 0, "wrong_options_dosed": 0}
    shares = []  # per broken item: the chance a wrong option drawn at random names a dosed step
    for split in ("dev", "holdout"):
        items = [i for i in session.exec(select(TestItem).where(TestItem.split == split)).all()
                 if key_statement(i) is not None and i.id in results[repair_round] and i.id in results[before]]
        table = {}
        for name in GROUPS:
            mine = [i for i in items if group_of(key_statement(i), taught, dosed) == name]
            if not mine:
                continue
            flips = compare({i.id: results[before][i.id].passed for i in mine},
                            {i.id: results[repair_round][i.id].passed for i in mine})
            table[name] = {"items": len(mine),
                           "accuracy": {r: round(sum(results[r][i.id].passed for i in mine) / len(mine), 3)
                                        for r in rounds if all(i.id in results[r] for i in mine)},
                           "fixed": flips.fixed, "broken": flips.broken, "p": round(flips.p_value, 4)}
            if all(i.id in results[0] for i in mine):  # against the base: no selection by round N-1's failures
                base = compare({i.id: results[0][i.id].passed for i in mine},
                               {i.id: results[repair_round][i.id].passed for i in mine})
                table[name]["vs_round0"] = {"fixed": base.fixed, "broken": base.broken, "p": round(base.p_value, 4)}
        report["splits"][split] = table
        for item in items:
            if key_statement(item) not in taught:
                continue
            wrong = [o for o, kind in zip(item.options, item.option_kinds) if kind != "key"]
            if results[before][item.id].passed and not results[repair_round][item.id].passed:
                chosen = item.options["ABCD".index(results[repair_round][item.id].predicted[:1])]
                dosed_wrong = sum(names_dosed(o, objects) for o in wrong)
                pulled["broken"] += 1
                pulled["chose_dosed_step"] += names_dosed(chosen, objects)
                pulled["wrong_options"] += len(wrong)
                pulled["wrong_options_dosed"] += dosed_wrong
                shares.append(dosed_wrong / len(wrong))
    pulled["expected"] = round(sum(shares), 2)
    pulled["p"] = round(at_least(pulled["chose_dosed_step"], shares), 4)
    report["taught_key_broken"] = pulled
    return report


def main(argv: list[str] | None = None) -> int:
    from sqlmodel import select

    from pwd_agent.runs import open_run
    from pwd_agent.store import Round, session_scope

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--round", type=int, default=None, help="the repair round (default: the last evaluated)")
    args = parser.parse_args(argv)
    ctx = open_run(args.run, args.runs_dir)
    with session_scope(ctx.db_url) as session:
        evaluated = [r.id for r in session.exec(select(Round).order_by(Round.id)).all() if r.status == "evaluated"]
        repair = args.round if args.round is not None else evaluated[-1]
        if repair < 2 or repair not in evaluated or repair - 1 not in evaluated:
            print(f"error: round {repair} is not a repair round with an evaluated round before it "
                  f"(evaluated: {evaluated}); pass --round N with N >= 2", file=sys.stderr)
            return 2
        print(json.dumps({"run": ctx.run_id, **groups_report(session, repair)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
