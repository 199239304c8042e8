"""Engine and session helpers for a run's store, plus stage completion markers."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import event, inspect, literal, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine, select

from pwd_agent.store import models, postgres
from pwd_agent.store.models import WorkUnit

_ENGINES: dict[str, Engine] = {}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets `status` and `logs -f` read while the run writes; busy_timeout rides out short locks.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process; tables are created (and upgraded) on first use."""
    if url not in _ENGINES:
        engine = _new_engine(url)
        try:
            migrate(engine, url)
        except OperationalError as exc:
            engine.dispose()
            if not postgres.is_postgres(url):
                raise
            raise postgres.unreachable(url, exc) from None
        _ENGINES[url] = engine
    return _ENGINES[url]


def _new_engine(url: str) -> Engine:
    if postgres.is_postgres(url):
        postgres.check_url(url)  # the driver is installed: a clear error, not an ImportError
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migrate(engine: Engine, url: str) -> None:
    """The one schema path of both back ends, in one transaction: the run's PostgreSQL schema, the
    missing tables, then the missing columns and indexes."""
    tables = [t.__table__ for t in _tables()]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            postgres.prepare_schema(conn, url)
        SQLModel.metadata.create_all(conn, tables=tables)
        add_missing_columns(conn, tables)
        for table in tables:  # create_all skips an existing table's new indexes; reads need them, not results
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def add_missing_columns(conn: Connection, tables: list) -> list[str]:
    """Additive migration: a column a newer pwd-agent added to a table (always nullable or with a
    default) is added to an older store, so a run started before an upgrade still opens and
    resumes. Renames and removals are never done here. Types, defaults and quoting are the
    connection's dialect's, so the same step runs on SQLite and PostgreSQL."""
    inspector = inspect(conn)
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    added = []
    for table in tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            kind = column.type.compile(dialect=dialect)
            default = column.default.arg if column.default is not None and column.default.is_scalar else None
            clause = f" DEFAULT {_literal(default, column.type, dialect)}" if default is not None else ""
            conn.execute(text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}{clause}"))
            added.append(f"{table.name}.{column.name}")
    return added


def _literal(value, kind, dialect) -> str:
    """A default as SQL text in the dialect (a bool is 1 in SQLite and true in PostgreSQL)."""
    return str(literal(value, kind).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _tables() -> list[type[SQLModel]]:
    return [obj for obj in vars(models).values()
            if isinstance(obj, type) and issubclass(obj, SQLModel) and hasattr(obj, "__table__")]


def dispose_engines() -> None:
    """Close every pooled connection (tests and long-lived processes)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def done_keys(session: Session, stage: str) -> set[str]:
    return set(session.exec(select(WorkUnit.key).where(WorkUnit.stage == stage)).all())


def units_to_do(session: Session, stage: str, query, key: Callable = lambda row: row.id) -> tuple[list, int]:
    """The rows of `query` (in its order) whose `stage` unit has not finished, and how many have: the
    opening every per-unit stage (extract, build_tests, synthesize) shares."""
    # A unit's marker is written with its rows (mark_done), so a resumed stage skips exactly what was stored.
    finished = done_keys(session, stage)
    return [row for row in session.exec(query).all() if str(key(row)) not in finished], len(finished)


def mark_done(session: Session, stage: str, key: str | int, error: str | None = None) -> None:
    """Record a finished unit (or, with `error`, a failed one); call it in the same transaction as
    the unit's rows."""
    session.add(WorkUnit(stage=stage, key=str(key), error=error))
