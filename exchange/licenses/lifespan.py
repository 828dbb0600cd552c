"""Licensing's start-up hooks: the resolver (its reads, its tree cache), the indexer and its loop.

``licensing_startup`` is the full service's hook. It runs after the chain hook (it needs
``app.state.chain``), keeps its parts on ``app.state.licensing`` and the resolver on
``app.state.resolver``; the loop is cancelled and the resolver's pool closed at shutdown.

``resolver_startup`` is the hook of the resolver-only app (``exchange licence resolver``): no
chain, no indexer, no writer, only the resolver on ``app.state.resolver``, for the registry of
the deployment manifest (``deployment_manifest``) or, without one, the registry whose indexer
cursor the service moved last. Any number of such processes can serve beside the service. It
never migrates: on a database without this version's schema (no service started on it yet, or
one of another version) it refuses to start, with or without a manifest.

The resolver reads through a pool of its own on PostgreSQL: ``licence_read_database_url``
(a read replica; default the service's database), an asyncpg pool of up to
``licence_read_pool_size`` connections in autocommit mode, which closes connections idle for
five minutes. On SQLite the resolver shares the app's engine. With
``licence_indexer_interval_s = 0`` no loop runs and the indexer catches up only when asked
(``await app.state.licensing.indexer.catch_up()``), which tools and tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import asyncpg
from fastapi import FastAPI, Request
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from exchange.chain.deployment import Deployment
from exchange.chain.runtime import ChainRuntime
from exchange.db.engine import create_db_engine, create_engine_for_url
from exchange.db.migrate import check_schema
from exchange.db.session import app_engine, app_sessionmaker
from exchange.kit.logging import get_logger
from exchange.licenses import repository
from exchange.licenses.indexer import DeviceIndexer, registry_of
from exchange.licenses.repository import AsyncpgReads, DeviceReads, EngineReads, Registry
from exchange.licenses.resolver import Resolver, TreeCache
from exchange.settings import Settings, normalize_database_url

log = get_logger(__name__)


@dataclass(frozen=True)
class Licensing:
    """Licensing's per-app parts."""

    runtime: ChainRuntime
    indexer: DeviceIndexer
    resolver: Resolver
    resolver_base: str


async def licensing(request: Request) -> Licensing:
    state: Licensing = request.app.state.licensing
    return state


async def resolver_of(request: Request) -> Resolver:
    resolver: Resolver = request.app.state.resolver
    return resolver


async def _leave_as_is(_connection: asyncpg.Connection) -> None:
    return None


@asynccontextmanager
async def _resolver_reads(settings: Settings, app_engine: AsyncEngine) -> AsyncIterator[DeviceReads]:
    """The resolver's reads: an asyncpg pool of its own on PostgreSQL, else an engine.

    On SQLite the app's engine, unless ``licence_read_database_url`` names another database.
    """
    url = make_url(normalize_database_url(settings.licence_read_database_url or settings.database_url))
    if url.get_backend_name() == "sqlite":
        if settings.licence_read_database_url is None:
            yield EngineReads(app_engine)
            return
        engine = create_engine_for_url(str(url.render_as_string(hide_password=False)))
        try:
            yield EngineReads(engine)
        finally:
            await engine.dispose()
        return
    pool = await asyncpg.create_pool(
        url.set(drivername="postgresql").render_as_string(hide_password=False),
        min_size=1,
        max_size=settings.licence_read_pool_size,
        # Connections idle this long are closed, so a pool sized for a burst does not hold them.
        max_inactive_connection_lifetime=300,
        # The resolver's statements leave no session state (no SET, LISTEN, advisory lock or
        # open transaction), so a connection goes back as it is: asyncpg's default reset is a
        # second round trip per query.
        reset=_leave_as_is,
    )
    try:
        yield AsyncpgReads(pool)
    finally:
        await pool.close()


def _tree_cache(settings: Settings) -> TreeCache:
    return TreeCache(settings.licence_tree_cache_mib * 2**20)


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
        async with _resolver_reads(settings, app_engine(app)) as reads:
            resolver = Resolver(registry_of(runtime), reads, _tree_cache(settings))
            app.state.resolver = resolver
            app.state.licensing = Licensing(
                runtime=runtime,
                indexer=indexer,
                resolver=resolver,
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


class NoRegistry(RuntimeError):
    """The resolver-only app has no registry to answer for: it refuses to start."""


async def _served_registry(settings: Settings, engine: AsyncEngine) -> Registry:
    await check_schema(engine)
    if settings.deployment_manifest is not None:
        deployment = Deployment.read(settings.deployment_manifest)
        return Registry(deployment.chain_id, deployment.address("DeviceLicenses"))
    async with engine.connect() as connection:
        registry = await repository.latest_indexed_registry(connection)
    if registry is None:
        raise NoRegistry(
            "no deployment manifest and no indexed registry in the database: "
            "start the service (its indexer) first, or name the manifest"
        )
    return registry


async def check_served_registry(settings: Settings) -> Registry:
    """The registry a resolver-only app would serve; ``NoRegistry`` when there is none yet,
    ``SchemaNotReady`` when the database has no schema, or another version's."""
    engine = create_db_engine(settings)
    try:
        return await _served_registry(settings, engine)
    finally:
        await engine.dispose()


def resolver_startup() -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The resolver-only app's hook: the resolver, and nothing that writes."""

    @asynccontextmanager
    async def hook(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        registry = await _served_registry(settings, app_engine(app))
        async with _resolver_reads(settings, app_engine(app)) as reads:
            app.state.resolver = Resolver(registry, reads, _tree_cache(settings))
            log.info("licence.resolver_started", registry=registry.address, chain_id=registry.chain_id)
            yield

    return hook
