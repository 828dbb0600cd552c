"""Two processes following the Vault on one database (two `exchange serve`, or one and `exchange settle`)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from exchange.settings import Settings
from exchange.trading import settlement_repository as store
from exchange.trading.indexer import IndexedEvent
from exchange.trading.models import TradingFill
from exchange.trading.operator import BroadcastRefused
from exchange.trading.settlement import Settler, StepOutcome
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


def _not_mined_yet(tx: object, signed: object) -> str:
    raise BroadcastRefused("the node is slow to take it")


async def _f1_then_f2(desk: Desk, settings: Settings) -> Settler:
    """f1: bob buys alice's BPC; f2: bob sells it on to carol; both pending. The other settler."""
    market, pool = desk.market, desk.chain.pool
    alice, bob, carol = [await desk.member(embedded_account(index)) for index in (6, 5, 7)]
    pool.mint_bpc(alice.address, WHOLE)
    pool.approve_bpc(market["vault"], WHOLE, sender=alice.address)
    pool.vault.transact("deposit", market["base"], WHOLE, sender=alice.address)
    for buyer in (bob, carol):
        desk.deposit_quote_in_vault(buyer, 100 * DOLLAR)
    await desk.app.state.settlement.indexer.catch_up()
    for trader, side, time_in_force in (
        (alice, "sell", "GTC"),
        (bob, "buy", "IOC"),
        (carol, "buy", "GTC"),
        (bob, "sell", "IOC"),
    ):
        reply = await desk.place(trader, side, price(5), WHOLE, time_in_force=time_in_force)
        assert reply.status_code == 201, reply.text
    return build_settlement(
        desk.chain, settings.model_copy(update={"settlement_batch_size": 1}), desk.trading.sessionmaker
    ).settler


async def test_a_fill_needing_the_other_settlers_batch_in_flight_is_not_failed(
    desk: Desk, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """f1: bob buys alice's BPC; f2: bob sells it on to carol. The other settler has f1 in a batch
    not mined yet; this one, judging f2 alone, sees bob without BPC on chain. It must not fail f2."""
    settlement = desk.app.state.settlement
    other = await _f1_then_f2(desk, settings)
    broadcast = other.operator.broadcast

    monkeypatch.setattr(other.operator, "broadcast", _not_mined_yet)
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


async def test_a_fill_judged_while_the_other_settlers_batch_was_mined_and_closed_is_not_failed(
    desk: Desk, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, and had this settler judged f2 alone, the other's batch would have been mined and
    closed meanwhile: by the time it failed f2, no batch was open and f2 was still pending. A
    settler judges nothing while another's batch is in flight."""
    settlement = desk.app.state.settlement
    other = await _f1_then_f2(desk, settings)
    broadcast = other.operator.broadcast

    served = settlement.settler
    open_batch, isolate = served._open, served._isolate

    async def open_after_the_other() -> StepOutcome:  # this settler found no batch open; now there is one
        monkeypatch.setattr(other.operator, "broadcast", _not_mined_yet)
        assert await other.step() is StepOutcome.OPENED
        monkeypatch.setattr(other.operator, "broadcast", broadcast)
        return await open_batch()

    async def isolate_once_the_other_closed_its_batch(*args: Any) -> object:
        assert await other.step() is StepOutcome.SETTLED  # sent again, mined and closed
        return await isolate(*args)

    monkeypatch.setattr(served, "_open", open_after_the_other)
    monkeypatch.setattr(served, "_isolate", isolate_once_the_other_closed_its_batch)
    assert await served.step() is StepOutcome.WAITING  # a batch in flight when it read f2: no judgement
    async with desk.trading.sessionmaker() as session:
        assert (await session.scalars(select(SettlementFailure))).all() == []
        states = (await session.scalars(select(TradingFill.settlement_state).order_by(TradingFill.id))).all()
    assert states[1] == "pending"

    monkeypatch.setattr(served, "_open", open_batch)
    monkeypatch.setattr(served, "_isolate", isolate)
    await other.drain(poll_s=0.01, timeout_s=60)
    await served.drain(poll_s=0.01, timeout_s=60)
    async with desk.trading.sessionmaker() as session:
        states = (await session.scalars(select(TradingFill.settlement_state).order_by(TradingFill.id))).all()
    assert states == ["settled", "settled"]
    await settlement.indexer.catch_up()
    assert (await settlement.audit()).clean


async def test_a_judgement_made_before_a_batch_was_opened_fails_no_fill(
    desk: Desk, settings: Settings
) -> None:
    """The other settler opened, mined and closed f1's batch after this one began judging f2 (on
    the chain before f1): however the judgement went, f2 is not failed but judged again."""
    settlement = desk.app.state.settlement
    other = await _f1_then_f2(desk, settings)
    async with desk.trading.sessionmaker() as session:
        assert (await store.newest_batch(session, settlement.settler.vault.address)).id is None
        _, f2 = await store.pending_fills(session, 10)
    outcomes = [await other.step() for _ in range(2)]
    assert outcomes == [StepOutcome.OPENED, StepOutcome.SETTLED]  # f1 alone: the other's batch size is 1

    failed = await settlement.settler._fail(
        f2, "VaultInsufficientBalance", {}, batch_id=None, judged_after=None
    )
    assert failed is StepOutcome.WAITING
    async with desk.trading.sessionmaker() as session:
        assert (await session.scalars(select(SettlementFailure))).all() == []
    await settlement.settler.drain(poll_s=0.01, timeout_s=60)
    async with desk.trading.sessionmaker() as session:
        states = (await session.scalars(select(TradingFill.settlement_state).order_by(TradingFill.id))).all()
    assert states == ["settled", "settled"]
    await settlement.indexer.catch_up()
    assert (await settlement.audit()).clean
