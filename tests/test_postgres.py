"""PostgreSQL as the store and checkpointer, on a real server the session starts (conftest.pg_url):
a schema per run, the additive migration, the saver, the lock in the database, kill -9 and resume."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import select

from pwd_agent.config import RunConfig
from pwd_agent.context import RunContext
from pwd_agent.runs import context_for, is_running, open_run, run_lock
from pwd_agent.store import Event, LLMCall, Round, Run, dispose_engines, get_engine, session_scope
from pwd_agent.store.postgres import schema_name

from conftest import cli, main_here
from pg_server import free_port


def pg_context(pg_url: str, run_id: str) -> RunContext:
    run_dir = Path("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return context_for(RunConfig(run_id=run_id, db_url=pg_url), run_dir)


def test_each_run_has_its_own_schema_and_the_queries_stay_unqualified(pg_url):
    one, two = pg_context(pg_url, "rt-one"), pg_context(pg_url, "rt.two")
    for ctx, n in ((one, 1), (two, 2)):
        with session_scope(ctx.db_url) as s:
            s.add_all(Event(node="run", message=f"event {k} of {ctx.run_id}") for k in range(n))
            s.add(Run(run_id=ctx.run_id, status="running"))
    with session_scope(one.db_url) as s:
        assert [e.message for e in s.exec(select(Event)).all()] == ["event 0 of rt-one"]
        assert s.get(Run, "rt-one").status == "running" and s.get(Run, "rt.two") is None
    with session_scope(two.db_url) as s:
        assert len(s.exec(select(Event)).all()) == 2
    with get_engine(one.db_url).connect() as conn:
        schemas = set(conn.execute(text("SELECT schemaname FROM pg_tables WHERE tablename = 'event'")).scalars())
    assert schemas == {schema_name("rt-one"), schema_name("rt.two")}  # nothing in public
    assert not any(Path("runs", r, name).exists() for r in ("rt-one", "rt.two") for name in ("run.db", ".lock"))


def test_a_column_added_by_a_newer_version_is_added_to_an_old_postgres_store(pg_url):
    ctx = pg_context(pg_url, "migrated")
    with session_scope(ctx.db_url) as s:
        s.add(LLMCall(agent="extractor", prompt_name="p", prompt_version="1", prompt_hash="h", model="m"))
        s.add(Round(id=0, status="evaluated"))
    with get_engine(ctx.db_url).begin() as conn:  # make it look like a store from before these columns existed
        conn.execute(text("ALTER TABLE llmcall DROP COLUMN error"))
        conn.execute(text("ALTER TABLE itemresult DROP COLUMN scorer"))
        conn.execute(text("ALTER TABLE llmcall DROP COLUMN cache_hit"))
    dispose_engines()

    with session_scope(ctx.db_url) as s:
        [call] = s.exec(select(LLMCall)).all()
        assert call.error is None and call.agent == "extractor" and call.cache_hit is False
    with get_engine(ctx.db_url).connect() as conn:
        defaults = dict(conn.execute(text(
            "SELECT column_name, column_default FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name IN ('scorer', 'cache_hit')")).all())
    assert defaults == {"scorer": "'letters'::character varying", "cache_hit": "false"}


def test_the_checkpointer_keeps_a_runs_state_in_its_schema(pg_url):
    from langgraph.checkpoint.base import empty_checkpoint

    from pwd_agent.driver import checkpointer, thread

    ctx = pg_context(pg_url, "saved")
    config = {"configurable": {"thread_id": ctx.run_id, "checkpoint_ns": ""}}
    with checkpointer(ctx) as saver:
        assert type(saver).__name__ == "PostgresSaver"
        saver.put(config, {**empty_checkpoint(), "channel_values": {"round": 2}}, {"step": 1}, {})
    with checkpointer(ctx) as saver:  # a new connection, as a resuming process has
        assert saver.get_tuple(thread(ctx)).checkpoint["channel_values"] == {"round": 2}
    with checkpointer(pg_context(pg_url, "other")) as saver:
        assert saver.get_tuple(thread(ctx)) is None  # the same thread id in another run's schema: nothing
    assert not Path("runs/saved/checkpoints.sqlite").exists()


def hold_lock(pg_url: str, run_id: str) -> subprocess.Popen:
    """Another process that takes the run lock, says so, and waits to be killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pwd_agent.config import RunConfig
        from pwd_agent.runs import context_for, run_lock
        with run_lock(context_for(RunConfig(run_id={run_id!r}, db_url={pg_url!r}), Path("runs/{run_id}"))):
            print("locked", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_run_lock_is_in_the_database_and_dies_with_its_process(pg_url):
    ctx = pg_context(pg_url, "locked")
    holder = hold_lock(pg_url, "locked")
    assert is_running(ctx)
    with pytest.raises(Exception, match="is being driven by another process"):
        with run_lock(ctx):
            pass
    with run_lock(pg_context(pg_url, "free")):  # another run in the same database is not held up
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    deadline = time.time() + 10  # the server drops the session, and its lock, when the socket closes
    while is_running(ctx):
        assert time.time() < deadline, "the killed process's lock outlived it"
        time.sleep(0.1)
    with run_lock(ctx):
        assert is_running(ctx)  # held by this process now: a second session is refused
    assert not Path("runs/locked/.lock").exists()


def test_clear_errors_before_a_run_folder_exists(pg_url, small_corpus, monkeypatch, capsys):
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/postgres"
    result = main_here(monkeypatch, capsys, "run", "--corpus", str(small_corpus), "--db-url", down)
    assert result.returncode == 2 and "cannot reach the PostgreSQL store" in result.stderr
    assert "start the server or fix db_url" in result.stderr

    secret = pg_url.replace("postgres@", "postgres:hunter2@")
    result = main_here(monkeypatch, capsys, "run", "--corpus", str(small_corpus), "--db-url", secret)
    assert result.returncode == 2 and "PGPASSWORD" in result.stderr

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    result = main_here(monkeypatch, capsys, "run", "--corpus", str(small_corpus), "--db-url", pg_url)
    assert result.returncode == 2 and "psycopg is not installed" in result.stderr
    assert "pip install 'pwd-agent[postgres]'" in result.stderr
    assert not Path("runs").exists()

    from pwd_agent.config import save_config

    Path("runs/elsewhere").mkdir(parents=True)  # a PostgreSQL run resumed where the extra is missing
    save_config(RunConfig(run_id="elsewhere", db_url=pg_url), Path("runs/elsewhere/config.yaml"))
    result = main_here(monkeypatch, capsys, "resume", "elsewhere")
    assert result.returncode == 2 and "psycopg is not installed" in result.stderr


def test_list_shows_the_runs_of_the_database_whose_folders_are_elsewhere(pg_url):
    from pwd_agent.runstate import mark_ended

    ctx = pg_context(pg_url, "far-away")  # a run driven from another machine's run folder
    mark_ended(ctx.db_url, ctx.run_id, "finished", stop_reason="goal")
    result = cli("list", "--runs-dir", "nowhere", "--db-url", pg_url)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("far-away "))
    assert "finished (goal)" in line and "its folder is not in nowhere/" in line
    assert not Path("nowhere").exists()


def test_the_web_page_lists_them_too_unlinked(pg_url, tmp_path):
    """`pwd-agent ui --db-url` lists a database's runs whose folders are elsewhere, with their state;
    their pages need the folder, so they are not linked."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from pwd_agent.runstate import mark_ended
    from pwd_agent.ui.app import create_app

    ctx = pg_context(pg_url, "far-page")
    mark_ended(ctx.db_url, ctx.run_id, "finished", stop_reason="max_rounds")
    empty = tmp_path / "here"
    page = TestClient(create_app(str(empty), db_url=pg_url)).get("/")
    assert page.status_code == 200
    row = next(line for line in page.text.split("<tr") if "far-page" in line)
    assert "finished (max_rounds)" in row and f"its folder is not in {empty}/" in row
    assert 'href="/runs/far-page"' not in row
    assert "far-page" not in TestClient(create_app(str(empty))).get("/").text  # no database named: folders only


@pytest.mark.slow
@pytest.mark.extended  # ~70 s: the default run keeps test_loop's kill mid-training and the store/lock tests above
def test_two_runs_in_one_database_kill_and_resume_elsewhere_redo_nothing(tiny_model, small_corpus, pg_url,
                                                                         monkeypatch):
    """An uninterrupted run and a run SIGKILLed mid-extract, moved to another folder (another machine that
    sees the same database and the run folder), SIGKILLed mid-training there and resumed: the stores are
    equal and no agent unit was asked twice; while a process drives the run a second is refused; `list`
    shows both runs; the run folders hold files only. The URL comes from the environment."""
    from test_loop import last_event_before_resuming_at, store_content, tiny_args

    monkeypatch.setenv("PWD_AGENT_DB_URL", pg_url)
    args = ["--goal", "0.99", "--set", "loop.max_rounds=1", "--set", "eval.general=none"]
    reference = cli(*tiny_args(tiny_model, small_corpus, "whole", *args))
    assert reference.returncode == 3, reference.stderr
    whole = store_content("whole")

    command = tiny_args(tiny_model, small_corpus, "cut", *args)
    for point in ("extract:3", "train:3"):
        env = {**os.environ, "PWD_AGENT_KILL_AT": point}
        died = subprocess.run([sys.executable, "-m", "pwd_agent", *command], env=env, capture_output=True,
                              text=True, timeout=300)
        assert died.returncode == -signal.SIGKILL, (point, died.returncode, died.stderr[-2000:])
        command = ["resume", "cut", "-q"]
        if point.startswith("extract"):  # the rest happens "elsewhere": only the database and the folder are shared
            Path("elsewhere/runs").mkdir(parents=True)
            shutil.move("runs/cut", "elsewhere/runs/cut")
            monkeypatch.chdir("elsewhere")
    driving = subprocess.Popen([sys.executable, "-m", "pwd_agent", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not is_running(open_run("cut")):
        assert time.time() < deadline and driving.poll() is None, "the resume never took the run"
        time.sleep(0.05)
    second = cli("resume", "cut")
    assert second.returncode == 2 and "is being driven by another process" in second.stderr
    _, err = driving.communicate(timeout=300)
    assert driving.returncode == 3, err

    cut = store_content("cut")
    for table in whole:
        assert cut[table] == whole[table], table
    assert len(cut["calls"]) == len(set(cut["calls"]))  # the ledger: no unit recorded twice
    with session_scope(open_run("cut").db_url) as s:
        events = s.exec(select(Event).order_by(Event.id)).all()
    assert sum(e.message.startswith("resuming run") for e in events) == 2
    landed = last_event_before_resuming_at(events, "extract")
    assert 0 < landed.data["done"] < landed.data["total"], landed.message  # the kill struck inside the stage

    lines = cli("list").stdout.splitlines()
    assert next(line for line in lines if line.startswith("cut ")).split()[1:3] == ["finished", "(max_rounds)"]
    assert "finished (max_rounds)" in next(line for line in lines if line.startswith("whole "))
    assert "its folder is not in runs/" in next(line for line in lines if line.startswith("whole "))
    for folder in (Path("runs/cut"), Path("../runs/whole")):
        assert open_run(folder.name, str(folder.parent)).config.db_url == pg_url  # saved with the run
        files = {p.name for p in folder.iterdir()}
        assert "config.yaml" in files and not files & {"run.db", "run.db-wal", "checkpoints.sqlite", ".lock"}
