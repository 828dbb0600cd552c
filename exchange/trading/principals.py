"""The signed-in account behind a trading request, without holding a database connection.

``exchange.auth``'s ``CurrentPrincipal`` resolves the bearer token in the
request's own transaction, which stays open until the response is sent. An
order request waits for its market's writer in between; holding a pooled
connection through that wait would let a burst of orders take every
connection while the writer needs one to commit them. So trading routes
resolve the token here: in a short session of its own, with the answer kept
for ``ttl_s`` (``EXCHANGE_TRADING_SESSION_CACHE_S``). A session that signs out
or expires stops working within that time; a WebSocket connection's session checks
look the token up afresh (``fresh``).

At most ``MAX_LOOKUPS`` lookups run at once, fewer than the pool's connections:
the answers of many sessions tend to expire together, and a burst of lookups
beyond the pool would open (and then close) a new database connection each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.auth.service import Principal, resolve_token, token_digest
from exchange.db.base import utc_now
from exchange.kit.errors import Unauthorized

_MAX_ENTRIES = 100_000
MAX_LOOKUPS = 4


class PrincipalCache:
    """Bearer token (by digest) to principal, each answer reused for ``ttl_s``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl_s = ttl_s
        self._clock = clock
        self._answers: dict[str, tuple[Principal, float]] = {}
        self._pending: dict[str, asyncio.Task[Principal]] = {}
        self._lookups = asyncio.Semaphore(MAX_LOOKUPS)

    async def resolve(self, token: str, *, fresh: bool = False) -> Principal:
        """The token's principal; ``fresh``: asked of the database now, whatever is cached (a
        refusal then also drops the cached answer, so requests stop being served at once)."""
        digest = token_digest(token)
        now = self._clock()
        if fresh:
            try:
                principal = await self._look_up(token)
            except Unauthorized:
                self._answers.pop(digest, None)
                raise
            self._keep(digest, principal, now)
            return principal
        cached = self._answers.get(digest)
        if cached is not None and now - cached[1] < self._ttl_s:
            return cached[0]
        # One lookup per token at a time: concurrent requests of a session share it.
        pending = self._pending.get(digest)
        if pending is None:
            pending = self._pending[digest] = asyncio.create_task(self._look_up(token))
            pending.add_done_callback(lambda _task: self._pending.pop(digest, None))
        principal = await asyncio.shield(pending)
        self._keep(digest, principal, now)
        return principal

    def _keep(self, digest: str, principal: Principal, now: float) -> None:
        if self._ttl_s > 0:
            if len(self._answers) >= _MAX_ENTRIES:
                self._answers.clear()
            self._answers[digest] = (principal, now)

    async def _look_up(self, token: str) -> Principal:
        async with self._lookups, self._sessionmaker() as session:
            return await resolve_token(session, token, utc_now())


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("sign in first: send 'Authorization: Bearer <token>'")
    return token.strip()
