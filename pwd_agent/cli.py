"""The `pwd-agent` command; every argument and option: docs/cli.md (`python -m pwd_agent.docgen` writes it).

Commands:
  run            start a run: corpus -> KB -> tests -> data -> train -> test -> debug -> retrain
  resume         continue a stopped or killed run, optionally with changed settings
  status         a run's KB counts, benchmark sizes, rounds and stop reason
  logs           the agents' log of a run (-f follows it live)
  list           every run with its state and best score
  review         what waits at a review gate, and the answer: approve, reject or edit
  pause          ask a running run to stop at its next node boundary
  set            change settings of a run, running or not
  blame          one test item across rounds
  coverage       per chain: items, samples, pass rates; untaught and untested nodes
  report         report.html and plots of a run
  export         a run's benchmark, training data and `vllm serve` line
  config         every setting with its default and meaning
  prompts check  render every prompt file with fixture values
  ui             a local web page to watch and steer runs

Exit codes: 0 goal met (or command done), 2 bad input, 3 run stopped short of the goal (or over
its LLM budget, or rejected at a gate), 4 training failed, 5 the LLM endpoint kept failing, 6 paused
(at a gate or by `pwd-agent pause`), 130 interrupted (Ctrl-C; state saved), 1 unexpected error (state
saved; `pwd-agent resume RUN` continues).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from pwd_agent.errors import PwdAgentError, RunPaused

EXIT_GOAL_MET, EXIT_BAD_INPUT, EXIT_STOPPED_SHORT, EXIT_INTERRUPTED = 0, 2, 3, 130

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Test-driven data engineering for LLMs.")

# A default store for new runs (a saved run keeps the URL it started with, in its config.yaml).
DB_URL_ENV = "PWD_AGENT_DB_URL"
RUNS_DIR = typer.Option("runs", "--runs-dir", help="Parent folder of run folders.")
RUN_ID = typer.Argument(..., help="The run's id: its folder name under --runs-dir.")
QUIET = typer.Option(False, "--quiet", "-q", help="Only the final table.")


def _setup_logging(run_dir: Path, quiet: bool) -> None:
    """Console shows the agents' milestones; run.log keeps everything."""
    logger = logging.getLogger("pwd_agent")
    logger.setLevel(logging.DEBUG)
    logger.handlers.clear()
    file_handler = logging.FileHandler(run_dir / "run.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file_handler)
    if quiet:
        return
    if sys.stdout.isatty():  # a person watches: log lines scroll above live progress bars
        from rich.console import Console
        from rich.logging import RichHandler

        from pwd_agent.events import set_progress_sink
        from pwd_agent.progress import RichBars

        term = Console()
        handler = RichHandler(console=term, show_path=False, show_level=False, markup=False, log_time_format="%H:%M:%S")
        handler.setLevel(logging.INFO)
        logger.addHandler(handler)
        set_progress_sink(RichBars(term))
        return
    console = logging.StreamHandler(sys.stdout)
    console.setLevel(logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(console)


def _finish(ctx) -> None:
    """Print the round table and exit with the documented code."""
    from pwd_agent.driver import final_state
    from pwd_agent.report.status import render_status

    typer.echo("")
    typer.echo(render_status(ctx))
    values = final_state(ctx)["values"]
    if values.get("goal_met"):
        typer.echo(f"\ngoal met. Model: {_last_adapter(ctx)}")
        raise typer.Exit(EXIT_GOAL_MET)
    typer.echo(f"\nstopped short of the goal ({values.get('stop_reason')}); exit code {EXIT_STOPPED_SHORT}")
    raise typer.Exit(EXIT_STOPPED_SHORT)


def _last_adapter(ctx) -> str:
    """The last round's weights, said as what they are: a LoRA on the base student or a whole model."""
    from pwd_agent.student import is_full_model

    adapters = sorted((ctx.run_dir / "rounds").glob("*/adapter"))
    if not adapters:
        return "the base student (round 0, no training)"
    kind = "the fully trained student in" if is_full_model(str(adapters[-1])) else "base student +"
    return f"{kind} {adapters[-1]}"


def _execute(ctx, resume: bool, quiet: bool, answer: dict | None = None) -> None:
    from pwd_agent.driver import execute
    from pwd_agent.events import set_progress_sink
    from pwd_agent.runs import run_lock

    with run_lock(ctx):  # refused before anything is written if another process drives the run
        _setup_logging(ctx.run_dir, quiet)
        try:
            execute(ctx, resume=resume, answer=answer)
        except (RunPaused, PwdAgentError):
            raise  # the driver logged it and wrote the Run row
        except KeyboardInterrupt:
            typer.echo(f"\ninterrupted; state saved. Continue with: pwd-agent resume {ctx.run_id}", err=True)
            raise typer.Exit(EXIT_INTERRUPTED)
        except Exception:
            logging.getLogger("pwd_agent").exception("run crashed")
            typer.echo(f"\nstate saved; continue with: pwd-agent resume {ctx.run_id}", err=True)
            raise
        finally:
            set_progress_sink(None)  # the bars end before the final table or the error is printed
    _finish(ctx)


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "-c", "--config", help="YAML run config."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting: a.b=value (JSON value). Repeatable."),
    corpus: Optional[str] = typer.Option(None, "--corpus", help="Corpus folder or file (corpus.path)."),
    goal: Optional[float] = typer.Option(None, "--goal", help="Target accuracy 0-1 (loop.goal)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run folder name (default: a timestamp)."),
    runs_dir: Optional[str] = typer.Option(None, "--runs-dir", help="Parent folder of run folders (runs_dir)."),
    db_url: Optional[str] = typer.Option(None, "--db-url", help="Store and checkpoint URL, e.g. postgresql+psycopg://"
                                         f"USER@HOST:PORT/DB (default: db_url, then ${DB_URL_ENV}, then SQLite in "
                                         "the run folder)."),
    quiet: bool = QUIET,
) -> None:
    """Start a run: corpus -> KB -> tests -> data -> train -> test -> debug -> retrain, until the goal."""
    from pwd_agent.config import load_config
    from pwd_agent.nodes.ingest import checked_scan
    from pwd_agent.evaluation.general import load_general
    from pwd_agent.runs import create_run
    from pwd_agent.preflight import check_run

    overrides = {"corpus.path": corpus, "loop.goal": goal, "run_id": run_id, "runs_dir": runs_dir, "db_url": db_url}
    cfg = load_config(config, set_, **overrides)
    if cfg.db_url is None and os.environ.get(DB_URL_ENV):  # the environment's store, when none is named
        cfg = load_config(config, set_, **{**overrides, "db_url": os.environ[DB_URL_ENV]})
    checked_scan(cfg.corpus)  # fail before a run folder exists (corpus.on_skip=error: on any skipped file)
    load_general(cfg.eval.general)
    check_run(cfg)  # trackers, backends, the student: before a run folder exists
    ctx = create_run(cfg)
    typer.echo(f"run {ctx.run_id} in {ctx.run_dir}  (follow: pwd-agent logs {ctx.run_id} -f)")
    _execute(ctx, resume=False, quiet=quiet)


@app.command()
def resume(
    run_id: str = typer.Argument(..., help="The run to continue."),
    set_: list[str] = typer.Option([], "--set", help="Change a setting for the rest of the run: a.b=value "
                                   "(loop, llm, builder, train, eval keys; recorded in the log). Repeatable."),
    runs_dir: str = RUNS_DIR,
    quiet: bool = QUIET,
) -> None:
    """Continue a stopped or killed run from its last finished step; finished work is not redone."""
    from pwd_agent.driver import record_changes
    from pwd_agent.runs import open_run, resume_config, run_lock

    ctx = open_run(run_id, runs_dir)
    with run_lock(ctx):  # the config is only rewritten by the process that will drive the run
        ctx, changes = resume_config(ctx, set_)
    record_changes(ctx, changes, "override on resume")
    _execute(ctx, resume=True, quiet=quiet)


@app.command()
def status(run_id: str = RUN_ID, runs_dir: str = RUNS_DIR) -> None:
    """KB counts, benchmark sizes, one row per round, the stop reason."""
    from pwd_agent.report.status import render_status
    from pwd_agent.runs import open_run

    typer.echo(render_status(open_run(run_id, runs_dir)))


@app.command()
def logs(
    run_id: str = RUN_ID,
    follow: bool = typer.Option(False, "-f", "--follow",
                                help="Keep printing new events until the run ends, pauses or dies."),
    level: str = typer.Option("info", "--level", help="Lowest level shown: debug, info, warning, error."),
    node: list[str] = typer.Option([], "--node",
                                   help="Only these nodes (repeatable), e.g. --node train --node evaluate."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per event (time, level, node, message, data)."),
    runs_dir: str = RUNS_DIR,
) -> None:
    """The agents' log (Event rows) of a run."""
    from pwd_agent.events import LEVELS
    from pwd_agent.report.status import event_json, event_shown, events_after, format_event
    from pwd_agent.runs import is_running, open_run
    from pwd_agent.runstate import read_run, state_text
    from pwd_agent.store import session_scope

    if level not in LEVELS:
        raise PwdAgentError(f"unknown level '{level}'", f"use one of {', '.join(LEVELS)}")
    ctx = open_run(run_id, runs_dir)
    last, ending = 0, False
    while True:
        fresh = events_after(ctx.db_url, last)
        for event in fresh:
            last = event.id
            if event_shown(event, level, node):
                typer.echo(event_json(event) if as_json else format_event(event))
        if not follow:
            return
        if ending:  # the events the process wrote before it let go of the run are printed: done
            with session_scope(ctx.db_url) as session:
                run = read_run(session, run_id)
            if run is None or run.status == "running":
                typer.echo(f"run {run_id} is {state_text(run, False)}; `pwd-agent resume {run_id}` continues it",
                           err=True)
            return
        # Follow while a process holds the run lock; one more read after it lets go.
        ending = not fresh and not is_running(ctx)
        if not ending:
            time.sleep(0.5)


@app.command("list")
def list_runs(
    runs_dir: str = RUNS_DIR,
    db_url: Optional[str] = typer.Option(None, "--db-url", help="Also list the runs this PostgreSQL database holds "
                                         f"whose folders are not under --runs-dir (default: ${DB_URL_ENV})."),
) -> None:
    """All runs with their state and best score on the goal split."""
    from pwd_agent.report.status import run_summary, runs_elsewhere
    from pwd_agent.runs import list_run_ids, open_run

    ids = list_run_ids(runs_dir)
    elsewhere = runs_elsewhere(db_url or os.environ.get(DB_URL_ENV), runs_dir, ids)
    if not ids and not elsewhere:
        typer.echo(f"no runs in {runs_dir}/ yet; start one with `pwd-agent run`")
        return
    typer.echo(f"{'run':<24} {'state':<14} best")
    for run_id in ids:
        rid, state, best = run_summary(open_run(run_id, runs_dir))
        typer.echo(f"{rid:<24} {state:<14} {best}")
    for run_id, state in elsewhere:
        typer.echo(f"{run_id:<24} {state:<14} - (in the database; its folder is not in {runs_dir}/)")


@app.command()
def review(
    run_id: str = RUN_ID,
    action: Optional[str] = typer.Argument(None, help="approve, reject or edit; none: show what waits."),
    edit_file: Optional[Path] = typer.Argument(None, help="With edit: the JSONL of patch samples to store instead."),
    reason: str = typer.Option("", "--reason", help="Why (with reject; recorded)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the waiting patch samples as JSONL, to edit."),
    runs_dir: str = RUNS_DIR,
    quiet: bool = QUIET,
) -> None:
    """What waits at a review gate, and the answer: approve, reject --reason, or edit FILE (patch gate)."""
    from pwd_agent.actions import check_answer, waiting_review
    from pwd_agent.gates import describe_patches, dump_patches, replace_patches
    from pwd_agent.runs import open_run

    ctx = open_run(run_id, runs_dir)
    waiting = waiting_review(ctx)
    name = waiting["gate"]
    if action is None:
        details = {k: v for k, v in waiting.items() if k != "gate"}
        typer.echo(f"run {run_id} waits at the {name} gate: {details}")
        if name == "on_patch":
            typer.echo(describe_patches(ctx, waiting["round"]))
            if out:
                typer.echo(f"{dump_patches(ctx, waiting['round'], out)} samples written to {out}; edit them, then "
                           f"`pwd-agent review {run_id} edit {out}`")
        return
    answer, edited = check_answer(ctx, waiting, action, reason, edit_file)
    if edited is not None:
        replace_patches(ctx, waiting["round"], edited)
    _execute(ctx, resume=True, quiet=quiet, answer=answer)


@app.command()
def pause(run_id: str = RUN_ID, runs_dir: str = RUNS_DIR) -> None:
    """Ask a running run to stop at its next node boundary (state saved; `resume` continues)."""
    from pwd_agent.actions import request_pause
    from pwd_agent.runs import open_run

    request_pause(open_run(run_id, runs_dir))
    typer.echo(f"pause requested: run {run_id} stops after its current node (a training or evaluation may take "
               f"minutes); then `pwd-agent resume {run_id}`")


@app.command("set")
def set_config(
    run_id: str = RUN_ID,
    assignments: list[str] = typer.Argument(..., help="a.b=value (JSON value), e.g. loop.goal=0.85"),
    runs_dir: str = RUNS_DIR,
) -> None:
    """Change goal, budgets or other loop/llm/train/eval settings of a run, running or not (logged)."""
    from pwd_agent.actions import set_values
    from pwd_agent.runs import open_run

    how, changes = set_values(open_run(run_id, runs_dir), assignments)
    if how == "unchanged":
        typer.echo("nothing changes: the run already has these values")
    elif how == "pending":
        typer.echo(f"run {run_id} is running: the change applies at its next node boundary "
                   f"(see `pwd-agent logs {run_id}`)")
    else:
        for key, old, new in changes:
            typer.echo(f"{key}: {old!r} -> {new!r}")


@app.command()
def blame(run_id: str = RUN_ID, item_id: int = typer.Argument(..., help="A test item id."),
          runs_dir: str = RUNS_DIR) -> None:
    """One item across rounds: predictions, diagnoses, the KB nodes blamed, the patches and whether they fixed it."""
    from pwd_agent.report.blame import render_blame
    from pwd_agent.runs import open_run

    typer.echo(render_blame(open_run(run_id, runs_dir), item_id))


@app.command()
def coverage(run_id: str = RUN_ID, runs_dir: str = RUNS_DIR) -> None:
    """Per chain: items, statements, concepts, probes, samples, pass rates; untaught and untested nodes."""
    from pwd_agent.report.blame import render_coverage
    from pwd_agent.runs import open_run

    typer.echo(render_coverage(open_run(run_id, runs_dir)))


@app.command()
def report(run_id: str = RUN_ID, runs_dir: str = RUNS_DIR) -> None:
    """runs/<id>/report.html (self-contained) and report/*.png: accuracy, diagnoses, flips, coverage, cost."""
    from pwd_agent.report.html import write_report
    from pwd_agent.runs import open_run

    for path in write_report(open_run(run_id, runs_dir)):
        typer.echo(str(path))


@app.command()
def export(
    run_id: str = RUN_ID,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default: runs/<id>/export)."),
    round_id: Optional[int] = typer.Option(None, "--round", help="Round whose training data and adapter to export "
                                           "(default: the last trained round)."),
    runs_dir: str = RUNS_DIR,
) -> None:
    """Benchmark as JSONL + lm-eval tasks, training data as chat messages / ShareGPT / Alpaca, `vllm serve` line."""
    from pwd_agent.export import export_run
    from pwd_agent.runs import open_run

    ctx = open_run(run_id, runs_dir)
    target = out or ctx.run_dir / "export"
    for path in export_run(ctx, target, round_id):
        typer.echo(str(path))


@app.command("config")
def show_config() -> None:
    """Every setting with its default and meaning (use them in run.yaml or with --set)."""
    from pwd_agent.config import describe_keys

    for key, default, text in describe_keys():
        typer.echo(f"{key:<32} {default:<28} {text}")


@app.command()
def ui(
    runs_dir: str = RUNS_DIR,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    read_only: bool = typer.Option(False, "--read-only", help="Refuse every write (pause, set, review, launch)."),
    db_url: Optional[str] = typer.Option(None, "--db-url", help="Also list the runs this PostgreSQL database holds "
                                         f"whose folders are not under --runs-dir (default: ${DB_URL_ENV})."),
) -> None:
    """A local web page to watch and steer runs; writes need the token it prints at start."""
    try:
        from pwd_agent.ui.app import serve
    except ImportError as exc:
        raise PwdAgentError(f"the web page needs the ui extra ({exc.name} is missing)",
                            "pip install 'pwd-agent[ui]'") from None
    serve(runs_dir, host, port, read_only, db_url or os.environ.get(DB_URL_ENV))


prompts_app = typer.Typer(help="The agents' prompt files.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("check")
def prompts_check(
    prompts_dir: Optional[Path] = typer.Option(None, "--dir", help="A prompts folder (default: the shipped one)."),
) -> None:
    """Render every prompt with fixture values; exit 2 if any fails."""
    from pwd_agent.prompting import PROMPTS_DIR, check_prompts

    results = check_prompts(prompts_dir or PROMPTS_DIR)
    if not results:
        raise PwdAgentError(f"no prompt files in {prompts_dir}", "point --dir at a copy of prompts/")
    for tag, verdict in results:
        typer.echo(f"ok   {tag}" if verdict == "ok" else f"FAIL {tag}: {verdict}")
    if any(v != "ok" for _, v in results):
        raise typer.Exit(EXIT_BAD_INPUT)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code in this mode
        sys.exit(code if isinstance(code, int) else 0)
    except PwdAgentError as exc:
        typer.echo(f"{getattr(exc, 'label', 'error')}: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors come here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(EXIT_BAD_INPUT)
        raise
