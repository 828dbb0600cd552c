"""The pool index's last traded price is the BPC market's last trade, as its ticker answers it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from exchange.chain.runtime import ChainRuntime
from exchange.settings import Settings
from tests.trading_service.conftest import start_desk, trading_settings
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


@pytest.fixture
def settings(database_url: str) -> Settings:
    return trading_settings(database_url)


@pytest.fixture
async def desk(settings: Settings, chain_runtime: ChainRuntime) -> AsyncIterator[Desk]:
    async for started in start_desk(settings, chain_runtime):
        yield started


async def _stats(desk: Desk) -> dict[str, Any]:
    reply = await desk.client.get("/v1/pool/stats")
    assert reply.status_code == 200, reply.text
    stats: dict[str, Any] = reply.json()
    return stats


async def _traders(desk: Desk) -> tuple[Trader, Trader]:
    market = desk.market
    seller, buyer = await desk.member(0x71), await desk.member(0x72)
    for trader in (seller, buyer):
        await desk.deposit(trader, market["base"], 100 * WHOLE)
        await desk.deposit(trader, market["quote"], 10_000 * DOLLAR)
    return seller, buyer


async def _trade(desk: Desk, seller: Trader, buyer: Trader, price_quote: int) -> int:
    """One whole BPC changes hands at ``price_quote``; the trade's id."""
    assert (await desk.place(seller, "sell", price_quote, WHOLE)).status_code == 201
    assert (await desk.place(buyer, "buy", price_quote, WHOLE)).status_code == 201
    trades = (await desk.client.get(f"/v1/markets/{desk.market['id']}/trades")).json()["items"]
    assert trades[0]["price"] == str(price_quote)
    return int(trades[0]["id"])


async def test_last_traded_price_is_the_bpc_market_s_last_trade(desk: Desk) -> None:
    assert desk.market["base"] == desk.chain.pool.bpc.address  # the market trades BPC
    assert (await _stats(desk))["last_traded_price"] is None  # no trade yet

    seller, buyer = await _traders(desk)
    await _trade(desk, seller, buyer, price(10))
    stats = await _stats(desk)
    assert stats["last_traded_price"] == str(price(10)) == "10000000"  # TUSD base units per BPC
    ticker = (await desk.client.get(f"/v1/markets/{desk.market['id']}/ticker")).json()
    assert ticker["last"] == stats["last_traded_price"]

    await _trade(desk, seller, buyer, price(12.5))
    assert (await _stats(desk))["last_traded_price"] == str(price(12.5))  # not the cached one


async def test_a_trade_whose_settlement_failed_is_not_the_last_price(desk: Desk) -> None:
    seller, buyer = await _traders(desk)
    first = await _trade(desk, seller, buyer, price(10))
    latest = await _trade(desk, seller, buyer, price(12.5))
    assert (await _stats(desk))["last_traded_price"] == str(price(12.5))

    await desk.fail_fills([latest], settler_here=True)
    assert (await _stats(desk))["last_traded_price"] == str(price(10))
    await desk.fail_fills([first], settler_here=True)
    assert (await _stats(desk))["last_traded_price"] is None  # no trade left that happened


async def test_without_the_trading_service_the_price_is_null(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    seller, buyer = await _traders(desk)
    await _trade(desk, seller, buyer, price(10))
    monkeypatch.delattr(desk.app.state, "trading")
    stats = await _stats(desk)
    assert stats["last_traded_price"] is None
    assert stats["bpc_supply_wei"] == str(desk.chain.pool.bpc_supply())  # the rest answers as before
