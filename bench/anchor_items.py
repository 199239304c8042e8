"""The order items again, every option opening on the key's own first step: does the student know which step follows?

    python bench/anchor_items.py RUN_ID ARM_FOLDER [ARM_FOLDER ...] [--test-share F] [--split holdout]

A benchmark order item offers four claims "Right after X, Y." with a different X in each, scored by
each option's likelihood (eval.scorer: options). That likelihood is also how readily the student
names step X at all: a dose that teaches X -> Y raises the prior of every claim that opens on X, so
dosing the steps a distractor opens on can break an item whose fact the student still knows
(`bench/option_parts.py` splits the two parts). This bench rebuilds each item of the split about
the same key statement X -> Y with one anchor: the key "Right after X, Y." and three distractors
"Right after X, W." for other steps W of the same process (the step after Y, the step before X,
then the nearest others), the item's own question, the run's scorer. Every option shares the part
"Right after X," so only the step named next can decide the item: the fact the item tests, in a
frame no training sample uses (the leakage gate keeps it out). It is the statement probe's test in
the benchmark's frame.

Three scorers read the same log-likelihoods: "mean", the run's options scorer (the mean token
log-probability of the whole option: what the benchmark counts); "sum", log P(W | "Right after X,")
(the shared part is the same for every option, so this is the step named next alone); "pmi", that
less log P(W | "Right after that,"), so a step the student names readily after anything (a step the
dose made familiar) gains nothing: only how much X raises W counts (domain-conditional PMI).

Each ARM_FOLDER is a folder the repair bench trained under runs/RUN_ID/repair_arms/... ("v1-0" is V1
for seed 0, "previous-pf0.7-text/oracle-1" an arm); its outcomes are kept in anchor_scores-SPLIT.json
beside the adapter. Reported per scorer: each arm's accuracy on all, untaught-key and taught-key items, and for
every pair of arms a one-sided sign test on the items' outcomes averaged over the seeds both arms
have (an arm is a folder name without its "-SEED"), as `bench/pool_arms.py` does for the items
themselves. Chance is 0.25 (four options, one key)."""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def anchor_options(steps: list[str], position: int) -> list[str] | None:
    """The key "Right after X, Y." (X = steps[position], Y the next step) first, then three
    distractors opening on X: the step after Y and the step before X, then the steps nearest Y.
    None when the process has fewer than five steps (no three other steps to offer)."""
    from pwd_agent.llm.offline import order_claim

    if len(steps) < 5 or not 0 <= position < len(steps) - 1:
        return None
    nxt = position + 1
    others = sorted((k for k in range(len(steps)) if k not in (position, nxt)),
                    key=lambda k: (k not in (position - 1, nxt + 1), abs(k - nxt), k))
    return [order_claim(steps[position], steps[nxt])] + [order_claim(steps[position], steps[k]) for k in others[:3]]


def anchor_items(setup, items) -> list[dict]:
    """One anchored item per order item with a single key statement: its id, question, options (key
    first: the scorer reads text, not letters) and whether V1 left the key untaught."""
    from pwd_agent.phrasing import step_phrase
    from repair_arms import key_statements

    out = []
    for item in items:
        keys = key_statements(item)
        if len(keys) != 1 or keys[0] not in setup.statements:
            continue
        st = setup.statements[keys[0]]
        steps = [step_phrase(s) for s in setup.chains[st.chain_id].steps]
        options = anchor_options(steps, st.position)
        if options is None or options[0] not in item.options:  # not an order claim about this statement
            continue
        out.append({"id": str(item.id), "question": item.question, "options": options,
                    "neutral": neutral_options(options, steps[st.position]), "untaught": keys[0] not in setup.taught})
    return out


NEUTRAL = "Right after that,"  # the anchor's place with no step named: the PMI scorer's baseline
SCORERS = ("mean", "sum", "pmi")


def neutral_options(options: list[str], first: str) -> list[str]:
    """Each anchored option with its first step `first` replaced: "Right after X, W." -> "Right after
    that, W." (cut at the known step: a step may hold ", " itself)."""
    head = f"Right after {first}, "
    return [f"{NEUTRAL} {o[len(head):]}" for o in options]


def choices(logliks: list[tuple[float, int]], neutral: list[tuple[float, int]]) -> dict[str, bool]:
    """Whether the key (option 0) ranks first by each scorer: "mean", the options scorer's mean token
    log-probability of the whole option (what the benchmark counts); "sum", log P(W | "Right after X,"),
    the option's total (its shared part is the same for all); "pmi", that total less the same step's
    log-probability after NEUTRAL, so a step the student names readily anywhere gains nothing."""
    from pwd_agent.evaluation.hf import option_probabilities

    z = {"mean": option_probabilities(logliks), "sum": [ll for ll, _ in logliks],
         "pmi": [ll - base for (ll, _), (base, _) in zip(logliks, neutral)]}
    return {name: max(range(len(v)), key=v.__getitem__) == 0 for name, v in z.items()}


def score(evaluator, anchored: list[dict]) -> dict[str, dict[str, bool]]:
    """scorer -> item id -> the key ranks first."""
    out: dict[str, dict[str, bool]] = {name: {} for name in SCORERS}
    for item in anchored:
        got = choices(evaluator.option_logliks(item["question"], item["options"]),
                      evaluator.option_logliks(item["question"], item["neutral"]))
        for name, ok in got.items():
            out[name][item["id"]] = ok
    return out


def arm_of(folder: str) -> tuple[str, int]:
    """("previous-pf0.7-text/oracle", 1) from "previous-pf0.7-text/oracle-1"; V1's folder "v1-0" is the arm "none"."""
    m = re.fullmatch(r"(.+)-(\d+)", folder)
    if not m:
        sys.exit(f"{folder}: name an arm folder ending in its seed, e.g. v1-0 or previous-pf0.7-text/oracle-1")
    name = "none" if m.group(1) == "v1" else m.group(1).rsplit("/", 1)[-1]
    return name, int(m.group(2))


def as_world(by_arm: dict[str, dict[int, dict[str, bool]]], anchored: list[dict]) -> dict:
    """The outcomes in bench/pool_arms.py's shape, so its accuracies and paired tests read them."""
    return {"holdout": [(i["id"], i["untaught"]) for i in anchored],
            "scores": {arm: {seed: {k: [ok] for k, ok in got.items()} for seed, got in runs.items()}
                       for arm, runs in by_arm.items()}}


def sign_tests(by_arm: dict[str, dict[int, dict[str, bool]]], anchored: list[dict]) -> list[dict]:
    """For each pair of arms, items up / down (outcomes averaged over the seeds both have), one-sided
    p: pool_arms' item_diffs and sign on the anchored outcomes."""
    from pool_arms import item_diffs, sign

    world, tests = as_world(by_arm, anchored), []
    for a, b in combinations(by_arm, 2):
        diffs = item_diffs(world, a, b)
        if diffs:
            tests.append({"pair": f"{a} vs {b}", "seeds": sorted(set(by_arm[a]) & set(by_arm[b])),
                          "all": sign([d for d, _ in diffs]), "untaught key": sign([d for d, u in diffs if u]),
                          "taught key": sign([d for d, u in diffs if not u])})
    return tests


def main() -> None:
    from pwd_agent.evaluation.loader import loaded_evaluator
    from repair_arms import arm_adapter, open_arm_folders

    args, ctx, setup, root = open_arm_folders(__doc__.splitlines()[0])
    anchored = anchor_items(setup, [i for i in setup.items if i.split == args.split])
    if not anchored:
        sys.exit(f"no {args.split} item of run {args.run_id} is an order item with one key statement")
    by_scorer: dict[str, dict[str, dict[int, dict[str, bool]]]] = {name: defaultdict(dict) for name in SCORERS}
    ids = {i["id"] for i in anchored}
    for folder in args.arms:
        name, seed = arm_of(folder)
        adapter = arm_adapter(ctx, setup, root, folder)
        kept = root / folder / f"anchor_scores-{args.split}.json"
        outcomes = json.loads(kept.read_text()) if kept.is_file() else {}
        if set(outcomes) != set(SCORERS) or any(set(v) != ids for v in outcomes.values()):
            with loaded_evaluator(ctx, str(adapter)) as evaluator:
                outcomes = score(evaluator, anchored)
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(outcomes))
        for scorer in SCORERS:
            by_scorer[scorer][name][seed] = outcomes[scorer]
    print(json.dumps({"run": args.run_id, "split": args.split, "items": len(anchored),
                      "untaught key": sum(i["untaught"] for i in anchored), "chance": 0.25}))
    from pool_arms import accuracies

    for scorer, by_arm in by_scorer.items():
        world = as_world(by_arm, anchored)
        for name in by_arm:
            got = accuracies(world, name)  # its "holdout" is every item of the split scored
            print(json.dumps({"scorer": scorer, "arm": name, "seeds": got["seeds"], "all": got["holdout"],
                              "untaught key": got["untaught key"], "taught key": got["taught key"]}))
        for row in sign_tests(by_arm, anchored):
            print(json.dumps({"scorer": scorer, **row}))


if __name__ == "__main__":
    main()
