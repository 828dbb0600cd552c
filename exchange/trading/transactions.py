"""Write transactions that take SQLite's write lock with their first statement.

In WAL mode SQLite refuses at once, without waiting for its busy timeout, to turn
a transaction that has already read into a writer when another connection
committed since that read (``SQLITE_BUSY_SNAPSHOT``, "database is locked"). The
indexer and the settler read before they write and run beside the market
writers, so their write transactions start with a no-op write: the lock is taken
(or waited for) first, and every read sees the latest state. PostgreSQL needs
nothing: its transactions are plain ``BEGIN``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@asynccontextmanager
async def write_transaction(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session in a transaction (committed on success) that holds SQLite's write lock from the start."""
    async with sessionmaker() as session, session.begin():
        if session.get_bind().dialect.name == "sqlite":
            await session.execute(text("UPDATE chain_cursors SET id = id WHERE 0 = 1"))
        yield session
