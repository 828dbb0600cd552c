"""Two processes following the Vault on one database (two `exchange serve`, or one and `exchange settle`)."""

from __future__ import annotations

import asyncio

from exchange.settings import Settings
from exchange.trading.indexer import IndexedEvent
from exchange.trading.settlement_service import build_settlement
from tests.support.auth import embedded_account
from tests.trading_service.desk import DOLLAR, Desk


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
