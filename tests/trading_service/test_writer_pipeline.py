"""A writer that finds commands waiting after a cycle starts the next one at once and answers the
first cycle's requests once the next has matched: the answers still say what their own cycle did,
the feed hears the cycles in order, and a next cycle that fails takes nothing from the first."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from exchange.trading.models import TradingOrder
from exchange.trading.writer import MarketWriter
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


class _Heard:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def offer(self, message: str) -> None:
        self.messages.append(orjson.loads(message))


class _Held:
    """The writer's first cycle held before it reads anything, until released; whether ``watched``
    was answered when each cycle began."""

    def __init__(self, writer: MarketWriter) -> None:
        self.known = writer._known_orders
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.watched: asyncio.Task[Any] | None = None
        self.answered_at_start: list[bool] = []

    async def __call__(self, db: Any, places: Any) -> Any:
        self.answered_at_start.append(self.watched is not None and self.watched.done())
        if not self.entered.is_set():
            self.entered.set()
            await self.release.wait()
        return await self.known(db, places)


async def _traders(desk: Desk, seed: int) -> tuple[Trader, Trader, MarketWriter]:
    buyer, seller = await desk.member(seed), await desk.member(seed + 1)
    await desk.deposit(buyer, desk.market["quote"], 1_000 * DOLLAR)
    await desk.deposit(seller, desk.market["base"], 10 * WHOLE)
    return buyer, seller, desk.trading.markets["BPC-TUSD"].writer


async def _queued(writer: MarketWriter, count: int) -> None:
    for _ in range(500):
        if writer.queued >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} commands never queued")


async def test_an_answer_given_after_the_next_cycle_matched_says_what_its_own_cycle_did(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer, seller, writer = await _traders(desk, 0xC1)
    feed = desk.trading.markets["BPC-TUSD"].feed
    heard = _Heard()
    feed.add_private(feed.order_subscribers, buyer.address, heard)
    held = _Held(writer)
    monkeypatch.setattr(writer, "_known_orders", held)
    start = writer.sequence

    bid = held.watched = asyncio.create_task(
        desk.place(buyer, "buy", price(9), WHOLE, client_order_id="resting")
    )
    try:
        await held.entered.wait()  # the bid's cycle has begun
        ask = asyncio.create_task(desk.place(seller, "sell", price(9), WHOLE, client_order_id="taker"))
        await _queued(writer, 1)  # the crossing ask waits for the next cycle
    finally:
        held.release.set()
    placed, taken = await bid, await ask

    # The next cycle began before the bid was answered (the answer waited for its match) ...
    assert held.answered_at_start == [False, False]
    # ... yet the bid's answer is its own cycle's: resting, unfilled. The ask's cycle filled it.
    assert placed.status_code == 201, placed.text
    assert (placed.json()["status"], placed.json()["filled"]) == ("open", "0")
    assert taken.status_code == 201, taken.text
    assert (taken.json()["status"], taken.json()["filled"]) == ("closed", str(WHOLE))
    bid_now = await desk.order(buyer, placed.json()["id"])
    assert (bid_now["status"], bid_now["filled"]) == ("closed", str(WHOLE))
    # The feed heard the two cycles in order: the bid resting, then filled.
    updates = [
        (order["status"], order["filled"])
        for message in heard.messages
        if message["channel"] == "orders"
        for order in message["data"]
    ]
    assert updates == [("open", "0"), ("closed", str(WHOLE))]
    head = await desk.journal()
    assert (head["sequence"], head["open_orders"]) == (start + 2, 0)


async def test_a_next_cycle_that_fails_takes_nothing_from_the_answered_one(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer, seller, writer = await _traders(desk, 0xC3)

    held = _Held(writer)
    monkeypatch.setattr(writer, "_known_orders", held)
    write = writer._write
    writes = 0

    async def second_fails(cycle: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 2:
            raise RuntimeError("the disk is full")
        await write(cycle)

    monkeypatch.setattr(writer, "_write", second_fails)
    start = writer.sequence
    bid = held.watched = asyncio.create_task(
        desk.place(buyer, "buy", price(9), WHOLE, client_order_id="kept")
    )
    try:
        await held.entered.wait()
        ask = asyncio.create_task(desk.place(seller, "sell", price(9), WHOLE, client_order_id="lost"))
        await _queued(writer, 1)
    finally:
        held.release.set()
    placed, failed = await bid, await ask

    assert held.answered_at_start[:2] == [False, False]  # the failing cycle began before the answer
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "open"
    assert failed.status_code == 503, failed.text
    async with desk.trading.sessionmaker() as session:
        stored = await session.scalars(select(TradingOrder.client_order_id).order_by(TradingOrder.id))
        assert list(stored)[-1] == "kept"
        assert await session.scalar(select(func.count()).select_from(TradingOrder)) == start + 1
    head = await desk.journal()
    assert (head["sequence"], head["open_orders"]) == (start + 1, 1)
    monkeypatch.undo()
    retried = await desk.place(seller, "sell", price(9), WHOLE, client_order_id="lost")
    assert retried.status_code == 201, retried.text
    assert retried.json()["status"] == "closed"
