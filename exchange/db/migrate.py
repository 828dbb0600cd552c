"""Run the Alembic migrations from code, for service start-up and tests.

``alembic upgrade head`` (with ``alembic.ini`` at the repository root) does the
same from a shell. Both go through ``migrations/env.py``, which takes its
options from :func:`migration_context_options` so that autogenerate, the
migrations and the model-versus-migrations test compare the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.db.base import UTCDateTime
from exchange.kit.logging import get_logger
from exchange.settings import normalize_database_url

log = get_logger(__name__)

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parents[2] / "migrations"
# Key of the PostgreSQL advisory lock that serialises concurrent upgrades (processes starting together).
MIGRATION_LOCK_KEY = 0x65786368_6D696772  # "exchmigr"


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations must not import application types, which change over time: render
    # the column type the database actually gets.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def migration_context_options(dialect_name: str) -> dict[str, Any]:
    """Options for Alembic's ``MigrationContext`` on a connection of ``dialect_name``."""
    return {
        "compare_type": True,
        "render_item": _render_item,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        "render_as_batch": dialect_name == "sqlite",
        # Our SQLite engine emits BEGIN itself (exchange.db.engine), so DDL is transactional
        # there too: a failed migration leaves no half-built schema behind.
        "transactional_ddl": True,
    }


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url`` that leaves logging alone."""
    if not (MIGRATIONS_DIRECTORY / "env.py").is_file():
        raise RuntimeError(f"Alembic migrations not found at {MIGRATIONS_DIRECTORY}")
    config = Config()
    # Config values are ConfigParser strings, where "%" starts an interpolation.
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY).replace("%", "%%"))
    config.attributes["database_url"] = normalize_database_url(database_url)
    return config


def head_revision() -> str | None:
    """The newest migration's revision id."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIRECTORY).replace("%", "%%"))
    return ScriptDirectory.from_config(config).get_current_head()


def upgrade_to_head(database_url: str) -> None:
    """Apply all pending migrations to ``database_url``.

    Synchronous, and runs its own event loop: call it from plain code or a
    worker thread, never from a coroutine (use :func:`upgrade_to_head_async`).
    """
    command.upgrade(alembic_config(database_url), "head")
    log.info("db.migrated", revision=head_revision())


async def upgrade_to_head_async(database_url: str) -> None:
    """:func:`upgrade_to_head` in a worker thread, for use inside an event loop."""
    await asyncio.to_thread(upgrade_to_head, database_url)


class SchemaNotReady(RuntimeError):
    """The database has no schema yet, or not this version's: a process that never migrates
    (the resolver alone, ``exchange settle``, ``exchange audit``) refuses to work on it."""


def _schema_revisions(connection: Connection) -> set[str]:
    """The Alembic revisions the database is at; none when it was never migrated."""
    return set(MigrationContext.configure(connection).get_current_heads())


async def check_schema(engine: AsyncEngine) -> None:
    """``SchemaNotReady`` unless ``engine``'s database is at this version's schema."""
    async with engine.connect() as connection:
        found = await connection.run_sync(_schema_revisions)
    head = head_revision()
    if not found:
        raise SchemaNotReady("the database has no schema yet: start `exchange serve` on it first")
    if found != {head}:
        raise SchemaNotReady(
            f"the database's schema is at revision {', '.join(sorted(found))}, this version's is "
            f"{head}: start this version's `exchange serve` on it first (it migrates the database), "
            "or run the command of the version that migrated it"
        )
