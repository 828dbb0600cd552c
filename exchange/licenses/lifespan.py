"""Licensing's start-up hook: the resolver's database engine, the tree cache, the indexer and its loop.

Runs after the chain hook (it needs ``app.state.chain``). Everything it builds lives on
``app.state.licensing``; the loop is cancelled and the engine disposed at shutdown.

The resolver reads through an engine of its own on PostgreSQL: ``licence_read_database_url``
(a read replica; default the service's database) with a pool sized for query load, in
autocommit mode and with no ping before each checkout: each would add a round trip to
every query. A connection
the server dropped fails one query and is discarded; ``pool_recycle`` renews the rest. On
SQLite the resolver shares the app's engine. With
``licence_indexer_interval_s = 0`` no loop runs and the indexer catches up only when asked
(``await app.state.licensing.indexer.catch_up()``), which tools and tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from exchange.chain.runtime import ChainRuntime
from exchange.db.engine import create_engine_for_url
from exchange.db.session import app_engine, app_sessionmaker
from exchange.kit.logging import get_logger
from exchange.licenses.indexer import DeviceIndexer
from exchange.licenses.resolver import TreeCache
from exchange.settings import Settings, normalize_database_url

log = get_logger(__name__)


@dataclass(frozen=True)
class Licensing:
    """Licensing's per-app parts."""

    runtime: ChainRuntime
    read_engine: AsyncEngine
    indexer: DeviceIndexer
    trees: TreeCache
    resolver_base: str


async def licensing(request: Request) -> Licensing:
    state: Licensing = request.app.state.licensing
    return state


def _read_engine(settings: Settings, app_engine: AsyncEngine) -> tuple[AsyncEngine, bool]:
    """The resolver's engine, and whether it is its own (to dispose of)."""
    url = make_url(normalize_database_url(settings.licence_read_database_url or settings.database_url))
    if url.get_backend_name() == "sqlite":
        if settings.licence_read_database_url is None:
            return app_engine, False
        return create_engine_for_url(str(url.render_as_string(hide_password=False))), True
    size = settings.licence_read_pool_size
    # Autocommit: a lookup is one statement, its own snapshot; no BEGIN before it and no ROLLBACK
    # when the connection goes back to the pool, which would be two more round trips per query.
    engine = create_async_engine(
        url,
        pool_size=size,
        # No overflow: a connection opened above the pool size is closed again on return, and
        # under steady load that churn (connect, authenticate, close) costs more than waiting.
        max_overflow=0,
        pool_recycle=300,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
    )
    return engine, True


def licensing_startup() -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def hook(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        runtime: ChainRuntime = app.state.chain
        indexer = DeviceIndexer(
            runtime,
            app_sessionmaker(app),
            confirmations=settings.licence_indexer_confirmations,
            max_blocks=settings.licence_indexer_max_blocks,
        )
        read_engine, own_engine = _read_engine(settings, app_engine(app))
        app.state.licensing = Licensing(
            runtime=runtime,
            read_engine=read_engine,
            indexer=indexer,
            trees=TreeCache(settings.licence_tree_cache_mib * 2**20),
            resolver_base=settings.licence_resolver_base or f"http://{settings.host}:{settings.port}",
        )
        task = None
        if settings.licence_indexer_interval_s > 0:
            task = asyncio.create_task(
                indexer.run(settings.licence_indexer_interval_s), name="licence-indexer"
            )
            log.info("licence.indexer_started", registry=indexer.registry.address)
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if own_engine:
                await read_engine.dispose()

    return hook
