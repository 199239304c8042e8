"""Plain-text views of a run's store: the status table, the log lines, the runs list."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlmodel import Session, func, select

from pwd_agent.baselines import beside, goal_warning, split_baselines
from pwd_agent.events import LEVELS
from pwd_agent.context import RunContext
from pwd_agent.runs import is_running
from pwd_agent.runstate import next_step, read_run, state_text
from pwd_agent.store import (
    Chain, Chunk, Concept, Document, Event, LeakedSample, Run, Sample, SourceFile, Statement, TestItem, WorkUnit,
    session_scope,
)
from pwd_agent.stats import compare
from pwd_agent.store.queries import count_rows, ledger_by_agent, round_passes, rounds


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def kb_line(session: Session) -> str:
    return (f"KB: {count_rows(session, Document)} documents, {count_rows(session, Chunk)} chunks, "
            f"{count_rows(session, Chain)} chains, {count_rows(session, Statement)} statements, "
            f"{count_rows(session, Concept)} concepts")


def ingest_lines(session: Session) -> list[str]:
    """Files converted and skipped (by reason) and units that failed (by stage); nothing when
    there are none to show."""
    lines = []
    files = session.exec(select(SourceFile.status, SourceFile.reason, func.count())
                         .group_by(SourceFile.status, SourceFile.reason)).all()
    if files:
        converted = sum(n for status, _, n in files if status == "converted")
        skipped = sorted(((reason, n) for status, reason, n in files if status == "skipped"), key=lambda x: -x[1])
        detail = f" ({', '.join(f'{n} {reason}' for reason, n in skipped)})" if skipped else ""
        lines.append(f"files: {converted} converted, {sum(n for _, n in skipped)} skipped{detail}")
    failed = session.exec(select(WorkUnit.stage, func.count()).where(WorkUnit.error.is_not(None))
                          .group_by(WorkUnit.stage)).all()
    if failed:
        lines.append("failed units: " + ", ".join(f"{stage} {n}" for stage, n in failed)
                     + " (the reasons: pwd-agent logs RUN --level warning)")
    return lines


def render_status(ctx: RunContext, now: datetime | None = None) -> str:
    """The run at a glance: state, the stage with its progress and ETA, KB counts, benchmark, one
    row per round, LLM calls and cost per agent, the stop reason."""
    loop = ctx.config.loop
    live = is_running(ctx)
    with session_scope(ctx.db_url) as session:
        run = read_run(session, ctx.run_id)
        floors = split_baselines(session, ctx.config.tests.one_key)
        state = [f"run {ctx.run_id}: {state_text(run, live)}"]
        if run is None or run.status != "finished":
            if not live and run is not None:
                state[0] += f" · continue: {next_step(run)}"
            state.append(stage_line(session, run, now or datetime.now(timezone.utc), live))
        lines = [
            *state,
            kb_line(session),
            *ingest_lines(session),
            f"tests: {count_rows(session, TestItem, TestItem.split == 'dev')} dev, "
            f"{count_rows(session, TestItem, TestItem.split == 'holdout')} holdout; "
            f"goal {loop.goal:.3f} on {loop.goal_split}",
            *([f"warning: {warning}"] if (warning := goal_warning(loop.goal, loop.goal_split, floors)) else []),
            f"training data: {count_rows(session, Sample, Sample.origin == 'v1')} V1, "
            f"{count_rows(session, Sample, Sample.origin == 'patch')} patch; "
            f"{count_rows(session, LeakedSample)} dropped by the leakage gate",
            "",
            *round_table(session, floors),
        ]
        lines += ["", *llm_lines(session)]
    return "\n".join(lines)


def round_table(session: Session, floors: dict) -> list[str]:
    """One row per round (its scorer and scores), then the baselines on the same items: chance and
    the best constant answer per split (and for the options scorer's mass, its chance)."""
    rows = rounds(session)
    mass = any(r.dev_mass is not None or r.holdout_mass is not None for r in rows)
    head = (f"{'round':>5}  {'status':<10} {'scorer':<8} {'train':>5} {'patch':>5} {'replay':>6} {'loss':>6} "
            f"{'dev':>6} {'holdout':>7} {'general':>7}  {'fixed':>5} {'broken':>6} {'p':>6}")
    lines = [head + (f" {'dev mass':>8} {'hol mass':>8}" if mass else "")]
    for r in rows:
        loss = "-" if r.train_loss is None else f"{r.train_loss:.3f}"
        flips = (f"{r.fixed:>5} {r.broken:>6} {r.gain_p:>6.3f}" if r.gain_p is not None
                 else f"{'-':>5} {'-':>6} {'-':>6}")
        line = (f"{r.id:>5}  {r.status:<10} {r.scorer or '-':<8} {r.n_train:>5} {r.n_patch:>5} {r.n_replay:>6} "
                f"{loss:>6} {_pct(r.dev_acc):>6} {_pct(r.holdout_acc):>7} {_pct(r.general_acc):>7}  {flips}")
        lines.append(line + (f" {_pct(r.dev_mass):>8} {_pct(r.holdout_mass):>8}" if mass else ""))
    dev, holdout = floors["dev"], floors["holdout"]
    blank = " " * 44  # under the columns before dev
    for name, field in (("chance", "chance"), ("constant", "best_constant")):
        values = [_pct(getattr(b, field) if b else None) for b in (dev, holdout)]
        line = f"{name:<8}{blank} {values[0]:>6} {values[1]:>7} {'-':>7}"
        if mass:
            chance = [_pct(b.mass_chance if b and field == "chance" else None) for b in (dev, holdout)]
            line += f"  {'':>5} {'':>6} {'':>6} {chance[0]:>8} {chance[1]:>8}"
        lines.append(line)
    answers = [f'{split} always "{b.constant_answer}"' for split, b in (("dev", dev), ("holdout", holdout)) if b]
    lines.append(f"(chance: a uniformly random answer set; constant: {'; '.join(answers) or 'no items'})")
    return lines + repair_gain_lines(session, rows)


def repair_gain_lines(session: Session, rows: list) -> list[str]:
    """Each evaluated repair round's holdout items against the round before it (the items the Debugger never
    read): fixed, broken and the one-sided exact McNemar p, the repair's own evidence."""
    evaluated = [r.id for r in rows if r.status == "evaluated"]
    out = []
    for before, after in zip(evaluated, evaluated[1:]):
        if after < 2:
            continue
        flips = compare(round_passes(session, before, "holdout"), round_passes(session, after, "holdout"))
        out.append(f"repair round {after} vs round {before}, holdout: {flips.fixed} fixed, {flips.broken} broken, "
                   f"p = {flips.p_value:.3g} (one-sided exact McNemar)")
    return out


def stage_line(session: Session, run: Run | None, now: datetime, live: bool) -> str:
    """The stage the run is in (or stopped in): the last progress count, its rate and, while the
    run is live, the time left at that rate (measured since this process started the stage)."""
    events = session.exec(select(Event).order_by(Event.id.desc()).limit(2000)).all()
    latest = next((e for e in events if "done" in e.data and "total" in e.data), None)
    if latest is None:
        return f"stage: {(run and run.stage) or (events[0].node if events else 'not started')}"
    done, total = int(latest.data["done"]), int(latest.data["total"])
    first = latest
    since = _utc(run.process_started_at) if run else None
    for event in events[events.index(latest) + 1:]:
        if since and _utc(event.created_at) < since:
            break  # a count from before this process would mix in the time the run was down
        if event.node == latest.node and "done" in event.data:
            if int(event.data.get("total", -1)) != total or int(event.data["done"]) > int(first.data["done"]):
                break  # an earlier pass of the same stage (another round)
            first = event
    line = f"stage: {latest.node} {done}/{total} ({100 * done // max(total, 1)}%)"
    seconds = (_utc(latest.created_at) - _utc(first.created_at)).total_seconds()
    gained = done - int(first.data["done"])
    if done < total and gained > 0 and seconds > 0:
        left = ((total - done) * seconds / gained
                - ((_utc(now) - _utc(latest.created_at)).total_seconds() if live else 0))
        line += f", {gained / seconds:.2f}/s, ETA {_duration(max(left, 0))}" if live else f", {gained / seconds:.2f}/s"
    return line


def _utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def llm_lines(session: Session) -> list[str]:
    """Agent calls, cache hits, tokens and cost per stage (agent)."""
    lines = [f"{'agent':<10} {'calls':>6} {'cached':>6} {'failed':>6} {'tokens in':>10} {'tokens out':>10} {'cost':>8}"]
    for agent, calls, cached, failed, tokens_in, tokens_out, cost in ledger_by_agent(session):
        lines.append(f"{agent:<10} {calls:>6} {cached:>6} {failed:>6} {tokens_in:>10} {tokens_out:>10} {cost:>8.4f}")
    return lines


def event_json(event: Event) -> str:
    import json

    return json.dumps({"id": event.id, "time": event.created_at.isoformat(), "level": event.level, "node": event.node,
                       "message": event.message, "data": event.data}, default=str)


def format_event(event: Event) -> str:
    return f"{event.created_at:%H:%M:%S} {event.level:<7} [{event.node}] {event.message}"


def events_after(db_url: str, last_id: int) -> list[Event]:
    with session_scope(db_url) as session:
        return list(session.exec(select(Event).where(Event.id > last_id).order_by(Event.id)).all())


def event_shown(event: Event, level: str, nodes: list[str]) -> bool:
    """At `level` or above, and from one of `nodes` when any are named."""
    return LEVELS.index(event.level) >= LEVELS.index(level) and (not nodes or event.node in nodes)


def stored_run_state(ctx: RunContext) -> str:
    """The state of a run read from its store alone (a run in a shared database whose folder is elsewhere)."""
    live = is_running(ctx)
    with session_scope(ctx.db_url) as session:
        return state_text(read_run(session, ctx.run_id), live)


def runs_elsewhere(db_url: str | None, runs_dir: str, known: list[str]) -> list[tuple[str, str]]:
    """(run id, state) of the runs a shared PostgreSQL database holds that have no folder in runs_dir
    (driven from another machine's run folder): `pwd-agent list` and the web page list them too."""
    from pathlib import Path

    from pwd_agent.config import RunConfig
    from pwd_agent.runs import context_for
    from pwd_agent.store import postgres

    if not postgres.is_postgres(db_url):
        return []
    others = [rid for rid in postgres.stored_run_ids(db_url) if rid not in known]
    contexts = [context_for(RunConfig(run_id=rid, db_url=db_url), Path(runs_dir) / rid) for rid in others]
    return [(ctx.run_id, stored_run_state(ctx)) for ctx in contexts]


def run_summary(ctx: RunContext) -> tuple[str, str, str]:
    """(run id, state, best goal-split score beside that split's chance and best constant answer)
    for `pwd-agent list`."""
    split = ctx.config.loop.goal_split
    live = is_running(ctx)
    with session_scope(ctx.db_url) as session:
        state = state_text(read_run(session, ctx.run_id), live)
        floor = split_baselines(session, ctx.config.tests.one_key)[split]
        scores = [getattr(r, f"{split}_acc") for r in rounds(session)]
    scores = [s for s in scores if s is not None]
    return ctx.run_id, state, beside(max(scores), floor) if scores else "-"
