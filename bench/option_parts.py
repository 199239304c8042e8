"""Where an order item's choice comes from: the option's first step (its prior) or the step it names next (the fact).

    python bench/option_parts.py RUN_ID ARM_FOLDER [ARM_FOLDER ...] [--test-share F] [--split holdout]

An order item's options are claims "Right after X, Y." scored by their likelihood as the answer to
the question (eval.scorer: options). That likelihood is log P(X part) + log P(Y | X part): the first
is how readily the student names step X at all, the second is the fact the item tests (which step
follows X). For each arm (a folder under the repair bench's runs/RUN_ID/repair_arms/..., holding an
adapter/; "v1-0" is V1 for seed 0) this scores every option of the split's items with the arm's
adapter, then reports per item group (key statement taught or not by V1) how often the key ranks
first by the whole option (what the benchmark counts), by the Y part alone, by the X part alone,
and how often the key beats its own reversal ("Right after Y, X.") where that is an option. A dose
that taught the fact but left the X-part prior in charge shows as a Y-part rank that rises while
the whole-option rank does not."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def parts(option: str, steps: list[str]) -> tuple[str, str] | None:
    """("Right after X,", " Y.") of an order claim whose X is one of the KB's step phrases `steps`, or
    None for another shape. A step may hold ", " itself ("..., ready for the store"), so X is the
    longest known step the claim opens with, not the text before its first comma."""
    for step in sorted(steps, key=len, reverse=True):
        head = f"Right after {step},"
        if option.startswith(head + " "):
            return head, option[len(head):]
    return None


def step_phrases(statements) -> list[str]:
    """Every step phrase the KB's order statements name (subjects and objects)."""
    return sorted({x for st in statements for x in (st.subject, st.object)})


def item_parts(evaluator, question: str, options: list[str], steps: list[str]) -> list[dict] | None:
    """Per option: total, X-part and Y-part log-likelihoods and token counts."""
    split = [parts(o, steps) for o in options]
    if any(p is None for p in split):
        return None
    whole = evaluator.option_logliks(question, options)
    heads = evaluator.option_logliks(question, [p[0] for p in split])
    return [{"all": w[0] / w[1], "x": h[0] / h[1], "y": (w[0] - h[0]) / max(w[1] - h[1], 1)}
            for w, h in zip(whole, heads)]


def ranks(items, scored: dict, steps: list[str]) -> dict:
    """Shares of items whose key ranks first by each part, and key-above-its-reversal."""
    out = {"items": 0, "key_first_all": 0, "key_first_y": 0, "key_first_x": 0, "reversal_items": 0,
           "key_above_reversal": 0}
    for item in items:
        got = scored.get(item.id)
        if got is None:
            continue
        key = item.option_kinds.index("key")
        out["items"] += 1
        for part in ("all", "y", "x"):
            out[f"key_first_{part}"] += max(range(4), key=lambda j: got[j][part]) == key
        head, tail = parts(item.options[key], steps)
        reversal = f"Right after {tail.strip().rstrip('.')}, {head[len('Right after '):-1]}."
        if reversal in item.options:
            out["reversal_items"] += 1
            out["key_above_reversal"] += got[key]["all"] > got[item.options.index(reversal)]["all"]
    n, r = max(out["items"], 1), max(out["reversal_items"], 1)
    return {"items": out["items"], **{k: round(out[k] / n, 3) for k in ("key_first_all", "key_first_y", "key_first_x")},
            "reversal_items": out["reversal_items"], "key_above_reversal": round(out["key_above_reversal"] / r, 3)}


def main() -> None:
    from pwd_agent.evaluation.loader import loaded_evaluator
    from repair_arms import arm_adapter, key_statements, open_arm_folders

    args, ctx, setup, root = open_arm_folders(__doc__.splitlines()[0])
    items = [i for i in setup.items if i.split == args.split]
    untaught = [i for i in items if any(s not in setup.taught for s in key_statements(i))]
    taught = [i for i in items if i not in untaught]
    steps = step_phrases(setup.statements.values())
    for arm in args.arms:
        adapter = arm_adapter(ctx, setup, root, arm)
        with loaded_evaluator(ctx, str(adapter)) as evaluator:
            scored = {i.id: item_parts(evaluator, i.question, i.options, steps) for i in items}
        scored = {k: v for k, v in scored.items() if v is not None}
        print(json.dumps({"arm": arm, "untaught_key": ranks(untaught, scored, steps),
                          "taught_key": ranks(taught, scored, steps),
                          "mean_y_gap_key_minus_best_other": round(statistics.mean(
                              s[i.option_kinds.index("key")]["y"] - max(o["y"] for j, o in enumerate(s)
                                                                          if j != i.option_kinds.index("key"))
                              for i in untaught if (s := scored.get(i.id))), 3) if untaught else None}),
              flush=True)


if __name__ == "__main__":
    main()
