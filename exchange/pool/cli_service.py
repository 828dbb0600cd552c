"""``exchange pool …``: pool administration from the command line, on the configured database.

* ``exchange pool patents import FILE [--actor NAME]`` — validate every row,
  print every error of every row with its line number and column and import
  nothing, or import all in one transaction; progress goes to stderr.
* ``exchange pool expire [--today YYYY-MM-DD]`` — the expiry sweep as of a day
  (today by default; never a day still to come).

Both read ``DATABASE_URL`` (and the other settings) like the service, and apply
pending migrations first unless ``EXCHANGE_MIGRATE_ON_START=false``. Exit codes:
0 done, 1 refused (the errors are printed), 2 bad configuration or arguments, or a
database that cannot be reached or whose connection was lost midway (one line says why;
the command's one transaction is gone with it, so nothing was written).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import TextIO, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.cli import reach_database, read_settings
from exchange.db.base import utc_now
from exchange.db.engine import create_db_engine, create_sessionmaker
from exchange.db.migrate import upgrade_to_head
from exchange.kit.errors import ValidationFailed, error_line
from exchange.kit.text import text_refusal
from exchange.pool.import_service import ImportRefused, import_patents
from exchange.pool.models import ACTOR_LENGTH
from exchange.pool.patent_service import expire_due
from exchange.settings import Settings

T = TypeVar("T")
CLI_ACTOR_PREFIX = "cli:"


class ConnectionLost(Exception):
    """The database connection went away in the middle of a command's transaction."""


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``work`` in one transaction; a connection that drops meanwhile is ``ConnectionLost`` (the
    transaction is gone with it: nothing was written), any other error is the work's own."""
    engine = create_db_engine(settings)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise ConnectionLost(error_line(exc.orig or exc)) from exc
    finally:
        await engine.dispose()


def _lost(error: ConnectionLost, err: TextIO) -> int:
    print(
        f"error: lost the database connection: {error}; nothing was written (the transaction rolled back)",
        file=err,
    )
    return 2


def _prepare(err: TextIO) -> Settings | None:
    """The settings, once the database answers and is migrated; None once the reason is printed."""
    settings = read_settings(err)
    if settings is None or not asyncio.run(reach_database(settings.database_url, err)):
        return None
    if settings.migrate_on_start:
        upgrade_to_head(settings.database_url)
    return settings


def _refused_actor(actor: str) -> str | None:
    """Why ``actor`` cannot name the importer in the audit log (``cli:<actor>``), or None."""
    refusal = text_refusal(actor)
    if refusal is not None:
        return refusal
    if not actor.strip():
        return "name who imports"
    if len(CLI_ACTOR_PREFIX + actor) > ACTOR_LENGTH:
        return f"at most {ACTOR_LENGTH - len(CLI_ACTOR_PREFIX)} characters"
    return None


def import_file(path: Path, *, actor: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Import the patents of a CSV file; print what happened. Returns the exit code."""
    refused = _refused_actor(actor)
    if refused is not None:
        print(f"error: --actor: {refused}", file=err)
        return 2
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {path}: {exc}", file=err)
        return 2
    settings = _prepare(err)
    if settings is None:
        return 2

    def progress(message: str) -> None:
        print(f"  … {message}", file=err, flush=True)

    try:
        imported = asyncio.run(
            _in_transaction(
                settings,
                lambda session: import_patents(
                    session,
                    text,
                    actor=f"{CLI_ACTOR_PREFIX}{actor}",
                    at=utc_now(),
                    # As text the database stores: a name not in UTF-8 keeps its bytes escaped.
                    source_name=os.fsencode(path.name).decode("utf-8", "backslashreplace"),
                    progress=progress,
                ),
            )
        )
    except ConnectionLost as exc:
        return _lost(exc, err)
    except ImportRefused as exc:
        for error in exc.errors:
            print(f"{path}: {error}", file=err)
        print(f"error: {exc.detail}", file=err)
        return 1
    print(f"imported {len(imported)} patents from {path}", file=out)
    return 0


def expire(today: date | None, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the expiry sweep as of ``today``; print the retired patents. Returns the exit code."""
    settings = _prepare(err)
    if settings is None:
        return 2
    day = today or utc_now().date()
    try:
        retired = asyncio.run(_in_transaction(settings, lambda session: expire_due(session, today=day)))
    except ConnectionLost as exc:
        return _lost(exc, err)
    except ValidationFailed as exc:
        print(f"error: {exc.detail}", file=err)
        return 2
    for patent_id in retired:
        print(f"retired {patent_id} (expired)", file=out)
    print(f"{len(retired)} patent(s) retired as of {day.isoformat()}", file=out)
    return 0
