"""PostgreSQL as a run's store and checkpointer: one schema per run, a driver check and the run lock."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from contextlib import contextmanager
from typing import Iterator

from pwd_agent.errors import ConfigError, RunLockedError, StoreError

INSTALL = "pip install 'pwd-agent[postgres]'"
# The modules `db_url: postgresql...` needs: the driver, and LangGraph's Postgres saver.
MODULES = {"psycopg": "psycopg", "langgraph.checkpoint.postgres": "langgraph-checkpoint-postgres"}
SCHEMA_PREFIX = "run_"


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def check_url(url: str) -> None:
    """Refuse, up front, a store URL this build cannot open: no driver installed, a password written in
    it (config.yaml keeps no secrets: libpq reads $PGPASSWORD and ~/.pgpass), or another driver."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.password:
        raise ConfigError("db_url holds a password, and the URL is saved in the run's config.yaml",
                          "drop it from the URL and set PGPASSWORD (or a ~/.pgpass line) instead")
    if parsed.drivername not in ("postgresql", "postgresql+psycopg", "postgres"):
        raise ConfigError(f"db_url driver '{parsed.drivername}' is not supported",
                          "use postgresql+psycopg://USER@HOST:PORT/DATABASE")
    missing = [package for module, package in MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise StoreError(f"db_url is a PostgreSQL URL, but {', '.join(missing)} is not installed",
                         f"{INSTALL}, or leave db_url out for the SQLite store in the run folder")


def schema_name(run_id: str) -> str:
    """The run's schema: readable, and unique per run id (the hash keeps `a.b` and `a_b` apart)."""
    slug = re.sub(r"[^a-z0-9_]", "_", run_id.lower())[:40]
    return f"{SCHEMA_PREFIX}{slug}_{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def run_url(base_url: str, run_id: str) -> str:
    """The run's own URL: the base URL whose connections see only the run's schema (search_path), so
    every query of the store, and the checkpointer's, stays unqualified and unchanged."""
    from sqlalchemy.engine import make_url

    parsed = make_url(base_url).set(drivername="postgresql+psycopg")
    options = parsed.query.get("options", "")
    # UTC: timestamps are stored without a zone, as in SQLite, whatever the server's TimeZone.
    ours = f"-csearch_path={schema_name(run_id)} -ctimezone=UTC"
    parsed = parsed.update_query_dict({"options": f"{options} {ours}".strip()})
    return parsed.render_as_string(hide_password=False)


def schema_of(url: str) -> str | None:
    match = re.search(r"search_path(?:=|%3D)(\w+)", url)
    return match.group(1) if match else None


def libpq_args(url: str) -> tuple[str, dict]:
    """The same URL for psycopg itself: a conninfo URI without the SQLAlchemy driver suffix, and its
    query (options, sslmode, ...) as keywords (libpq would read a '+' in the query as a plus, not a space)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conninfo = parsed.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    return conninfo, dict(parsed.query)


def unreachable(url: str, exc: Exception) -> StoreError:
    from sqlalchemy.engine import make_url

    where = make_url(url).set(query={}).render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return StoreError(f"cannot reach the PostgreSQL store {where}: {reason}",
                      "start the server or fix db_url (host, port, user, database); "
                      "a password goes in PGPASSWORD or ~/.pgpass")


def connect(url: str, **kwargs):
    """A psycopg connection to the run's schema; an unreachable server is a StoreError (exit 2)."""
    check_url(url)  # e.g. `resume` of a PostgreSQL run where the extra is not installed
    import psycopg

    conninfo, query = libpq_args(url)
    try:
        return psycopg.connect(conninfo, **query, **kwargs)
    except psycopg.OperationalError as exc:
        raise unreachable(url, exc) from None


def prepare_schema(conn, url: str) -> None:
    """Create the run's schema, inside the caller's transaction, under a transaction-level advisory lock:
    two processes opening a new run at once (a `status` beside the `run`) do not race to create it."""
    from sqlalchemy import text

    schema = schema_of(url)
    if schema is None:
        return  # a URL without a run schema: its tables go where its search_path says
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key("schema " + schema)})
    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for a name."""
    return int.from_bytes(hashlib.sha256(f"pwd-agent {name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def run_lock(url: str, run_id: str) -> Iterator[None]:
    """Session-level advisory lock on the run id, held by a connection of its own for as long as the
    process drives the run: the server drops it when that connection dies, so a killed process (on any
    machine) leaves no stale lock."""
    conn = connect(url, autocommit=True)
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key("run " + run_id),)).fetchone()[0]
        if not got:
            raise RunLockedError(f"run {run_id} is being driven by another process",
                                 f"wait for it, or stop it, then `pwd-agent resume {run_id}`")
        yield
    finally:
        conn.close()  # closing the session releases its advisory lock


@contextmanager
def checkpointer(url: str) -> Iterator[object]:
    """LangGraph's PostgresSaver on the run's schema (its tables set up on first use); the schema
    must exist (the store's engine makes it)."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    # The settings PostgresSaver.from_conn_string uses: setup() creates indexes CONCURRENTLY (autocommit).
    conn = connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    try:
        saver = PostgresSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()


def stored_run_ids(base_url: str) -> list[str]:
    """The runs a database holds (the Run row of each run schema), for `list`."""
    conn = connect(base_url, autocommit=True)
    try:
        schemas = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                               (SCHEMA_PREFIX.replace("_", r"\_") + "%",)).fetchall()
        ids = []
        for (schema,) in schemas:
            if conn.execute("SELECT to_regclass(%s)", (f'"{schema}".run',)).fetchone()[0] is not None:
                ids += [row[0] for row in conn.execute(f'SELECT run_id FROM "{schema}".run').fetchall()]
        return sorted(ids)
    finally:
        conn.close()
