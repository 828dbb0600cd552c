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
:func:`expire_open_withdrawals` in the transaction that posts the exit.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3

from exchange.kit.logging import get_logger
from exchange.trading import ledger, repository
from exchange.trading.chain_calls import ChainCalls
from exchange.trading.models import TradingWithdrawal, WithdrawalStatus
from exchange.trading.settlement_models import ChainCursor

log = get_logger(__name__)


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
        rows = (
            await session.scalars(
                select(TradingWithdrawal)
                .where(
                    TradingWithdrawal.status == WithdrawalStatus.AUTHORISED.value,
                    TradingWithdrawal.expiry_unix <= block_time,
                )
                .order_by(TradingWithdrawal.id)
                .with_for_update()
            )
        ).all()
        for row in rows:
            await _expire(session, row, reason="expiry")
    return len(rows)


async def expire_open_withdrawals(session: AsyncSession, account: str, *, reason: str) -> int:
    """Expire every authorisation of ``account`` still open, in the caller's transaction; how many."""
    rows = (
        await session.scalars(
            select(TradingWithdrawal)
            .where(
                TradingWithdrawal.account == account,
                TradingWithdrawal.status == WithdrawalStatus.AUTHORISED.value,
            )
            .order_by(TradingWithdrawal.id)
            .with_for_update()
        )
    ).all()
    for row in rows:
        await _expire(session, row, reason=reason)
    return len(rows)


async def _expire(session: AsyncSession, row: TradingWithdrawal, *, reason: str) -> None:
    """Mark ``row`` expired and release its reservation."""
    row.status = WithdrawalStatus.EXPIRED.value
    await repository.apply_postings(
        session,
        ledger.release(row.account, row.token, row.amount),
        cause="withdrawal.expired",
        reference=f"withdrawal:{row.id}",
    )
    log.info("withdrawal.expired", account=row.account, nonce=row.nonce, amount=row.amount, reason=reason)


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
        except Exception:
            log.exception("withdrawal.expiry_failed")
        await asyncio.sleep(interval_s)
