"""Failed fills and settled batches announced across processes, so that a settler anywhere
reaches the live stream.

When a fill fails settlement for good (``settlement_repository.fail_fill``), the same
transaction sends ``NOTIFY trading_fill_failed, '<fill id>'`` on PostgreSQL; when a
batch settles (``settlement_repository.close_settled``), ``NOTIFY trading_batch_settled,
'<batch id>'``.
PostgreSQL delivers a notification to every listening session once the transaction
commits, and never when it rolls back. Each serving process listens on a connection
of its own (``FillNoticeListener``) and hands every id to
``TradingService.fill_failed``, which takes the trade back on the market's feeds once
per fill, so the settler inside ``exchange serve``, which also calls it directly, is
not heard twice.

A lost listening connection is opened again, waiting 0.5 s at first and at most 5 s
between tries. Notifications sent meanwhile are not delivered to anyone, so once the
new connection listens, the listener reads the failures recorded since the old one
was last known to listen (its LISTEN or its last answered probe), less
``CATCH_UP_MARGIN_S``: a failure's ``created_at`` is taken on the settler's clock,
before its transaction commits. It hands those on too; ``fill_failed`` takes back
only the fills it has not taken back already (it remembers the latest 10,000).
A settled batch is handed to ``TradingService.batch_settled``, which sends its fills,
settled, to their accounts' ``fills`` subscribers, once per batch. A settlement announced while
no connection listened is not read back: the stream's fills then stay as they were sent
(pending) while ``GET /v1/account/trades`` shows them settled. A failure is read back because
it takes a trade back from the public stream; a settlement changes no public message.
SQLite has no notifications: it is the one-process default, where the settler runs
inside ``exchange serve`` and calls the service directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from exchange.db.base import utc_now
from exchange.kit.logging import get_logger
from exchange.trading.settlement_models import SettlementFailure

log = get_logger(__name__)

CHANNEL = "trading_fill_failed"
SETTLED_CHANNEL = "trading_batch_settled"
APPLICATION_NAME = "exchange-fill-notices"  # the listening connection's, in pg_stat_activity
FIRST_RETRY_S = 0.5
LAST_RETRY_S = 5.0
CATCH_UP_MARGIN_S = 60.0  # a failure dated this long before the last sign of life may commit after it


async def _announce(session: AsyncSession, channel: str, heard: int) -> None:
    """Tell every serving process ``heard`` on ``channel``, once ``session``'s transaction commits."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(channel, str(heard))))


async def announce_failed(session: AsyncSession, fill_id: int) -> None:
    """The fill failed, once ``session``'s transaction commits."""
    await _announce(session, CHANNEL, fill_id)


async def announce_settled(session: AsyncSession, batch_id: int) -> None:
    """The batch settled, once ``session``'s transaction commits."""
    await _announce(session, SETTLED_CHANNEL, batch_id)


class FillNoticeListener:
    """Listens for failed fills (and, given ``on_settled``, settled batches) on one PostgreSQL
    connection of its own, and hands each id on.

    Ids are handed on one at a time, in the order heard (a settler failing many fills at
    once must not start as many reads). A connection that has said nothing for
    ``probe_every_s`` is asked ``SELECT 1``: one that died without a word (no TCP reset)
    is found and replaced. Whatever failed while no connection listened is read from
    the database once one listens again (see the module docstring).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        on_failed: Callable[[int], Awaitable[None]],
        *,
        on_settled: Callable[[int], Awaitable[None]] | None = None,
        probe_every_s: float = 30.0,
        probe_timeout_s: float = 10.0,
        first_retry_s: float = FIRST_RETRY_S,
    ) -> None:
        # Not the app's pool: a connection that LISTENs must not go back to it. Named, so that
        # pg_stat_activity tells it apart.
        self._engine = create_async_engine(
            engine.url,
            poolclass=NullPool,
            connect_args={"server_settings": {"application_name": APPLICATION_NAME}},
        )
        self._on_failed = on_failed
        self._on_settled = on_settled
        self._probe_every_s = probe_every_s
        self._probe_timeout_s = probe_timeout_s
        self.first_retry_s = first_retry_s  # the wait before reopening a lost connection (then doubled)
        self._alive_at: datetime | None = None  # when the connection was last known to listen
        self._unheard_since: datetime | None = None  # failures since then are read back on reconnecting
        self._heard: asyncio.Queue[tuple[str, int]] = asyncio.Queue()  # (channel, id)
        self._tasks: list[asyncio.Task[None]] = []
        self._driver: Any = None  # the listening asyncpg connection, while there is one
        self.listening = asyncio.Event()

    async def start(self, *, wait_s: float = 10.0) -> None:
        """Start listening; wait up to ``wait_s`` for the first connection (it retries on its own)."""
        self._unheard_since = utc_now()  # should the first connection be late, what failed meanwhile
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
        tries = 0  # failed since the last connection that listened
        while True:
            try:
                async with self._engine.connect() as connection:
                    driver: Any = (await connection.get_raw_connection()).driver_connection
                    self._driver = driver
                    lost = asyncio.Event()
                    driver.add_termination_listener(lambda _connection, lost=lost: lost.set())
                    await driver.add_listener(CHANNEL, self._notified)
                    if self._on_settled is not None:
                        await driver.add_listener(SETTLED_CHANNEL, self._notified)
                    self._alive_at = utc_now()
                    await self._bounded(driver, self._catch_up(connection))
                    self.listening.set()
                    log.info("trading.fill_notices_listening", channel=CHANNEL)
                    tries = 0
                    while not lost.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(lost.wait(), self._probe_every_s)
                        if not lost.is_set():
                            probed_at = utc_now()
                            await self._bounded(driver, driver.fetchval("SELECT 1"))
                            self._alive_at = probed_at
                    if self._tasks:  # not stopping
                        log.warning("trading.fill_notices_lost", retry_s=self._retry_s(tries))
            except Exception as error:  # whatever broke the connection: open another
                log.warning(
                    "trading.fill_notices_unavailable", error=repr(error), retry_s=self._retry_s(tries)
                )
            if self._unheard_since is None:
                self._unheard_since = self._alive_at
            self._driver = None
            self.listening.clear()
            await asyncio.sleep(self._retry_s(tries))
            tries += 1

    def _retry_s(self, tries: int) -> float:
        """The wait before the next connection, after ``tries`` failed ones since the last that listened."""
        return float(min(self.first_retry_s * 2.0**tries, max(LAST_RETRY_S, self.first_retry_s)))

    async def _bounded(self, driver: Any, step: Awaitable[Any]) -> None:
        """Await ``step`` on the connection for at most the probe's timeout; past it, or if it
        fails, the connection is terminated (closing politely would wait on a dead peer)."""
        try:
            await asyncio.wait_for(step, self._probe_timeout_s)
        except Exception:
            driver.terminate()
            raise

    async def _catch_up(self, connection: AsyncConnection) -> None:
        """Queue the failures recorded while nobody listened (this connection already listens)."""
        if self._unheard_since is None:
            return
        since = self._unheard_since - timedelta(seconds=CATCH_UP_MARGIN_S)
        fill_ids = list(
            await connection.scalars(
                select(SettlementFailure.fill_id)
                .where(SettlementFailure.created_at >= since)
                .order_by(SettlementFailure.created_at, SettlementFailure.fill_id)
            )
        )
        await connection.commit()
        for fill_id in fill_ids:
            self._heard.put_nowait((CHANNEL, fill_id))
        if fill_ids:
            log.info("trading.fill_notices_caught_up", fills=len(fill_ids), since=since.isoformat())
        self._unheard_since = None

    def _notified(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            heard = int(payload)
        except ValueError:
            log.warning("trading.fill_notice_malformed", channel=channel, payload=payload[:100])
            return
        self._heard.put_nowait((channel, heard))

    async def _hand_on(self) -> None:
        while True:
            channel, heard = await self._heard.get()
            handler = self._on_settled if channel == SETTLED_CHANNEL else self._on_failed
            try:
                if handler is not None:
                    await handler(heard)
            except Exception:  # the database holds the outcome; only the live notice is lost
                log.exception("trading.fill_notice_failed", channel=channel, id=heard)
