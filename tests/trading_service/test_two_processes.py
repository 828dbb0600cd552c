"""Two processes following the Vault on one database (two `exchange serve`, or one and `exchange settle`)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from exchange.settings import Settings
from exchange.trading.indexer import IndexedEvent
from exchange.trading.models import TradingFill
from exchange.trading.operator import BroadcastRefused
from exchange.trading.settlement import StepOutcome
from exchange.trading.settlement_models import SettlementFailure
from exchange.trading.settlement_service import build_settlement
from tests.support.auth import embedded_account
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, price


async def test_a_deposit_is_credited_once_when_two_indexers_credit_at_once(
    desk: Desk, settings: Settings
) -> None:
    served = desk.app.state.settlement.indexer
    other = build_settlement(desk.chain, settings, desk.trading.sessionmaker).indexer  # a second process
    carol = await desk.member(embedded_account(5))
    await served.catch_up()
    desk.deposit_quote_in_vault(carol, 5 * DOLLAR)

    credit = served.handler.credit
    racing: list[asyncio.Task[object]] = []

    async def credit_while_the_other_passes(session: object, event: IndexedEvent) -> None:
        if not racing:  # the other process's pass starts while this one is crediting
            racing.append(asyncio.create_task(other.catch_up()))
            await asyncio.sleep(0.5)
        await credit(session, event)  # type: ignore[arg-type]

    served.handler.credit = credit_while_the_other_passes  # type: ignore[method-assign]
    await served.catch_up()
    await racing[0]  # waited for the first pass's lock, then found the deposit credited
    assert (await desk.balances(carol))[desk.market["quote"]]["total"] == 5 * DOLLAR
    assert (await desk.app.state.settlement.audit()).clean


async def test_a_fill_needing_the_other_settlers_batch_in_flight_is_not_failed(
    desk: Desk, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """f1: bob buys alice's BPC; f2: bob sells it on to carol. The other settler has f1 in a batch
    not mined yet; this one, judging f2 alone, sees bob without BPC on chain. It must not fail f2."""
    market, pool = desk.market, desk.chain.pool
    alice, bob, carol = [await desk.member(embedded_account(index)) for index in (6, 5, 7)]
    pool.mint_bpc(alice.address, WHOLE)
    pool.approve_bpc(market["vault"], WHOLE, sender=alice.address)
    pool.vault.transact("deposit", market["base"], WHOLE, sender=alice.address)
    for buyer in (bob, carol):
        desk.deposit_quote_in_vault(buyer, 100 * DOLLAR)
    settlement = desk.app.state.settlement
    await settlement.indexer.catch_up()
    for trader, side, time_in_force in (
        (alice, "sell", "GTC"),
        (bob, "buy", "IOC"),
        (carol, "buy", "GTC"),
        (bob, "sell", "IOC"),
    ):
        reply = await desk.place(trader, side, price(5), WHOLE, time_in_force=time_in_force)
        assert reply.status_code == 201, reply.text

    other = build_settlement(
        desk.chain, settings.model_copy(update={"settlement_batch_size": 1}), desk.trading.sessionmaker
    ).settler
    broadcast = other.operator.broadcast

    def not_mined_yet(tx: object, signed: object) -> str:
        raise BroadcastRefused("the node is slow to take it")

    monkeypatch.setattr(other.operator, "broadcast", not_mined_yet)
    served = settlement.settler
    open_batch = served._open

    async def open_after_the_other() -> StepOutcome:  # this settler found no batch open; now there is one
        assert await other.step() is StepOutcome.OPENED
        return await open_batch()

    monkeypatch.setattr(served, "_open", open_after_the_other)
    assert await served.step() is StepOutcome.WAITING
    async with desk.trading.sessionmaker() as session:
        states = (await session.scalars(select(TradingFill.settlement_state).order_by(TradingFill.id))).all()
        assert (await session.scalars(select(SettlementFailure))).all() == []
    assert states == ["submitted", "pending"]

    monkeypatch.setattr(other.operator, "broadcast", broadcast)
    monkeypatch.setattr(served, "_open", open_batch)
    await other.drain(poll_s=0.01, timeout_s=60)  # f1 mined; then f2, which now settles
    async with desk.trading.sessionmaker() as session:
        states = (await session.scalars(select(TradingFill.settlement_state).order_by(TradingFill.id))).all()
    assert states == ["settled", "settled"]
    await settlement.indexer.catch_up()
    assert (await settlement.audit()).clean
