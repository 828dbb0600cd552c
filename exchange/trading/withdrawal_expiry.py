"""Authorised withdrawals that can no longer be used give their reservation back.

A withdrawal authorisation reserves its amount (``TradingService.request_withdrawal``)
until the Vault's ``Withdrawn`` event consumes it. The Vault refuses it from
``expiry`` on (``block.timestamp >= expiry``). Once the Vault indexer has credited
a block whose timestamp reached the expiry, no block it credits later can hold
that withdrawal: the authorisation is dead, so :func:`release_expired_withdrawals`
marks it ``expired`` and releases its reservation, in one transaction.

An exit kills an authorisation before its expiry: ``Vault.exit`` pays the whole
balance out, so the reservation would outlive the money it holds. The Vault
indexer's ``Exited`` handler (``exchange.trading.vault_events``) calls
:func:`expire_for_exit` in the transaction that posts the exit. Those releases
carry their own ledger cause, ``withdrawal.exit_released``, and a reference naming
both the withdrawal and the exit (``withdrawal:<id>@<tx hash>:<log index>``), so
they stay apart from the timed expiries (``withdrawal.expired``,
``withdrawal:<id>``).

A reorganisation can take the exit away. The authorisations are then valid on
chain again until their expiry, and the money is back: undoing the exit calls
:func:`restore_for_undone_exit`, which puts back to ``authorised`` those the exit
still holds expired (its releases outnumber their re-reservations, cause
``withdrawal.exit_released.reorg``) and whose expiry is after the chain time the
indexer rolled back to, reserving their amounts again. Those already past their
expiry by then stay expired: no block the indexer credits later can hold them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3

from exchange.kit.logging import get_logger
from exchange.trading import ledger, repository
from exchange.trading.chain_calls import ChainCalls
from exchange.trading.models import LOOKED_UP_ENTRIES, LedgerEntry, TradingWithdrawal, WithdrawalStatus
from exchange.trading.settlement_models import ChainCursor

log = get_logger(__name__)

EXIT_RELEASE_CAUSE = "withdrawal.exit_released"
"""Ledger cause of a reservation released because the account exited the Vault."""
EXIT_RESTORE_CAUSE = f"{EXIT_RELEASE_CAUSE}.reorg"
"""Ledger cause of that reservation made again, once a reorganisation took the exit away."""


async def release_expired_withdrawals(
    sessionmaker: async_sessionmaker[AsyncSession], w3: Web3, calls: ChainCalls, cursor_id: int
) -> int:
    """Expire the authorisations dead by the indexer's credited block; how many."""
    async with sessionmaker() as session:
        cursor = await session.get(ChainCursor, cursor_id)
        soonest = await session.scalar(
            select(func.min(TradingWithdrawal.expiry_unix)).where(
                TradingWithdrawal.status == WithdrawalStatus.AUTHORISED.value
            )
        )
    if cursor is None or soonest is None:
        return 0  # nothing authorised: no need to ask the chain
    credited = cursor.credited_block
    block_time = int(await calls.run(lambda: w3.eth.get_block(credited)["timestamp"]))
    if block_time < soonest:
        return 0
    async with sessionmaker() as session, session.begin():
        rows = await _locked(
            session,
            TradingWithdrawal.status == WithdrawalStatus.AUTHORISED.value,
            TradingWithdrawal.expiry_unix <= block_time,
        )
        # Every balance at once (one lock that does not wait, see exchange.trading.repository):
        # one by one, the run would give way at any account trading at that moment.
        await repository.load_balances(session, {(row.account, row.token) for row in rows})
        for row in rows:
            await _expire(session, row, cause="withdrawal.expired", reference=f"withdrawal:{row.id}")
            log.info("withdrawal.expired", account=row.account, nonce=row.nonce, amount=row.amount)
    return len(rows)


async def expire_for_exit(session: AsyncSession, account: str, *, exit_reference: str) -> int:
    """Expire every authorisation of ``account`` still open, in the caller's transaction; how many.

    ``exit_reference`` names the ``Exited`` event (``<tx hash>:<log index>``).
    """
    rows = await _locked(
        session,
        TradingWithdrawal.account == account,
        TradingWithdrawal.status == WithdrawalStatus.AUTHORISED.value,
    )
    for row in rows:
        reference = _exit_reference(row, exit_reference)
        await _expire(session, row, cause=EXIT_RELEASE_CAUSE, reference=reference)
        log.info("withdrawal.exit_released", account=account, nonce=row.nonce, amount=row.amount)
    return len(rows)


async def restore_for_undone_exit(
    session: AsyncSession, account: str, *, exit_reference: str, chain_time_unix: int
) -> int:
    """Authorise again what the undone exit ``exit_reference`` expired, if valid after ``chain_time_unix``.

    Each such authorisation reserves its amount again, in the caller's transaction
    (``LedgerRefused`` if the balance cannot hold it); returns how many.
    """
    rows = await _locked(
        session,
        TradingWithdrawal.account == account,
        TradingWithdrawal.status == WithdrawalStatus.EXPIRED.value,
        TradingWithdrawal.expiry_unix > chain_time_unix,
    )
    references = {_exit_reference(row, exit_reference): row for row in rows}
    if not references:
        return 0
    entries = (
        await session.execute(
            select(LedgerEntry.reference, LedgerEntry.cause).where(
                LedgerEntry.account == account,
                LedgerEntry.cause.in_((EXIT_RELEASE_CAUSE, EXIT_RESTORE_CAUSE)),
                LedgerEntry.reference.in_(list(references)),
                text(LOOKED_UP_ENTRIES),  # so the (cause, reference) index serves it
            )
        )
    ).all()
    # A re-credited exit releases again under the same reference: count, so only what it holds now returns.
    held = dict.fromkeys(references, 0)
    for reference, cause in entries:
        held[reference] += 1 if cause == EXIT_RELEASE_CAUSE else -1
    restored = 0
    for reference, row in references.items():
        if held[reference] <= 0:
            continue
        row.status = WithdrawalStatus.AUTHORISED.value
        await repository.apply_postings(
            session,
            ledger.reserve(row.account, row.token, row.amount),
            cause=EXIT_RESTORE_CAUSE,
            reference=reference,
        )
        log.info("withdrawal.exit_restored", account=account, nonce=row.nonce, amount=row.amount)
        restored += 1
    return restored


async def _locked(session: AsyncSession, *conditions: ColumnElement[bool]) -> Sequence[TradingWithdrawal]:
    """The withdrawals meeting ``conditions``, oldest first, locked for the caller's transaction."""
    statement = select(TradingWithdrawal).where(*conditions).order_by(TradingWithdrawal.id)
    return (await session.scalars(statement.with_for_update())).all()


def _exit_reference(row: TradingWithdrawal, exit_reference: str) -> str:
    return f"withdrawal:{row.id}@{exit_reference}"


async def _expire(session: AsyncSession, row: TradingWithdrawal, *, cause: str, reference: str) -> None:
    """Mark ``row`` expired and release its reservation."""
    row.status = WithdrawalStatus.EXPIRED.value
    await repository.apply_postings(
        session, ledger.release(row.account, row.token, row.amount), cause=cause, reference=reference
    )


async def run(
    sessionmaker: async_sessionmaker[AsyncSession],
    w3: Web3,
    calls: ChainCalls,
    cursor_id: int,
    interval_s: float,
) -> None:
    """:func:`release_expired_withdrawals` every ``interval_s``, until cancelled."""
    while True:
        try:
            await release_expired_withdrawals(sessionmaker, w3, calls, cursor_id)
        except asyncio.CancelledError:
            raise
        except repository.BalancesBusy as busy:  # rolled back: trading held them; the next run
            log.info("withdrawal.expiry_balances_busy", detail=busy.detail)
        except Exception:
            log.exception("withdrawal.expiry_failed")
        await asyncio.sleep(interval_s)
