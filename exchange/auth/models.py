"""Tables of the auth room: single-use sign-in nonces and bearer sessions.

A session references the nonce it was signed in with, so a used nonce lives as long as
its session; unused nonces are deleted once expired (``repository.purge_expired_nonces``),
expired sessions with their nonces (``repository.purge_expired_sessions``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from exchange.db.base import Base, utc_now


class AuthNonce(Base):
    """A nonce the service issued for one Sign-In with Ethereum message; usable once, briefly."""

    __tablename__ = "auth_nonces"
    __table_args__ = (
        # The unused ones by expiry: what issuing a nonce purges. Used nonces stay with the
        # session that references them, so they are left out of the index, not scanned past.
        Index(
            "ix_auth_nonces_unused_expires_at",
            "expires_at",
            postgresql_where=text("used_at IS NULL"),
            sqlite_where=text("used_at IS NULL"),
        ),
    )

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    used_by: Mapped[str | None] = mapped_column(String(42), default=None)


class AuthSession(Base):
    """A signed-in session; only the SHA-256 of its bearer token is stored."""

    __tablename__ = "auth_sessions"
    __table_args__ = (
        Index(None, "address"),
        Index(None, "expires_at"),  # the expired ones: what signing in purges
        # A nonce signs one session in. Also what deleting a nonce checks its foreign key by.
        Index(None, "nonce", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(42))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    nonce: Mapped[str] = mapped_column(ForeignKey("auth_nonces.nonce"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
