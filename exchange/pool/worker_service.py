"""The pool's start-up hook and background loops.

At start-up, after the chain hook: build the :class:`~exchange.pool.service.PoolContext`
(``app.state.pool``), grant the roles the settings name, bring the indexer up to
the chain head, retire the patents that expired while the service was down, and
reconcile mints interrupted by a stop. Then two loops run until shutdown:

* every ``EXCHANGE_POOL_INDEXER_INTERVAL_S``: index new registry and fund events,
  and send or reconcile open contribution mints;
* shortly after every UTC midnight (at the latest every
  ``EXCHANGE_POOL_EXPIRY_SWEEP_INTERVAL_S``): the expiry sweep.

Both resume from what the database holds (cursors, mint states), so a restart —
or a second process — picks up where the last one stopped. A failing pass is
logged and retried on the next tick; it never stops the loop.

An indexer pass (:func:`index_once`) reads the chain with no database transaction
open (:meth:`~exchange.pool.indexer.PoolIndexer.catch_up_between_transactions`):
on SQLite a transaction holds the write lock from its start, so one open while the
node answers would stall every other writer of the service, the trading writer's
too; on PostgreSQL it would hold a pooled connection idle in transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, time, timedelta

from fastapi import FastAPI

from exchange.chain.runtime import ChainRuntime
from exchange.db.base import utc_now
from exchange.db.session import app_sessionmaker
from exchange.kit.errors import DomainError
from exchange.kit.logging import get_logger
from exchange.pool.contribution_service import process_open_mints
from exchange.pool.indexer import PoolIndexer
from exchange.pool.patent_service import expire_due
from exchange.pool.service import ChainGateway, PoolContext, PoolPolicies, bootstrap_roles
from exchange.settings import Settings

log = get_logger(__name__)


def build_context(app: FastAPI) -> PoolContext:
    settings: Settings = app.state.settings
    runtime: ChainRuntime = app.state.chain
    chain = ChainGateway(runtime)
    return PoolContext(
        settings=settings,
        chain=chain,
        sessionmaker=app_sessionmaker(app),
        indexer=PoolIndexer(
            chain,
            confirmations=settings.pool_indexer_confirmations,
            max_blocks=settings.pool_indexer_max_blocks,
        ),
        policies=PoolPolicies.from_settings(settings),
    )


async def index_once(context: PoolContext) -> None:
    """One indexer pass: a cheap check first, so an idle poll writes nothing, then each range
    read from the chain with no transaction open and applied in a short one."""
    if await context.indexer.behind(context.sessionmaker):
        await context.indexer.catch_up_between_transactions(context.sessionmaker)


async def sweep_expired(context: PoolContext) -> list[str]:
    async with context.sessionmaker() as session, session.begin():
        return await expire_due(session, today=utc_now().date())


async def _guarded(name: str, action: Callable[[], Awaitable[object]]) -> None:
    try:
        await action()
    except asyncio.CancelledError:
        raise
    except DomainError as exc:
        log.warning("pool.background_failed", job=name, problem=exc.type_slug, detail=exc.detail)
    except Exception as exc:  # a database hiccup must not end the loop; the next tick retries
        log.error("pool.background_failed", job=name, error_type=type(exc).__qualname__, exc_info=exc)


async def _follow_chain(context: PoolContext) -> None:
    while True:
        await asyncio.sleep(context.settings.pool_indexer_interval_s)
        await _guarded("indexer", lambda: index_once(context))
        await _guarded("mints", lambda: process_open_mints(context))


def seconds_until_next_sweep(now: datetime, interval_s: float) -> float:
    """Until just after the next UTC midnight, or ``interval_s``, whichever is sooner."""
    midnight = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(0), UTC)
    return min(interval_s, (midnight - now).total_seconds() + 1.0)


async def _sweep_daily(context: PoolContext) -> None:
    while True:
        await asyncio.sleep(
            seconds_until_next_sweep(utc_now(), context.settings.pool_expiry_sweep_interval_s)
        )
        await _guarded("expiry", lambda: sweep_expired(context))


def pool_startup() -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Lifespan hook of pool administration; add it after the chain's hook."""

    @asynccontextmanager
    async def hook(app: FastAPI) -> AsyncIterator[None]:
        context = build_context(app)
        app.state.pool = context
        async with context.sessionmaker() as session, session.begin():
            await bootstrap_roles(session, context.settings, utc_now())
        await _guarded("indexer", lambda: index_once(context))
        await _guarded("expiry", lambda: sweep_expired(context))
        await _guarded("mints", lambda: process_open_mints(context))
        tasks = [
            asyncio.create_task(_follow_chain(context), name="pool-indexer"),
            asyncio.create_task(_sweep_daily(context), name="pool-expiry"),
        ]
        log.info("pool.started", policy_version=context.policies.mint.version)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return hook
