"""Sign-in use cases: issue a nonce, exchange a signed message for a session, resolve a token.

Rules: a nonce is random, single use and short-lived; the message must name this
service (domain, scheme and URI, see ``siwe``) and chain; the signature must come
from the message's address (EOA, or ERC-1271 contract wallet, which is asked only
for a nonce that was issued and is unused, and with no transaction open); the nonce
is taken once the signature holds; only the token's SHA-256 is stored. Issuing a
nonce deletes a bounded batch of unused ones expired for longer than a grace period,
so the table holds about a TTL's worth of unused nonces (the routes limit how fast
one client IP asks for them); signing in likewise deletes a batch of expired sessions
with their nonces, so sessions and used nonces stay about a session TTL's worth.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eth_account.messages import encode_defunct
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.auth import repository
from exchange.auth.siwe import MAX_CLOCK_SKEW, SiweError, check_message, parse_message
from exchange.chain.errors import ChainError
from exchange.chain.problems import to_domain_error
from exchange.chain.runtime import ChainRuntime
from exchange.chain.signatures import is_valid_signature, recover_signer
from exchange.kit.errors import Unauthorized
from exchange.kit.logging import get_logger

log = get_logger(__name__)

# An expired nonce is kept this long, so that a login that read the clock just before the
# expiry (on this process or on another whose clock is a little behind) still finds it.
NONCE_PURGE_GRACE = timedelta(seconds=60)
# Most expired nonces one issued nonce deletes, and expired sessions one sign-in deletes: a
# backlog drains over the next requests (each adds one and deletes up to this many) instead
# of in one long statement.
NONCE_PURGE_BATCH = 100
SESSION_PURGE_BATCH = 100


@dataclass(frozen=True)
class Principal:
    """The signed-in account behind a request."""

    address: str
    session_id: int
    chain_id: int


def new_nonce() -> str:
    return secrets.token_hex(16)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_NONCE_REFUSED = "sign-in refused: the nonce is unknown, expired or already used"


async def issue_nonce(session: AsyncSession, now: datetime, ttl_s: int) -> tuple[str, datetime]:
    nonce = new_nonce()
    expires_at = now + timedelta(seconds=ttl_s)
    await repository.purge_expired_nonces(session, now - NONCE_PURGE_GRACE, NONCE_PURGE_BATCH)
    await repository.add_nonce(session, nonce, now, expires_at)
    return nonce, expires_at


async def sign_in(
    session: AsyncSession,
    *,
    message_text: str,
    signature_hex: str,
    domain: str,
    chain_id: int,
    chain: ChainRuntime,
    now: datetime,
    session_ttl_s: int,
    nonce_open: Callable[[str, datetime], Awaitable[bool]],
    allow_http: bool = False,
) -> tuple[str, datetime, str]:
    """Verify a signed EIP-4361 message; return (bearer token, expiry, address).

    ``nonce_open`` says, in a transaction of its own, whether a nonce was issued and is still
    unused: asked before a contract wallet is (:func:`nonce_is_open`).
    """
    try:
        message = parse_message(message_text)
        check_message(message, domain=domain, chain_id=chain_id, now=now, allow_http=allow_http)
    except SiweError as exc:
        raise Unauthorized(f"sign-in refused: {exc}") from exc
    try:
        signature = bytes.fromhex(signature_hex.removeprefix("0x"))
    except ValueError as exc:
        raise Unauthorized("sign-in refused: the signature is not valid hex bytes") from exc
    signed = encode_defunct(text=message_text)
    if recover_signer(signed, signature) != message.address:
        # Only a contract wallet's (ERC-1271) signature can still be valid: asking it calls a
        # contract the caller chose. Only for a nonce this service issued and nobody used, and
        # with no transaction of this request open yet (on SQLite one holds the write lock).
        if not await nonce_open(message.nonce, now):
            raise Unauthorized(_NONCE_REFUSED)
        # Through the chain's runner: the embedded EVM must not be called from a worker thread.
        try:
            valid = await chain.run(lambda: is_valid_signature(chain.w3, message.address, signed, signature))
        except ChainError as exc:  # the node could not ask the wallet: 503, the nonce stays usable
            raise to_domain_error(exc) from exc
        if not valid:
            raise Unauthorized(f"sign-in refused: the signature is not {message.address}'s")
    try:  # the wallet's clock may run behind ours
        issued_by = message.issued_at.astimezone(UTC) + MAX_CLOCK_SKEW
    except OverflowError:  # a date before year 1 in UTC (0001-01-01 at +14:00)
        raise Unauthorized("sign-in refused: the message's Issued At is out of range") from None
    if not await repository.consume_nonce(session, message.nonce, message.address, now, issued_by=issued_by):
        if await repository.nonce_open(session, message.nonce, now):
            raise Unauthorized(
                "sign-in refused: the message's Issued At is before its nonce was issued; write the "
                "message after getting the nonce, with the time it is written"
            )
        raise Unauthorized(_NONCE_REFUSED)
    await repository.purge_expired_sessions(session, now - NONCE_PURGE_GRACE, SESSION_PURGE_BATCH)
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=session_ttl_s)
    if message.expiration_time is not None:
        expires_at = min(expires_at, message.expiration_time)
    row = await repository.add_session(
        session,
        token_sha256=token_digest(token),
        address=message.address,
        chain_id=chain_id,
        nonce=message.nonce,
        now=now,
        expires_at=expires_at,
    )
    log.info("auth.signed_in", address=message.address, session_id=row.id)
    return token, expires_at, message.address


async def nonce_is_open(sessionmaker: async_sessionmaker[AsyncSession], nonce: str, now: datetime) -> bool:
    """Whether ``nonce`` was issued, is unused and unexpired: read in a short transaction of its own."""
    async with sessionmaker() as session:
        return await repository.nonce_open(session, nonce, now)


async def resolve_token(session: AsyncSession, token: str, now: datetime) -> Principal:
    row = await repository.live_session(session, token_digest(token), now)
    if row is None:
        # RFC 6750, 3.1: a client told "invalid_token" signs in again.
        raise Unauthorized(
            "the bearer token is unknown, expired or revoked", challenge='Bearer error="invalid_token"'
        )
    return Principal(address=row.address, session_id=row.id, chain_id=row.chain_id)


async def sign_out(session: AsyncSession, principal: Principal, now: datetime) -> None:
    await repository.revoke_session(session, principal.session_id, now)
    log.info("auth.signed_out", address=principal.address, session_id=principal.session_id)
