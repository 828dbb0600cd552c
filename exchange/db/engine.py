"""Async engine and session factory for the configured database.

SQLite is set up to behave like a real transactional database:

* WAL journal, so readers do not block the writer;
* foreign keys enforced (SQLite leaves them off by default);
* a busy timeout instead of failing at once when another connection writes;
* every transaction begins IMMEDIATE, taking the write lock up front: a
  deferred transaction that read first and then writes cannot wait for the
  lock (SQLite fails it at once to avoid a deadlock), which the service's
  concurrent background tasks would otherwise hit. SQLite is the embedded,
  single-process default, where serialising writers costs little;
* BEGIN emitted by SQLAlchemy, not by the sqlite3 driver, whose legacy mode
  starts no transaction for SELECT or DDL and so breaks SAVEPOINTs and
  transactional migrations (see SQLAlchemy's "Transactions with SQLite").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from exchange.settings import Settings, normalize_database_url

SQLITE_BUSY_TIMEOUT_MS = 15_000


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite ``database_url``; None for another database, or one in memory."""
    url = make_url(normalize_database_url(database_url))
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    if url.database == ":memory:" or url.database.startswith("file:"):
        return None
    return Path(url.database)


def create_engine_for_url(database_url: str, *, for_migrations: bool = False) -> AsyncEngine:
    """Create an async engine for ``database_url`` (normalised to asyncpg or aiosqlite).

    ``for_migrations=True`` changes one thing on SQLite. Foreign keys are not
    enforced while migrating, because batch mode rebuilds tables, which enforced
    keys would turn into cascades or failures (``migrations/env.py`` checks them
    before committing).
    """
    url = make_url(normalize_database_url(database_url))
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)

    database_file = sqlite_file(database_url)
    if database_file is not None:
        database_file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure_sqlite_connection(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver; the "begin" listener emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA foreign_keys={'OFF' if for_migrations else 'ON'}")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_sqlite_transaction(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_db_engine(settings: Settings) -> AsyncEngine:
    """The engine for ``settings.database_url``."""
    return create_engine_for_url(settings.database_url)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (the response is built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)
