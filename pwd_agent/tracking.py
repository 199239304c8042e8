"""Optional experiment tracking: each scored round's metrics to MLflow and/or Weights & Biases.

`tracking.report_to` names the trackers (off by default). The store stays the source of truth: the
driver calls `sync` between nodes, and every evaluated round not yet sent is sent once (a WorkUnit
`track:<name>` marks it), so a resumed run neither skips nor repeats a round. One pwd-agent run is
one tracker run, found again on resume by the run folder's path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from contextlib import contextmanager
from typing import Iterator, Protocol

from sqlmodel import select

from pwd_agent.errors import ConfigError, RunPaused
from pwd_agent.events import emit
from pwd_agent.preflight import check_trackers
from pwd_agent.context import RunContext
from pwd_agent.runs import flat
from pwd_agent.store import Round, session_scope
from pwd_agent.store.db import done_keys, mark_done
from pwd_agent.baselines import split_baselines
from pwd_agent.runstate import read_run
from pwd_agent.store.queries import ledger_by_agent, rounds

logger = logging.getLogger("pwd_agent")
START_HINT = {"mlflow": "check tracking.mlflow_tracking_uri (or $MLFLOW_TRACKING_URI), "
                        "or remove mlflow from tracking.report_to",
              "wandb": "run `wandb login`, or set tracking.wandb_mode=offline, or remove wandb from tracking.report_to"}
ROUND_FIELDS = ("dev_acc", "holdout_acc", "dev_mass", "holdout_mass", "general_acc", "train_loss", "n_train", "n_patch",
                "n_replay", "fixed", "broken", "still_failing", "gain_p")


class Tracker(Protocol):
    name: str

    def log_round(self, round_id: int, metrics: dict[str, float]) -> None: ...

    def finish(self, summary: dict) -> None:
        """The run reached its end (goal met, max rounds, no gain...)."""

    def close(self, failed: bool) -> None:
        """This process stops driving the run (the run itself may go on after a resume)."""


@contextmanager
def open_trackers(ctx: RunContext) -> Iterator[list[Tracker]]:
    """The configured trackers for this process; closed (failed or not) when the block ends."""
    check_trackers(ctx.config.tracking.report_to)
    trackers: list[Tracker] = []
    for name in ctx.config.tracking.report_to:
        try:
            trackers.append(_OPEN[name](ctx))
        except Exception as exc:  # no login, a bad URI, an unreachable server: say so before any work
            _close_all(trackers, failed=True)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"could not start the {name} tracker: {first}", START_HINT[name]) from None
    failed = True
    try:
        yield trackers
        failed = False
    except RunPaused:
        failed = False  # waiting at a gate or paused on request: the run goes on after a resume
        raise
    finally:
        _close_all(trackers, failed)


def _close_all(trackers: list[Tracker], failed: bool) -> None:
    for tracker in trackers:
        try:
            tracker.close(failed)
        except Exception as exc:  # a tracker that cannot close must not hide the run's own outcome
            logger.warning("could not close the %s tracker: %s", tracker.name, exc)


def sync(ctx: RunContext, trackers: list[Tracker]) -> None:
    """Send every evaluated round a tracker has not had yet, in round order."""
    for tracker in trackers:
        stage = f"track:{tracker.name}"
        with session_scope(ctx.db_url) as session:
            sent = done_keys(session, stage)
            pending = session.exec(select(Round).where(Round.status == "evaluated").order_by(Round.id)).all()
            pending = [row for row in pending if str(row.id) not in sent]
            ledger = _ledger_totals(session)
            floor = baseline_metrics(session, ctx.config.tests.one_key)
        for row in pending:
            try:
                tracker.log_round(row.id, round_metrics(row) | floor | ledger)
            except Exception as exc:  # tracking never stops a run: the round is sent at the next sync
                emit(ctx.db_url, "track", f"round {row.id} not sent to {tracker.name} ({exc}); will retry",
                     "warning", tracker=tracker.name, round=row.id)
                break
            with session_scope(ctx.db_url) as session:
                mark_done(session, stage, row.id)
            emit(ctx.db_url, "track", f"round {row.id} metrics sent to {tracker.name}", "debug",
                 tracker=tracker.name, round=row.id)


def finish(ctx: RunContext, trackers: list[Tracker]) -> None:
    """The run's end, as the Run row and the rounds in the store have it: stop reason, whether the
    goal was met, best scores, to every tracker (a failure is logged, not raised)."""
    with session_scope(ctx.db_url) as session:
        run = read_run(session, ctx.run_id)
        scored = [r for r in rounds(session) if r.status == "evaluated"]
    summary = {"stop_reason": run.stop_reason, "goal_met": bool(run.goal_met), "rounds": len(scored)}
    for split in ("dev", "holdout"):
        if values := [getattr(r, f"{split}_acc") for r in scored if getattr(r, f"{split}_acc") is not None]:
            summary[f"best_{split}_acc"] = max(values)
    for tracker in trackers:
        try:
            tracker.finish(summary)
        except Exception as exc:
            emit(ctx.db_url, "track", f"the run's summary was not sent to {tracker.name} ({exc})", "warning",
                 tracker=tracker.name)


def round_metrics(row: Round) -> dict[str, float]:
    """The numeric facts of one round (unset ones left out)."""
    return {name: float(getattr(row, name)) for name in ROUND_FIELDS if getattr(row, name) is not None}


def baseline_metrics(session, one_key: bool) -> dict[str, float]:
    """Chance and the best constant answer per split, sent with every round so a chart can show them."""
    out = {}
    for split, b in split_baselines(session, one_key).items():
        if b is not None:
            out |= {f"{split}_chance": b.chance, f"{split}_best_constant": b.best_constant,
                    f"{split}_mass_chance": b.mass_chance}
    return out


def _ledger_totals(session) -> dict[str, float]:
    """LLM spend so far (cumulative at the time the round is sent)."""
    spend = ledger_by_agent(session)
    return {"llm_cost": float(sum(r.cost for r in spend)), "llm_tokens": float(sum(r.tokens for r in spend))}


def flat_config(ctx: RunContext) -> dict[str, str]:
    """The run's config as dotted keys -> text, as tracker parameters."""
    return {key: str(value)[:500] for key, value in flat(ctx.config).items()}


def tracker_run_key(ctx: RunContext) -> str:
    """A stable id for the run in the tracker: its name plus a hash of where it lives."""
    where = hashlib.sha1(str(ctx.run_dir.resolve()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '-', ctx.run_id)[:48]}-{where}"


class MLflowTracker:
    """One MLflow run per pwd-agent run, through MlflowClient (no global active run)."""

    name = "mlflow"

    def __init__(self, ctx: RunContext):
        from mlflow.tracking import MlflowClient

        cfg = ctx.config.tracking
        uri = cfg.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") \
            or f"sqlite:///{(ctx.run_dir.parent / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(cfg.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.experiment)
        key = tracker_run_key(ctx)
        found = self.client.search_runs([experiment_id], filter_string=f"tags.`pwd_agent.run_key` = '{key}'")
        if found:
            self.run_id = found[0].info.run_id
        else:
            run = self.client.create_run(experiment_id, run_name=ctx.run_id, tags={
                "pwd_agent.run_key": key, "pwd_agent.run_dir": str(ctx.run_dir.resolve()),
                "student": ctx.config.student.model, "teacher": ctx.config.llm.model})
            self.run_id = run.info.run_id
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat_config(ctx).items()])
        self.uri = uri

    def log_round(self, round_id: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.update_run(self.run_id, status="RUNNING")  # again, after a failed or paused process
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, round_id) for k, v in metrics.items()])

    def finish(self, summary: dict) -> None:
        for key, value in summary.items():
            if isinstance(value, (int, float)):
                self.client.log_metric(self.run_id, key, float(value))
            else:
                self.client.set_tag(self.run_id, key, str(value))
        self.client.set_terminated(self.run_id, "FINISHED")

    def close(self, failed: bool) -> None:
        if failed:
            self.client.set_terminated(self.run_id, "FAILED")


class WandbTracker:
    """One W&B run per pwd-agent run (id from the run folder, resumed with resume="allow")."""

    name = "wandb"

    def __init__(self, ctx: RunContext):
        import wandb

        cfg = ctx.config.tracking
        self.run = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, id=tracker_run_key(ctx),
                              name=ctx.run_id, resume="allow", dir=str(ctx.run_dir), mode=cfg.wandb_mode,
                              config=flat_config(ctx), settings=wandb.Settings(silent=True))

    def log_round(self, round_id: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=round_id)

    def finish(self, summary: dict) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


_OPEN = {"mlflow": MLflowTracker, "wandb": WandbTracker}
