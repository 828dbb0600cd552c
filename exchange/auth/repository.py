"""All SQL of the auth room. Flushes only; the request's transaction commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.auth.models import AuthNonce, AuthSession


async def add_nonce(
    session: AsyncSession, nonce: str, issued_at: datetime, expires_at: datetime
) -> AuthNonce:
    row = AuthNonce(nonce=nonce, issued_at=issued_at, expires_at=expires_at)
    session.add(row)
    await session.flush()
    return row


async def purge_expired_nonces(session: AsyncSession, expired_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` unused nonces that expired before ``expired_before``; how many went.

    Used nonces stay: their session references them. On PostgreSQL, rows another
    transaction is deleting or consuming are skipped, so concurrent purges never wait
    on each other or deadlock.
    """
    expired = (
        select(AuthNonce.nonce)
        .where(AuthNonce.used_at.is_(None), AuthNonce.expires_at < expired_before)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        delete(AuthNonce).where(AuthNonce.nonce.in_(expired)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_expired_sessions(session: AsyncSession, expired_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` sessions that expired before ``expired_before``, with their nonces.

    An expired session authenticates nothing (``live_session``), revoked or not. Its nonce
    goes with it: the session was all that kept a used nonce. On PostgreSQL, rows another
    transaction holds are skipped, as in ``purge_expired_nonces``.
    """
    expired = (
        await session.execute(
            select(AuthSession.id, AuthSession.nonce)
            .where(AuthSession.expires_at < expired_before)
            .order_by(AuthSession.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not expired:
        return 0
    await session.execute(
        delete(AuthSession)
        .where(AuthSession.id.in_([row.id for row in expired]))
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(AuthNonce)
        .where(AuthNonce.nonce.in_([row.nonce for row in expired]))
        .execution_options(synchronize_session=False)
    )
    return len(expired)


async def nonce_open(session: AsyncSession, nonce: str, now: datetime) -> bool:
    """Whether the nonce exists, is unused and unexpired (a read: :func:`consume_nonce` takes it)."""
    found = await session.scalar(
        select(AuthNonce.nonce).where(
            AuthNonce.nonce == nonce, AuthNonce.used_at.is_(None), AuthNonce.expires_at > now
        )
    )
    return found is not None


async def consume_nonce(
    session: AsyncSession, nonce: str, address: str, now: datetime, *, issued_by: datetime
) -> bool:
    """Mark the nonce used if it exists, is unused and unexpired, and was issued by ``issued_by``
    (a message cannot hold a nonce issued after it). One atomic UPDATE: no double use."""
    result = await session.execute(
        update(AuthNonce)
        .where(
            AuthNonce.nonce == nonce,
            AuthNonce.used_at.is_(None),
            AuthNonce.expires_at > now,
            AuthNonce.issued_at <= issued_by,
        )
        .values(used_at=now, used_by=address)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def add_session(
    session: AsyncSession,
    *,
    token_sha256: str,
    address: str,
    chain_id: int,
    nonce: str,
    now: datetime,
    expires_at: datetime,
) -> AuthSession:
    row = AuthSession(
        token_sha256=token_sha256,
        address=address,
        chain_id=chain_id,
        nonce=nonce,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return row


async def live_session(session: AsyncSession, token_sha256: str, now: datetime) -> AuthSession | None:
    return await session.scalar(
        select(AuthSession).where(
            AuthSession.token_sha256 == token_sha256,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
        )
    )


async def revoke_session(session: AsyncSession, session_id: int, now: datetime) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id)
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
