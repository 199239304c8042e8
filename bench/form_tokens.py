"""Loss tokens a patch dose carries in each writer form (builder.patch_wordings), on the same nodes.

    python bench/form_tokens.py RUN_ID [--test-share F] [--nodes untaught|all]

The forms are capped at the same sample count per node, not the same loss tokens: a plain-text walk
(`text`) is trained on every token, a chat sample (`both`, `forward`) on its answer only, a contrast
sample on the whole true claim. So an arm written in one form may carry more training signal than
the same arm in another. For each form this writes the repair bench's dose (builder.patch_exposures
per node at train.epochs, V1's wordings left out for taught statements) for every node of the pool
(the tested statements V1 left untaught: the oracle's pool; or every statement) and counts the loss
tokens the trainer would see (training.trainer.encode with the student's tokenizer). No training,
no scoring: a tokenizer pass, seconds on a CPU."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def loss_tokens(tokenizer, drafts, max_length: int) -> int:
    """Tokens with a label (the trainer's loss tokens) over `drafts`."""
    from pwd_agent.training.trainer import IGNORE, encode

    total = 0
    for d in drafts:
        got = encode(tokenizer, d.prompt, d.answer, max_length)
        total += sum(x != IGNORE for x in got[1]) if got else 0
    return total


def form_doses(cfg, setup, nodes: list[int], forms) -> dict[str, list]:
    """Each form's dose over `nodes`, as the repair bench writes it (repair_arms.node_dose, before the
    leakage gate)."""
    from repair_arms import node_dose

    return {form: [d for sid in nodes for d in node_dose(cfg, setup, sid, form=form)] for form in forms}


def main() -> None:
    from pwd_agent.recipes import PATCH_FORMS
    from pwd_agent.runs import open_run
    from pwd_agent.student import load_tokenizer, resolve_student
    from repair_arms import load_setup

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--test-share", type=float, default=1.0, help="The repair bench's --test-share.")
    parser.add_argument("--nodes", choices=["untaught", "all"], default="untaught",
                        help="untaught: the tested statements V1 left untaught (the oracle's pool); all: every "
                        "statement of the KB.")
    args = parser.parse_args()
    ctx = open_run(args.run_id)
    cfg = ctx.config
    setup = load_setup(ctx, args.test_share)
    nodes = sorted(sid for sid in setup.statements
                   if args.nodes == "all" or (sid not in setup.taught and sid in setup.tested))
    if not nodes:
        sys.exit(f"run {args.run_id} has no {args.nodes} statements to dose: try --nodes all")
    tokenizer = load_tokenizer(resolve_student(cfg.student), cfg.student.chat_template)
    doses = form_doses(cfg, setup, nodes, PATCH_FORMS)
    counts = {form: (len(d), loss_tokens(tokenizer, d, cfg.student.max_length)) for form, d in doses.items()}
    base = counts["both"][1] or 1
    for form, (samples, tokens) in counts.items():
        print(json.dumps({"form": form, "nodes": len(nodes), "samples": samples, "loss_tokens": tokens,
                          "tokens_per_sample": round(tokens / max(samples, 1), 1),
                          "vs_both": round(tokens / base, 3)}), flush=True)


if __name__ == "__main__":
    main()
