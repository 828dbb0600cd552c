"""One transaction per request: the FastAPI dependency that owns commit and rollback.

Route handlers and services receive the session through ``DbSession``, run
their queries and ``flush()`` to surface constraint errors early; they never
commit. When the handler returns, the dependency commits once, before the
response is sent (``scope="function"``), so a failed commit becomes an error
response instead of a success the client was already told about. When the
handler raises, the transaction is rolled back and the error propagates to the
problem handlers.

Any other dependency that needs the database must take ``DbSession`` too, so
the whole request shares one session and one transaction.

The exception: a route that reads the chain between its writes keeps no request
transaction, because one would stay open through the chain's answers (on SQLite
every transaction holds the write lock from its start, so a slow node would stall
every writer of the service; on PostgreSQL it would hold a pooled connection). Such
a route takes ``CurrentPrincipalAlone`` (``exchange.auth.dependencies``), which
resolves the caller in a short transaction of its own, and no ``DbSession``; its
use case takes the session factory and commits its own short transactions, none
open while the chain is read (the device uploads and withdrawals of
``exchange.licenses.batches`` and ``pending_uploads``, a member's licence transactions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


def app_sessionmaker(app: FastAPI) -> async_sessionmaker[AsyncSession]:
    """The session factory the app's lifespan created (``app.state.db_sessionmaker``)."""
    sessionmaker: async_sessionmaker[AsyncSession] | None = getattr(app.state, "db_sessionmaker", None)
    if sessionmaker is None:
        raise RuntimeError("the database is not set up: is the app's lifespan running?")
    return sessionmaker


def app_engine(app: FastAPI) -> AsyncEngine:
    """The engine the app's lifespan created (``app.state.db_engine``)."""
    engine: AsyncEngine | None = getattr(app.state, "db_engine", None)
    if engine is None:
        raise RuntimeError("the database is not set up: is the app's lifespan running?")
    return engine


async def request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Yield the request's session; commit after a successful handler, roll back otherwise."""
    async with app_sessionmaker(request.app)() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


DbSession = Annotated[AsyncSession, Depends(request_session, scope="function")]
