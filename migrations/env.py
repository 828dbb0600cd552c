"""Alembic environment: async engine, URL from the service settings.

Run by ``alembic`` on the command line and by ``exchange.db.migrate`` in code;
the latter passes the URL in ``config.attributes["database_url"]`` and keeps the
process's logging configuration.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

import exchange.db.models  # noqa: F401  (registers every table on Base.metadata)
from exchange.db.base import Base
from exchange.db.engine import create_engine_for_url
from exchange.db.migrate import MIGRATION_LOCK_KEY, migration_context_options
from exchange.settings import get_settings, normalize_database_url

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if isinstance(url, str) and url:
        return normalize_database_url(url)
    return get_settings().database_url


def run_migrations_offline() -> None:
    """Write the migration SQL to stdout (``alembic upgrade head --sql``)."""
    url = _database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **migration_context_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_migrations(connection: Connection) -> None:
    dialect_name = connection.dialect.name
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **migration_context_options(dialect_name),
    )
    with context.begin_transaction():
        if dialect_name == "postgresql":
            # Processes starting together: the second waits, then finds nothing left to do.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()
        if dialect_name == "sqlite":
            # Foreign keys were not enforced while migrating (batch mode); check before committing.
            violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if violations:
                raise RuntimeError(f"migration left foreign key violations: {violations[:10]}")


async def _run_migrations_online() -> None:
    engine = create_engine_for_url(_database_url(), for_migrations=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_migrations_online())
