"""The public journal head: the whole book is hashed once per state, and at most once per interval."""

from __future__ import annotations

import asyncio

import pytest

from exchange.chain.runtime import ChainRuntime
from exchange.orderbook import OrderBook
from exchange.settings import Settings
from tests.trading_service.conftest import start_desk
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, price


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    state_hash = OrderBook.state_hash

    def counted(book: OrderBook) -> bytes:
        calls.append(1)
        return state_hash(book)

    monkeypatch.setattr(OrderBook, "state_hash", counted)
    return calls


async def _resting_orders(desk: Desk) -> None:
    alice = await desk.member(0x91)
    await desk.deposit(alice, desk.market["quote"], 1_000 * DOLLAR)
    for dollars in (5, 6, 7):
        assert (await desk.place(alice, "buy", price(dollars), WHOLE)).status_code == 201


async def test_many_readers_at_once_cost_one_hash_of_the_book(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _resting_orders(desk)
    hashes = _count_hashes(monkeypatch)
    replies = await asyncio.gather(
        *(desk.client.get("/v1/markets/BPC-TUSD/journal") for _ in range(50))  # no sign-in needed
    )
    assert {reply.status_code for reply in replies} == {200}
    assert len({reply.text for reply in replies}) == 1
    assert replies[0].json()["open_orders"] == 3
    assert len(hashes) == 1


async def test_the_head_is_reused_for_the_interval(
    settings: Settings, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for desk in start_desk(
        settings.model_copy(update={"trading_journal_head_interval_s": 3600}), chain_runtime
    ):
        first = (await desk.client.get("/v1/markets/BPC-TUSD/journal")).json()
        hashes = _count_hashes(monkeypatch)
        await _resting_orders(desk)
        again = (await desk.client.get("/v1/markets/BPC-TUSD/journal")).json()
        assert again == first  # probed less than the interval ago
        assert hashes == []
        writer = desk.trading.market("BPC-TUSD").writer
        fresh = await writer.recent_head(0)
        assert (fresh.sequence, fresh.open_orders) == (first["sequence"] + 3, 3)
        assert len(hashes) == 1
