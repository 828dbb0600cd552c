"""All SQL of trading: ledger balances and entries, the journal, fills, withdrawals.

Functions take an ``AsyncSession`` and flush at most; the caller's transaction
commits. Ledger changes go through :func:`apply_postings`, which checks the pure
ledger's invariants (``exchange.trading.ledger.apply``) on the locked current
balances before writing anything, so a posting set either applies whole or
raises ``LedgerRefused`` and changes nothing.

Balance rows are read ``FOR UPDATE`` (PostgreSQL; SQLite has one writer at a
time anyway), in (account, token) order, so concurrent writers of the same
balances queue instead of losing an update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Select, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db.base import utc_now
from exchange.kit.errors import Conflict
from exchange.kit.logging import get_logger
from exchange.trading import ledger
from exchange.trading.ledger import VAULT_EXTERNAL, Balance, LedgerError, Posting
from exchange.trading.models import LedgerBalance, LedgerEntry

log = get_logger(__name__)

BalanceKey = tuple[str, str]  # (account, token)


class LedgerRefused(Conflict):
    """A posting set would break a ledger invariant (overdraft, release of more than reserved)."""

    type_slug = "insufficient-balance"
    title = "Insufficient balance"


def _locked(statement: Select[LedgerBalance], session: AsyncSession) -> Select[LedgerBalance]:
    if session.get_bind().dialect.name == "postgresql":
        return statement.with_for_update()
    return statement


async def load_balances(
    session: AsyncSession, keys: Iterable[BalanceKey], *, lock: bool = True
) -> dict[BalanceKey, Balance]:
    """The current balances of ``keys`` (absent rows are zero), locked for this transaction by default."""
    wanted = sorted({key for key in keys if key[0] != VAULT_EXTERNAL})
    if not wanted:
        return {}
    statement = (
        select(LedgerBalance)
        .where(tuple_(LedgerBalance.account, LedgerBalance.token).in_(wanted))
        .order_by(LedgerBalance.account, LedgerBalance.token)
    )
    if lock:
        statement = _locked(statement, session)
    rows = (await session.scalars(statement)).all()
    return {(row.account, row.token): Balance(row.total, row.reserved) for row in rows}


async def write_balances(
    session: AsyncSession,
    changed: Mapping[BalanceKey, Balance],
    existing: Iterable[BalanceKey],
    now: datetime,
) -> None:
    """Store ``changed`` balances: UPDATE the keys in ``existing``, INSERT the others."""
    present = set(existing)
    updates = []
    inserts = []
    for (account, token), balance in changed.items():
        if account == VAULT_EXTERNAL:
            continue
        row = {"account": account, "token": token, "total": balance.total, "reserved": balance.reserved}
        if (account, token) in present:
            updates.append({**row, "updated_at": now})
        else:
            inserts.append({**row, "updated_at": now})
    if updates:
        await session.execute(update(LedgerBalance), updates)
    if inserts:
        await session.execute(insert(LedgerBalance), inserts)


async def insert_entries(
    session: AsyncSession, postings: Sequence[tuple[Posting, str, str]], now: datetime
) -> None:
    """Append ledger entries: each posting with its cause and reference."""
    if not postings:
        return
    await session.execute(
        insert(LedgerEntry),
        [
            {
                "account": posting.account,
                "token": posting.token,
                "total_delta": posting.total_delta,
                "reserved_delta": posting.reserved_delta,
                "cause": cause,
                "reference": reference,
                "created_at": now,
            }
            for posting, cause, reference in postings
        ],
    )


async def apply_postings(
    session: AsyncSession, postings: list[Posting], *, cause: str, reference: str
) -> None:
    """Apply a balanced posting set: append its entries and update the balances it moves.

    Raises ``LedgerRefused`` (a 409 problem) and writes nothing when the set is
    unbalanced or would leave any account with ``reserved > total`` or a negative
    reservation. ``cause`` says why (``deposit``, ``withdrawal``, ...), ``reference``
    what about (a transaction hash and log index, a withdrawal id, ...).
    """
    keys = [(posting.account, posting.token) for posting in postings]
    current = await load_balances(session, keys)
    try:
        changed = ledger.apply(current, postings)
    except LedgerError as error:
        raise LedgerRefused(str(error), extra={"cause": cause, "reference": reference}) from error
    now = utc_now()
    await write_balances(session, changed, current.keys(), now)
    await insert_entries(session, [(posting, cause, reference) for posting in postings], now)
    await session.flush()
    log.debug("ledger.posted", cause=cause, reference=reference, postings=len(postings))


async def credit_deposit(
    session: AsyncSession, account: str, token: str, amount: int, *, reference: str
) -> None:
    """Credit a deposit into the Vault to ``account``'s ledger (the Vault indexer calls this).

    ``reference`` identifies the deposit exactly once (``<tx hash>:<log index>``);
    the caller makes sure each deposit is credited once.
    """
    await apply_postings(
        session, ledger.deposit(account, token, amount), cause="deposit", reference=reference
    )
    log.info("ledger.deposit_credited", account=account, token=token, amount=amount, reference=reference)


async def balances_of(session: AsyncSession, account: str) -> dict[str, Balance]:
    """Every token balance of ``account``, unlocked, by token."""
    rows = (
        await session.scalars(
            select(LedgerBalance).where(LedgerBalance.account == account).order_by(LedgerBalance.token)
        )
    ).all()
    return {row.token: Balance(row.total, row.reserved) for row in rows}
