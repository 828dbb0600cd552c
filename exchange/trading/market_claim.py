"""Which process writes a market: the market's PostgreSQL advisory lock, held by its writer.

One process writes a market (DESIGN: each market has exactly one writer at a time). On
PostgreSQL the writer takes a session advisory lock keyed by the market before it
recovers the book, on a connection of its own that it holds until it stops; a second
process serving the same database finds the lock taken and refuses the market
(``MarketOwned``). Between cycles the writer checks, at most every ``CHECK_S``, that the
claiming connection still answers: a connection that died took the lock with it, so the
market is claimed again, or given up if another process took it meanwhile.

On SQLite there is nothing to claim: the embedded database's run lock keeps a second
service off it (``exchange.main.claim_embedded_database``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exchange.kit.logging import get_logger

log = get_logger(__name__)

WAIT_S = 5.0  # how long a claim waits for another process's claim of the market to go
CHECK_S = 2.0  # how often a writer makes sure its claim's connection is still there


class MarketOwned(RuntimeError):
    """Another process holds the market's advisory lock: it writes the market on this database."""


def market_lock_key(market_id: str) -> int:
    """The PostgreSQL advisory lock key (a signed 64-bit integer) of a market's writer."""
    # The text is the key every version computes (it named the writer's module when the claim
    # lived there): processes of two versions on one database must take the same lock.
    digest = hashlib.sha256(f"exchange.trading.writer:{market_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class MarketClaim:
    """The claim of one market by this process's writer; see the module docstring."""

    def __init__(self, engine: AsyncEngine, market_id: str) -> None:
        self._engine = engine
        self.market_id = market_id
        # The connection holding the lock, the lock's key while the market is claimed (kept
        # through a check that could not reach the database), and when the connection was
        # last seen alive.
        self.connection: AsyncConnection | None = None
        self.key: int | None = None
        self._seen = 0.0

    @property
    def checked(self) -> bool:
        """Whether :meth:`keep` has anything to check: the market was claimed on PostgreSQL."""
        return self.key is not None

    async def take(self) -> None:
        """Take the market, trying for ``WAIT_S`` (a lock held by a process that just died is let
        go by the server when it notices); ``MarketOwned`` if another process keeps it."""
        if self._engine.dialect.name != "postgresql":
            return
        key = market_lock_key(self.market_id)
        connection = await self._engine.connect()
        try:
            deadline = time.monotonic() + WAIT_S
            while not (await connection.scalar(select(func.pg_try_advisory_lock(key)))):
                if time.monotonic() >= deadline:
                    raise MarketOwned(
                        f"market {self.market_id} is written by another process on this database (a second "
                        "`exchange serve`?): one process writes a market; stop the other, or give this "
                        "one a database of its own"
                    )
                await asyncio.sleep(0.1)
            await connection.commit()  # the lock is the session's: it outlives the transaction
        except BaseException:
            await connection.invalidate()  # never back to the pool holding the lock, nor mid-transaction
            raise
        self.connection, self.key, self._seen = connection, key, time.monotonic()

    @property
    def due(self) -> bool:
        """Whether :meth:`keep` would check now (and so wait for the database)."""
        return self.key is not None and time.monotonic() - self._seen >= CHECK_S

    async def keep(self) -> None:
        """Every ``CHECK_S``: the claiming connection still answers, so the lock is still this
        writer's. A connection that died (the server restarted or ended the session, the
        network dropped it) took the lock with it: the market is claimed again, and
        ``MarketOwned`` if another process took it meanwhile (the writer then stops)."""
        if not self.due:
            return
        connection = self.connection
        try:
            if connection is None:
                raise ConnectionError("no claiming connection")
            await connection.exec_driver_sql("SELECT 1")
            await connection.commit()
        except Exception:
            log.warning("trading.market_claim_lost", market=self.market_id, exc_info=True)
            key = self.key
            await self.release()
            try:
                await self.take()
            except MarketOwned:
                log.error("trading.market_taken_over", market=self.market_id)
                raise
            except Exception:  # the database cannot be reached now: the next check claims again
                log.warning("trading.market_claim_retry", market=self.market_id, exc_info=True)
                self.key, self._seen = key, time.monotonic()
                return
            log.info("trading.market_claimed_again", market=self.market_id)
            return
        self._seen = time.monotonic()

    async def release(self) -> None:
        """Let the market go: the claiming connection is closed, not pooled, so the lock goes with it."""
        connection, self.connection, self.key = self.connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.invalidate()
