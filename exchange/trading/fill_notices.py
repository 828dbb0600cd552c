"""Failed fills announced across processes, so that a settler anywhere reaches the live stream.

When a fill fails settlement for good (``settlement_repository.fail_fill``), the same
transaction sends ``NOTIFY trading_fill_failed, '<fill id>'`` on PostgreSQL.
PostgreSQL delivers a notification to every listening session once the transaction
commits, and never when it rolls back. Each serving process listens on a connection
of its own (``FailedFillListener``) and hands every id to
``TradingService.fill_failed``, which takes the trade back on the market's feeds once
per fill, so the settler inside ``exchange serve``, which also calls it directly, is
not heard twice.

A lost listening connection is opened again, waiting 0.5 s at first and at most 5 s
between tries. Notifications sent meanwhile do not reach the stream; the stored
record (trades, candles and the ticker) is read from the database and stays right.
SQLite has no notifications: it is the one-process default, where the settler runs
inside ``exchange serve`` and calls the service directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from exchange.kit.logging import get_logger

log = get_logger(__name__)

CHANNEL = "trading_fill_failed"
FIRST_RETRY_S = 0.5
LAST_RETRY_S = 5.0


async def announce_failed(session: AsyncSession, fill_id: int) -> None:
    """Tell every serving process, once ``session``'s transaction commits, that the fill failed."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(CHANNEL, str(fill_id))))


class FailedFillListener:
    """Listens for failed fills on one PostgreSQL connection of its own, and hands each id on.

    Ids are handed on one at a time, in the order heard (a settler failing many fills at
    once must not start as many reads). A connection that has said nothing for
    ``probe_every_s`` is asked ``SELECT 1``: one that died without a word (no TCP reset)
    is found and replaced.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        on_failed: Callable[[int], Awaitable[None]],
        *,
        probe_every_s: float = 30.0,
        probe_timeout_s: float = 10.0,
    ) -> None:
        # Not the app's pool: a connection that LISTENs must not go back to it.
        self._engine = create_async_engine(engine.url, poolclass=NullPool)
        self._on_failed = on_failed
        self._probe_every_s = probe_every_s
        self._probe_timeout_s = probe_timeout_s
        self._heard: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._driver: Any = None  # the listening asyncpg connection, while there is one
        self.listening = asyncio.Event()

    async def start(self, *, wait_s: float = 10.0) -> None:
        """Start listening; wait up to ``wait_s`` for the first connection (it retries on its own)."""
        self._tasks = [
            asyncio.create_task(self._listen(), name="trading-fill-notices"),
            asyncio.create_task(self._hand_on(), name="trading-fill-notices-handler"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listening.wait(), wait_s)

    async def stop(self) -> None:
        self._tasks, tasks = [], self._tasks
        if self._driver is not None:
            self._driver.terminate()  # at once: closing politely would wait on a peer that may be gone
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.listening.clear()
        await self._engine.dispose()

    async def _listen(self) -> None:
        retry_s = FIRST_RETRY_S
        while True:
            try:
                async with self._engine.connect() as connection:
                    driver: Any = (await connection.get_raw_connection()).driver_connection
                    self._driver = driver
                    lost = asyncio.Event()
                    driver.add_termination_listener(lambda _connection, lost=lost: lost.set())
                    await driver.add_listener(CHANNEL, self._notified)
                    self.listening.set()
                    log.info("trading.fill_notices_listening", channel=CHANNEL)
                    retry_s = FIRST_RETRY_S
                    while not lost.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(lost.wait(), self._probe_every_s)
                        if not lost.is_set():
                            try:
                                await asyncio.wait_for(driver.fetchval("SELECT 1"), self._probe_timeout_s)
                            except Exception:
                                driver.terminate()  # closing politely would wait on the dead peer
                                raise
                    if self._tasks:  # not stopping
                        log.warning("trading.fill_notices_lost", retry_s=retry_s)
            except Exception as error:  # whatever broke the connection: open another
                log.warning("trading.fill_notices_unavailable", error=repr(error), retry_s=retry_s)
            self._driver = None
            self.listening.clear()
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, LAST_RETRY_S)

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            fill_id = int(payload)
        except ValueError:
            log.warning("trading.fill_notice_malformed", payload=payload[:100])
            return
        self._heard.put_nowait(fill_id)

    async def _hand_on(self) -> None:
        while True:
            fill_id = await self._heard.get()
            try:
                await self._on_failed(fill_id)
            except Exception:  # the fill stays failed in the database; only the live notice is lost
                log.exception("trading.fill_notice_failed", fill_id=fill_id)
