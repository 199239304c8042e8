"""Which holdout items a repair arm fixed and broke against V1, and whether the broken ones chose a dosed option.

    python bench/arm_breaks.py RUN_ID [--regime base] [--test-share F]

Reads what `bench/repair_arms.py` kept in runs/RUN_ID/repair_arms/ (V1's scores per seed, each arm's
scores and training data) and the run's items. An option is "dosed" when the arm's training data names
its statement more often than V1's does. If the patches pulled the student toward what they repeat (a
frequency bias), broken items would choose dosed options more often than the share of dosed options
among their distractors predicts ("expected"). `chose` counts the kind of option each failed holdout
item chose (V1's as the arm "none"): a dose that teaches a pair both ways would show as more
`wrong_order` choices (the reversed pair) than V1 made. `by_key` splits the holdout items whose key V1
left untaught (the run's exposure ledger, as repair_arms reads it) by whether the arm dosed that key:
V1's and the arm's accuracy on each group, items up and down. Aimed arms dose the keys of items whose
dev twin V1 failed, random ones land anywhere, so the split shows whether an arm's gain comes from the
items it dosed or from the rest, and what the dose cost the items it left alone."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LETTERS = "ABCD"


def statement_counts(path: Path) -> Counter:
    """How often each statement id is named by the samples of a training file."""
    counts: Counter = Counter()
    with path.open() as f:
        for line in f:
            counts.update(json.loads(line).get("statements") or [])
    return counts


def arm_breaks(items: dict, v1: dict, arm: dict, dosed: set) -> dict:
    """Fixed and broken holdout items of one arm and seed against V1, and the dosed options among them."""
    out = {"fixed": 0, "fixed_key_dosed": 0, "broken": 0, "broken_chose_dosed": 0, "broken_expected": 0.0}
    named = False  # whether any broken item's distractors name statements
    for iid, (passed, _mass, choice) in arm.items():
        item = items[int(iid)]
        if item.split != "holdout" or passed == v1[iid][0]:
            continue
        if passed:
            key = item.option_kinds.index("key")
            out["fixed"] += 1
            out["fixed_key_dosed"] += item.option_statements[key] in dosed
            continue
        out["broken"] += 1
        if choice in LETTERS:
            out["broken_chose_dosed"] += item.option_statements[LETTERS.index(choice)] in dosed
        distractors = [j for j, kind in enumerate(item.option_kinds) if kind != "key"]
        out["broken_expected"] += sum(item.option_statements[j] in dosed for j in distractors) / len(distractors)
        named = named or any(item.option_statements[j] is not None for j in distractors)
    if out["broken"] and not named:
        # same-anchor distractors name no statement: "chose a dosed option" cannot be read, not 0
        out["broken_chose_dosed"] = out["broken_expected"] = None
    return out


def by_key(items: dict, v1: dict, arm: dict, dosed: set, taught: set) -> dict:
    """Untaught-key holdout items (a key statement not in `taught`), split by whether the arm dosed the
    key (repair_groups' groups "dosed" and "neither"): their count, V1's and the arm's accuracy, and
    items up and down against V1."""
    from repair_groups import group_of, key_statement

    groups = {"key_dosed": [], "key_not_dosed": []}
    names = {"dosed": "key_dosed", "neither": "key_not_dosed"}
    for iid, (passed, _mass, _choice) in arm.items():
        item = items[int(iid)]
        key = key_statement(item)
        if item.split != "holdout" or key is None:
            continue
        if (group := names.get(group_of(key, taught, dosed))) is not None:
            groups[group].append((v1[iid][0], passed))
    def summary(pairs: list) -> dict:
        n = len(pairs)
        return {"items": n, "v1": round(sum(a for a, _ in pairs) / n, 3) if n else None,
                "arm": round(sum(b for _, b in pairs) / n, 3) if n else None,
                "up": sum(b and not a for a, b in pairs), "down": sum(a and not b for a, b in pairs)}
    return {name: summary(pairs) for name, pairs in groups.items()}


def chosen_kinds(items: dict, scores: dict) -> dict:
    """The kinds of the options the failed holdout items chose (wrong_order, skipped_step, ...)."""
    out: Counter = Counter()
    for iid, (passed, _mass, choice) in scores.items():
        item = items[int(iid)]
        if item.split == "holdout" and not passed and choice in LETTERS:
            out[item.option_kinds[LETTERS.index(choice)]] += 1
    return dict(sorted(out.items()))


def main() -> None:
    from sqlmodel import select

    from pwd_agent.runs import open_run
    from pwd_agent.store import TestItem, session_scope

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--regime", default="base", help="The arms' folder under repair_arms/: base, "
                        "previous-pf0.7, and with a writer form other than both its suffix (previous-pf0.7-text).")
    parser.add_argument("--test-share", type=float, default=1.0, help="The bench's --test-share, when it was not 1.")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from repair_arms import arms_root, load_setup
    ctx = open_run(args.run_id)
    taught = load_setup(ctx, args.test_share).taught
    with session_scope(ctx.db_url) as s:
        items = {i.id: i for i in s.exec(select(TestItem)).all()}
    arms_dir = arms_root(ctx.run_dir, args.test_share)
    for v1_dir in sorted(d for d in arms_dir.glob("v1-*") if (d / "scores.json").is_file()):
        v1 = json.loads((v1_dir / "scores.json").read_text())["items"]
        print(json.dumps({"arm": "none", "seed": int(v1_dir.name.split("-")[1]), "chose": chosen_kinds(items, v1)}))
    v1_counts = statement_counts(Path(ctx.run_dir, "rounds", "01", "train.jsonl"))
    for folder in sorted((arms_dir / args.regime).iterdir()):
        if not (folder / "scores.json").is_file():
            continue
        arm, seed = folder.name.rsplit("-", 1)
        v1 = json.loads((arms_dir / f"v1-{seed}" / "scores.json").read_text())["items"]
        counts = statement_counts(folder / "train.jsonl")
        dosed = {st for st, n in counts.items() if n > v1_counts.get(st, 0)}
        scores = json.loads((folder / "scores.json").read_text())["items"]
        row = arm_breaks(items, v1, scores, dosed)
        expected = row["broken_expected"]
        print(json.dumps({"arm": arm, "seed": int(seed), **row,
                          "broken_expected": None if expected is None else round(expected, 2),
                          "chose": chosen_kinds(items, scores),
                          "by_key": by_key(items, v1, scores, dosed, taught)}))


if __name__ == "__main__":
    main()
