"""`pwd-agent report`: runs/<id>/report.html (self-contained: plots embedded) and the plots as PNG.

Plots: accuracy per round against the goal; diagnosis mix per round; items fixed and broken per
round; pass rate per chain and round (coverage heat map); LLM cost and tokens per agent. The page
also lists each round's numbers, prompt versions and the run's config.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter, defaultdict
from pathlib import Path

import yaml
from sqlmodel import select

from pwd_agent.report.status import kb_line
from pwd_agent.context import RunContext
from pwd_agent.runs import is_running
from pwd_agent.runstate import read_run, state_text
from pwd_agent.baselines import split_baselines
from pwd_agent.store import Chain, ConfigChange, Diagnosis, ItemResult, LeakedSample, TestItem, session_scope
from pwd_agent.store.queries import count_rows, ledger_by_agent, rounds

KINDS = ("untaught", "concept_gap", "chain_break", "item_suspect")


def write_report(ctx: RunContext) -> list[Path]:
    """Write the PNGs and report.html into the run folder; return their paths."""
    data = collect(ctx)
    figures = {name: draw(data) for name, draw in PLOTS.items()}
    out = ctx.run_dir / "report"
    out.mkdir(exist_ok=True)
    paths = []
    for name, png in figures.items():
        if png is not None:
            (out / f"{name}.png").write_bytes(png)
            paths.append(out / f"{name}.png")
    page = ctx.run_dir / "report.html"
    tmp = page.with_suffix(".tmp")
    tmp.write_text(render_html(ctx, data, figures))
    tmp.replace(page)  # never a half-written page
    return [page, *paths]


def collect(ctx: RunContext) -> dict:
    with session_scope(ctx.db_url) as s:
        items = {i.id: i for i in s.exec(select(TestItem)).all()}
        chains = {c.id: c.process_name for c in s.exec(select(Chain)).all()}
        results = s.exec(select(ItemResult)).all()
        coverage: dict[tuple[int, int], list[bool]] = defaultdict(list)
        for r in results:
            coverage[(items[r.item_id].chain_id, r.round_id)].append(r.passed)
        cost = {agent: [usd, tokens_in, tokens_out]
                for agent, _, _, _, tokens_in, tokens_out, usd in ledger_by_agent(s)}
        diagnoses = s.exec(select(Diagnosis)).all()
        return {
            "rounds": [r.model_dump() for r in rounds(s)],
            "diagnoses": Counter((d.round_id, d.kind) for d in diagnoses),
            "judge": Counter((d.round_id, d.judge_kind == d.kind) for d in diagnoses),
            "coverage": {k: sum(v) / len(v) for k, v in coverage.items()},
            "chains": chains,
            "chain_split": {i.chain_id: i.split for i in items.values()},
            "cost": cost,
            "leaked": count_rows(s, LeakedSample),
            "baselines": baseline_rows(s, ctx.config.tests.one_key),
            "kb": kb_line(s),
            "state": state_text(read_run(s, ctx.run_id), is_running(ctx)),
            "goal": ctx.config.loop.goal,
            "goal_split": ctx.config.loop.goal_split,
            "config_changes": [(c.created_at, f"config {c.how}: {c.key} {c.old!r} -> {c.new!r}")
                               for c in s.exec(select(ConfigChange).order_by(ConfigChange.id)).all()],
        }


def baseline_rows(session, one_key: bool) -> list[tuple[str, list]]:
    """(name, [dev_acc, holdout_acc, general_acc, dev_mass, holdout_mass]) rows under the rounds."""
    dev, holdout = split_baselines(session, one_key).values()

    def get(b, field):
        return getattr(b, field) if b else None

    return [("chance", [get(dev, "chance"), get(holdout, "chance"), None, get(dev, "mass_chance"),
                        get(holdout, "mass_chance")]),
            ("best constant", [get(dev, "best_constant"), get(holdout, "best_constant"), None, None, None])]


# ---- plots ------------------------------------------------------------------------------------
def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6.4, 3.6), dpi=110)


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_accuracy(data: dict) -> bytes | None:
    scored = [r for r in data["rounds"] if r["dev_acc"] is not None]
    if not scored:
        return None
    plt, fig, ax = _figure()
    ids = [r["id"] for r in scored]
    ax.plot(ids, [r["dev_acc"] for r in scored], "o-", label="dev")
    ax.plot(ids, [r["holdout_acc"] or 0.0 for r in scored], "s-", label="holdout")
    if any(r["general_acc"] is not None for r in scored):
        ax.plot(ids, [r["general_acc"] or 0.0 for r in scored], "^:", label="general (guard)")
    ax.axhline(data["goal"], color="grey", linestyle="--", label=f"goal ({data['goal_split']})")
    constant = dict(data["baselines"])["best constant"][1]
    if constant is not None:  # the holdout line no student that answers every item alike can pass
        ax.axhline(constant, color="red", linestyle=":", label="best constant answer (holdout)")
    ax.set(xlabel="round (0 = base model)", ylabel="accuracy", ylim=(0, 1), xticks=ids, title="Accuracy per round")
    ax.legend()
    return _png(plt, fig)


def plot_diagnoses(data: dict) -> bytes | None:
    if not data["diagnoses"]:
        return None
    plt, fig, ax = _figure()
    ids = sorted({r for r, _ in data["diagnoses"]})
    bottom = [0] * len(ids)
    for kind in KINDS:
        heights = [data["diagnoses"].get((r, kind), 0) for r in ids]
        ax.bar(ids, heights, bottom=bottom, label=kind)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(xlabel="round diagnosed", ylabel="failed dev items", xticks=ids, title="Diagnosis mix")
    ax.legend()
    return _png(plt, fig)


def plot_flips(data: dict) -> bytes | None:
    flipped = [r for r in data["rounds"] if r["fixed"] is not None]
    if not flipped:
        return None
    plt, fig, ax = _figure()
    ids = [r["id"] for r in flipped]
    ax.bar([i - 0.2 for i in ids], [r["fixed"] for r in flipped], width=0.4, label="fixed", color="tab:green")
    ax.bar([i + 0.2 for i in ids], [r["broken"] for r in flipped], width=0.4, label="broken", color="tab:red")
    for r in flipped:
        ax.annotate(f"p={r['gain_p']:.2f}", (r["id"], max(r["fixed"], r["broken"])), ha="center", va="bottom")
    ax.set(xlabel="round (dev items vs the round before)", ylabel="items", xticks=ids, title="Flips per round")
    ax.legend()
    return _png(plt, fig)


def plot_coverage(data: dict) -> bytes | None:
    if not data["coverage"]:
        return None
    chains = sorted({c for c, _ in data["coverage"]})
    ids = sorted({r for _, r in data["coverage"]})
    grid = [[data["coverage"].get((c, r), float("nan")) for r in ids] for c in chains]
    plt, fig, ax = _figure()
    fig.set_size_inches(6.4, max(3.0, 0.22 * len(chains) + 1.2))
    image = ax.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(ids)), [str(r) for r in ids])
    labels = [f"{data['chains'].get(c, c)[:28]} ({data['chain_split'].get(c, '?')[0]})" for c in chains]
    ax.set_yticks(range(len(chains)), labels, fontsize=6)
    ax.set(xlabel="round", title="Pass rate per chain (d = dev, h = holdout)")
    fig.colorbar(image, ax=ax)
    return _png(plt, fig)


def plot_cost(data: dict) -> bytes | None:
    if not data["cost"]:
        return None
    plt, fig, ax = _figure()
    agents = sorted(data["cost"])
    tokens = [data["cost"][a][1] + data["cost"][a][2] for a in agents]
    ax.bar(agents, tokens, color="tab:purple")
    for i, a in enumerate(agents):
        ax.annotate(f"${data['cost'][a][0]:.4f}", (i, tokens[i]), ha="center", va="bottom")
    ax.set(ylabel="tokens (in + out)", title="LLM tokens and cost per agent")
    return _png(plt, fig)


PLOTS = {"accuracy": plot_accuracy, "diagnoses": plot_diagnoses, "flips": plot_flips, "coverage": plot_coverage,
         "cost": plot_cost}


# ---- page -------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _prompt_table(rounds: list[dict]) -> str:
    """One row per agent prompt, one column per round: the version that round's data was written with."""
    names = sorted({name for r in rounds for name in (r["prompt_versions"] or {})})
    if not names:
        return "<p>No agent prompt used yet.</p>"
    head = "<th>prompt</th>" + "".join(f"<th>round {r['id']}</th>" for r in rounds)
    body = "".join(f"<tr><td>{html.escape(name)}</td>"
                   + "".join(f"<td>{_fmt((r['prompt_versions'] or {}).get(name))}</td>" for r in rounds) + "</tr>"
                   for name in names)
    return f"<table><tr>{head}</tr>{body}</table>"


def _changes(changes: list) -> str:
    if not changes:
        return "<p>none</p>"
    return "<ul>" + "".join(f"<li>{html.escape(f'{at:%Y-%m-%d %H:%M:%S}')} {html.escape(text)}</li>"
                            for at, text in changes) + "</ul>"


def render_html(ctx: RunContext, data: dict, figures: dict[str, bytes | None]) -> str:
    cols = ["id", "status", "scorer", "n_train", "n_patch", "n_replay", "train_loss", "dev_acc", "holdout_acc",
            "general_acc", "dev_mass", "holdout_mass", "fixed", "broken", "gain_p", "prompt_version", "config_hash"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r[c])}</td>" for c in cols) + "</tr>" for r in data["rounds"])
    body += "".join(f"<tr class=\"baseline\"><td>{name}</td>" + "<td></td>" * 6
                    + "".join(f"<td>{_fmt(value)}</td>" for value in values) + "<td></td>" * 5 + "</tr>"
                    for name, values in data["baselines"])
    judged = sum(data["judge"].values())
    agree = sum(n for (_, same), n in data["judge"].items() if same)
    images = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in figures.items() if png is not None)
    config = html.escape(yaml.safe_dump(ctx.config.model_dump(mode="json"), sort_keys=False))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>pwd-agent report: {html.escape(ctx.run_id)}</title>
<style>body{{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right}}td:first-child{{text-align:left}}\
figure{{margin:1em 0}}img{{max-width:100%}}
pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>Run {html.escape(ctx.run_id)}</h1>
<p>{html.escape(data['kb'])}<br>Goal {data['goal']:.3f} on {html.escape(data['goal_split'])};
state: {html.escape(data['state'])}. Leakage gate dropped {data['leaked']} samples.
Judge agrees with the probe verdict on {agree} of {judged} diagnoses.</p>
<h2>Rounds</h2><table><tr>{head}</tr>{body}</table>
<h2>Agent prompt versions per round</h2>{_prompt_table(data["rounds"])}
<h2>Plots</h2>{images or '<p>No round scored yet.</p>'}
<h2>Config</h2><p>Each round's <code>config_hash</code> is in the rounds table; changes made during the run
(<code>set</code>, <code>resume --set</code>):</p>{_changes(data["config_changes"])}
<p>The config as it stands now:</p><pre>{config}</pre>
</body></html>
"""
