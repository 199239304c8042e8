"""A run on disk: its folder, config and store URL, and the RunContext (context.py) made from them."""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from pwd_agent.config import RunConfig, apply_set, leaves, load_config, parse_set, save_config, validate_config
from pwd_agent.context import RunContext
from pwd_agent.errors import ConfigError, RunLockedError, RunNotFoundError

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@contextmanager
def run_lock(ctx: RunContext) -> Iterator[None]:
    """Only one process drives a run: a second `run`/`resume` on it is refused, not interleaved.
    PostgreSQL: an advisory lock in the database, which every machine that sees it shares; SQLite:
    an flock on the run folder."""
    from pwd_agent.store import postgres

    if postgres.is_postgres(ctx.db_url):
        with postgres.run_lock(ctx.db_url, ctx.run_id):
            yield
        return
    import fcntl

    with open(ctx.run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"run {ctx.run_id} is being driven by another process",
                                 f"wait for it, or stop it, then `pwd-agent resume {ctx.run_id}`") from None
        yield  # the lock goes with the process, so a killed run leaves no stale lock


def new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def create_run(config: RunConfig) -> RunContext:
    """Make runs/<id>/ and save the resolved config; refuses to reuse an existing run id."""
    run_id = config.run_id or new_run_id()
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"invalid run id '{run_id}'", "use letters, digits, '-', '_' or '.'")
    run_dir = Path(config.runs_dir) / run_id
    if (run_dir / "config.yaml").exists():
        raise ConfigError(f"run {run_id} already exists in {config.runs_dir}",
                          f"continue it with `pwd-agent resume {run_id}` or pick another --run-id")
    refuse_stored_run(config, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config.model_copy(update={"run_id": run_id})
    save_config(config, run_dir / "config.yaml")
    save_config(config, run_dir / APPLIED)
    return context_for(config, run_dir)


def refuse_stored_run(config: RunConfig, run_id: str) -> None:
    """A shared database may hold a run of this id made from another run folder: a new run must not
    write into its store."""
    from pwd_agent.store import Run, postgres, session_scope

    if not postgres.is_postgres(config.db_url):
        return
    with session_scope(postgres.run_url(config.db_url, run_id)) as session:
        if session.get(Run, run_id) is not None:
            raise ConfigError(f"run {run_id} already exists in the database {config.db_url}",
                              f"resume it from its run folder (`pwd-agent resume {run_id} --runs-dir ...`) "
                              "or pick another --run-id")


def open_run(run_id: str, runs_dir: str = "runs") -> RunContext:
    """The context of an existing run, from its saved config."""
    run_dir = Path(runs_dir) / run_id
    if not (run_dir / "config.yaml").is_file():
        known = ", ".join(list_run_ids(runs_dir)[-5:]) or "none yet"
        raise RunNotFoundError(f"no run '{run_id}' in {runs_dir}/",
                               f"`pwd-agent list` shows the runs (recent: {known})")
    return context_for(load_config(run_dir / "config.yaml"), run_dir)


# The config the run actually ran under; config.yaml edited by hand is compared against it.
APPLIED = ".config.applied.yaml"
# Keys fixed for a run's life: changing them would make the stored KB, items or adapters lie.
FROZEN = ("run_id", "runs_dir", "db_url", "corpus.", "extract.", "tests.", "student.")


def flat(config: RunConfig) -> dict[str, object]:
    return {key: value for key, value, _ in leaves(config)}


def config_changes(before: RunConfig, after: RunConfig) -> list[tuple[str, object, object]]:
    old, new = flat(before), flat(after)
    return [(k, old[k], new[k]) for k in old if old[k] != new[k]]


def resume_config(ctx: RunContext, sets: list[str]) -> tuple[RunContext, list[tuple[str, object, object]]]:
    """The config to resume with: the saved one, plus explicit `--set` overrides, which are checked
    and saved. A config.yaml edited by hand is refused: the change must be named with --set."""
    applied_path = ctx.run_dir / APPLIED
    if not applied_path.is_file():  # a run from before this file existed: what is saved is what ran
        save_config(ctx.config, applied_path)
    applied = load_config(applied_path)
    edited = config_changes(applied, ctx.config)
    if edited:
        key, old, new = edited[0]
        raise ConfigError(f"{ctx.run_dir / 'config.yaml'} was edited since the run last ran "
                          f"({key}: {old!r} -> {new!r})",
                          f"undo the edit, or name the change: "
                          f"pwd-agent resume {ctx.run_id} --set {key}={json_text(new)}")
    if not sets:
        return ctx, []
    updated, changes = checked_overrides(ctx, sets)
    save_overrides(ctx, updated)
    return context_for(updated, ctx.run_dir), changes


def checked_overrides(ctx: RunContext, sets: list[str]) -> tuple[RunConfig, list[tuple[str, object, object]]]:
    """The run's config with `sets` applied and validated; frozen keys refused. Writes nothing."""
    data = ctx.config.model_dump(mode="json")
    for assignment in sets:
        apply_set(data, *parse_set(assignment))
    updated = validate_config(data, source="--set")
    changes = config_changes(ctx.config, updated)
    frozen = [k for k, _, _ in changes if k.startswith(FROZEN)]
    if frozen:
        raise ConfigError(f"{frozen[0]} cannot change in a started run (the stored KB, tests or adapters depend on it)",
                          "start a new run with `pwd-agent run` for that")
    from pwd_agent.preflight import check_backends

    check_backends(updated)  # e.g. eval.backend=vllm on a machine without a GPU
    return updated, changes


def save_overrides(ctx: RunContext, updated: RunConfig) -> None:
    save_config(updated, ctx.run_dir / "config.yaml")
    save_config(updated, ctx.run_dir / APPLIED)


def is_running(ctx: RunContext) -> bool:
    """Whether a process holds the run lock right now."""
    try:
        with run_lock(ctx):
            return False
    except RunLockedError:
        return True


# Requests from other terminals, read by the driver at each node boundary.
PAUSE_FILE = ".pause"
PENDING_SET_FILE = ".pending_set.json"


def json_text(value: object) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def context_for(config: RunConfig, run_dir: Path) -> RunContext:
    from pwd_agent.store.postgres import is_postgres, run_url

    if is_postgres(config.db_url):  # one database, one schema per run
        return RunContext(config=config, run_dir=run_dir, db_url=run_url(config.db_url, run_dir.name))
    db_url = config.db_url or f"sqlite:///{(run_dir / 'run.db').resolve()}"
    return RunContext(config=config, run_dir=run_dir, db_url=db_url)


def list_run_ids(runs_dir: str = "runs") -> list[str]:
    root = Path(runs_dir)
    return sorted(p.name for p in root.iterdir() if (p / "config.yaml").is_file()) if root.is_dir() else []
