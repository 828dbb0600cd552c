"""Licensing's start-up hook: the tree cache, the indexer and its background loop.

Runs after the chain hook (it needs ``app.state.chain``). Everything it builds lives on
``app.state.licensing``; the loop is cancelled at shutdown. With
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

from exchange.chain.runtime import ChainRuntime
from exchange.db.session import app_sessionmaker
from exchange.kit.logging import get_logger
from exchange.licenses.indexer import DeviceIndexer
from exchange.licenses.resolver import TreeCache
from exchange.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True)
class Licensing:
    """Licensing's per-app parts."""

    runtime: ChainRuntime
    indexer: DeviceIndexer
    trees: TreeCache
    resolver_base: str


def licensing(request: Request) -> Licensing:
    state: Licensing = request.app.state.licensing
    return state


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
        app.state.licensing = Licensing(
            runtime=runtime,
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

    return hook
