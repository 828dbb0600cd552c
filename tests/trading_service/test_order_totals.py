"""An order's fill totals (CCXT's cost, average, fee and lastTradeTimestamp) agree with its trades."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command

from exchange.chain.runtime import ChainRuntime
from exchange.db.migrate import alembic_config
from exchange.settings import Settings
from exchange.trading.amounts import PRICE_SCALE_BASE
from tests.trading_service.conftest import start_desk
from tests.trading_service.desk import Desk
from tests.trading_service.test_market_data import FLOW_TRADERS, _random_flow

BEFORE_TOTALS = "e2b7c9d41a56"  # the revision before the order rows kept their fill totals


def _expected(order: dict[str, Any], trades: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals of ``order`` as the sums over its own trades."""
    mine = [trade for trade in trades if trade["order"] == order["id"]]
    cost = sum(int(trade["cost"]) for trade in mine)
    filled = sum(int(trade["amount"]) for trade in mine)
    assert str(filled) == order["filled"]
    return {
        "cost": str(cost),
        "average": str(cost * PRICE_SCALE_BASE // filled) if filled else None,
        "fee": {"cost": str(sum(int(trade["fee"]["cost"]) for trade in mine)), "currency": "TUSD"},
        "last_trade_timestamp": max((trade["timestamp"] for trade in mine), default=None),
    }


def _totals(order: dict[str, Any]) -> dict[str, Any]:
    return {name: order[name] for name in ("cost", "average", "fee", "last_trade_timestamp")}


async def _orders_and_trades(desk: Desk) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Each of the random flow's traders' orders and trades, as they list them."""
    traders = [await desk.member(key, admit=False) for key in FLOW_TRADERS]
    return [
        (await desk.listed(trader, "/v1/orders"), await desk.listed(trader, "/v1/account/trades"))
        for trader in traders
    ]


async def test_each_order_totals_its_own_fills(desk: Desk) -> None:
    await _random_flow(desk, seed=21, orders=60)
    filled = 0
    for orders, trades in await _orders_and_trades(desk):
        for order in orders:
            assert _totals(order) == _expected(order, trades), order
            filled += order["filled"] != "0"
    assert filled >= 10, "the random flow should fill orders"

    # A fresh order has no totals yet; its answer and its later reads agree.
    alice = await desk.member(FLOW_TRADERS[0], admit=False)
    placed = await desk.place(alice, "buy", 10**4, 10**16)
    assert placed.status_code == 201, placed.text
    assert _totals(placed.json()) == {
        "cost": "0",
        "average": None,
        "fee": {"cost": "0", "currency": "TUSD"},
        "last_trade_timestamp": None,
    }


async def test_the_migration_sums_the_fills_already_recorded(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    async for desk in start_desk(settings, chain_runtime):
        await _random_flow(desk, seed=22, orders=50)
        before = await _orders_and_trades(desk)
    assert any(order["cost"] != "0" for orders, _ in before for order in orders)

    config = alembic_config(settings.database_url)
    await asyncio.to_thread(command.downgrade, config, BEFORE_TOTALS)
    await asyncio.to_thread(command.upgrade, config, "head")

    async for desk in start_desk(settings, chain_runtime):
        assert await _orders_and_trades(desk) == before
