"""``Idempotency-Key``: the first answer to a request, given again to its retries.

A client that may resend a request (after a timeout or a dropped connection)
sends the same ``Idempotency-Key`` header each time. The first request claims
the key for its account, in a transaction of its own, before doing anything;
when it finishes, its status and body are stored with the key. A retry with the
same key and the same request (method, path, body) gets that stored answer and
does nothing else; the same key with another request is refused with 422; a
retry while the first is still running gets 409 and may try again.

What is stored: successes and refusals the client caused (4xx except 429).
Answers that say "try again" (429, 5xx, and refusals marked ``transient``, such
as a race lost to a concurrent request) release the key instead, so a retry
runs afresh. A claim left unanswered, by a process that died mid-request or by
one still running, may be taken over after ``STALE_AFTER_S`` where the work is
idempotent underneath (orders by client order id, cancels by nature), so running
it again is safe. Where it is not (a withdrawal takes the next nonce and
reserves again), such a claim is never taken over: the retry is refused with
:class:`KeyUnfinished`, and the client looks at what happened before it sends
the request again under a new key.

Keys are kept for ``trading_idempotency_retention_s`` (a day by default), as
payment APIs keep theirs: a claim older than that is deleted, answered or not,
and the key may then be used for a new request. Claims purge at most
``PURGE_BATCH`` such keys, once every ``PURGE_EVERY_S`` per process.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.db.base import utc_now
from exchange.kit.errors import Conflict
from exchange.kit.logging import get_logger
from exchange.trading.models import IdempotencyKey
from exchange.trading.problems import FieldRefused

log = get_logger(__name__)

STALE_AFTER_S = 60
HEADER = "Idempotency-Key"
PURGE_EVERY_S = 60.0
PURGE_BATCH = 10_000


class KeyReused(FieldRefused):
    type_slug = "idempotency-key-reused"
    title = "Idempotency key reused for another request"


class KeyInUse(Conflict):
    type_slug = "idempotency-key-in-use"
    title = "A request with this idempotency key is still running"
    retry_after_s = 1


class KeyUnfinished(Conflict):
    type_slug = "idempotency-key-unfinished"
    title = "The first request with this idempotency key never answered"


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: Any


def request_digest(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join((method.upper().encode(), path.encode(), body))).hexdigest()


class IdempotencyStore:
    """Claims, answers and releases of idempotency keys, each in its own short transaction."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, retention_s: float) -> None:
        self._sessionmaker = sessionmaker
        self._retention = timedelta(seconds=retention_s)
        self._next_purge = 0.0  # time.monotonic() of the next purge

    async def claim(
        self, account: str, key: str, digest: str, *, rerun_safe: bool = True
    ) -> StoredAnswer | None:
        """Claim ``key`` for a new request (None), or the stored answer of the same request.

        ``rerun_safe``: the work may run a second time (see the module docstring), so a stale
        unanswered claim is taken over; otherwise it is refused with :class:`KeyUnfinished`.
        """
        now = utc_now()
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_EVERY_S
            try:
                await self.purge(now)
            except SQLAlchemyError as error:  # housekeeping: the request goes on, the next purge retries
                log.warning("trading.idempotency_purge_failed", error=str(error).splitlines()[0])
        try:
            async with self._sessionmaker() as session, session.begin():
                session.add(IdempotencyKey(account=account, key=key, request_sha256=digest, created_at=now))
            return None
        except IntegrityError:
            pass
        try:
            return await self._claim_held(account, key, digest, now, rerun_safe=rerun_safe)
        except IntegrityError as error:  # released, then claimed by a third request in between
            raise KeyInUse(
                f"another request with Idempotency-Key {key!r} has just started; retry shortly",
                extra={"idempotency_key": key},
            ) from error

    async def _claim_held(
        self, account: str, key: str, digest: str, now: datetime, *, rerun_safe: bool
    ) -> StoredAnswer | None:
        """:meth:`claim` of a key found held: its answer, a takeover, or a refusal."""
        async with self._sessionmaker() as session, session.begin():
            row = await session.get(IdempotencyKey, (account, key), with_for_update=True)
            if row is None:  # released in between: claim it (a race with a third request: IntegrityError)
                session.add(IdempotencyKey(account=account, key=key, request_sha256=digest, created_at=now))
                return None
            if row.request_sha256 != digest:
                raise KeyReused(
                    f"the Idempotency-Key {key!r} was first used for a different request; use a new key",
                    location=("header", HEADER),
                    extra={"idempotency_key": key},
                )
            if row.status_code is not None:
                return StoredAnswer(row.status_code, row.response)
            if _stale(row.created_at, now):
                if not rerun_safe:
                    raise KeyUnfinished(
                        f"the first request with Idempotency-Key {key!r} never answered, and it may "
                        "have taken effect: look at its result (e.g. GET the list it adds to) before "
                        "sending the request again with a new key",
                        extra={"idempotency_key": key},
                    )
                row.created_at = now
                return None
            raise KeyInUse(
                f"the first request with Idempotency-Key {key!r} has not finished; retry shortly",
                extra={"idempotency_key": key},
            )

    async def answer(self, account: str, key: str, status_code: int, body: Any) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.account == account, IdempotencyKey.key == key)
                .values(status_code=status_code, response=body, completed_at=utc_now())
            )

    async def release(self, account: str, key: str) -> None:
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.account == account,
                    IdempotencyKey.key == key,
                    IdempotencyKey.status_code.is_(None),
                )
            )

    async def purge(self, now: datetime) -> int:
        """Delete up to ``PURGE_BATCH`` keys claimed more than the retention before ``now``.

        On PostgreSQL, keys another transaction holds are skipped: purges never wait on claims.
        """
        expired = (
            select(IdempotencyKey.account, IdempotencyKey.key)
            .where(IdempotencyKey.created_at < now - self._retention)
            .limit(PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        async with self._sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(IdempotencyKey)
                .where(tuple_(IdempotencyKey.account, IdempotencyKey.key).in_(expired))
                .execution_options(synchronize_session=False)
            )
        purged = int(result.rowcount)  # type: ignore[attr-defined]
        if purged:
            log.info("trading.idempotency_keys_purged", keys=purged)
        return purged


def _stale(created_at: datetime, now: datetime) -> bool:
    return now - created_at > timedelta(seconds=STALE_AFTER_S)
