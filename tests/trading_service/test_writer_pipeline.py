"""A writer that finds commands waiting after a cycle starts the next one at once and answers the
first cycle's requests once the next has matched: the answers still say what their own cycle did,
the feed hears the cycles in order, a next cycle that fails takes nothing from the first, and a
cycle that answered a probe is never held."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from exchange.trading.intents import ProbeIntent
from exchange.trading.models import TradingOrder
from exchange.trading.writer import MarketWriter
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


class _Heard:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def offer(self, message: str) -> None:
        self.messages.append(orjson.loads(message))


class _Cycles:
    """The writer's cycles, each seen as it begins (before it reads anything): what the book's
    feed had heard by then, and whether ``watched`` was answered. The cycles numbered in
    ``holding`` wait there until ``release`` is called; ``failing`` ones raise instead."""

    def __init__(
        self, writer: MarketWriter, heard: _Heard, holding: set[int], failing: set[int] | None = None
    ) -> None:
        self.known = writer._known_orders
        self.heard = heard
        self.holding, self.failing = holding, failing or set()
        self.begun = 0
        self.entered = {number: asyncio.Event() for number in holding}
        self.released = {number: asyncio.Event() for number in holding}
        self.watched: asyncio.Future[Any] | None = None
        self.heard_at_start: list[int] = []
        self.answered_at_start: list[bool] = []

    async def __call__(self, db: Any, places: Any) -> Any:
        self.begun += 1
        number = self.begun
        self.heard_at_start.append(len(self.heard.messages))
        self.answered_at_start.append(self.watched is not None and self.watched.done())
        if number in self.failing:
            raise RuntimeError("the connection broke")
        if number in self.holding:
            self.entered[number].set()
            await self.released[number].wait()
        return await self.known(db, places)

    def release(self) -> None:
        for event in self.released.values():
            event.set()


async def _setup(
    desk: Desk, seed: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Trader, Trader, MarketWriter, _Heard]:
    """A buyer and a seller with funds; the writer holding answers for even one waiting command;
    a subscriber to the book and to the buyer's orders."""
    buyer, seller = await desk.member(seed), await desk.member(seed + 1)
    await desk.deposit(buyer, desk.market["quote"], 1_000 * DOLLAR)
    await desk.deposit(seller, desk.market["base"], 10 * WHOLE)
    market = desk.trading.markets["BPC-TUSD"]
    monkeypatch.setattr(market.writer, "_pipeline_min", 1)
    heard = _Heard()
    market.feed.book_subscribers.add(heard)
    market.feed.add_private(market.feed.order_subscribers, buyer.address, heard)
    return buyer, seller, market.writer, heard


async def _queued(writer: MarketWriter, count: int) -> None:
    for _ in range(500):
        if writer.queued >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} commands never queued")


def _book(heard: _Heard) -> list[tuple[str, int]]:
    return [(m["type"], m["sequence"]) for m in heard.messages if m["channel"] == "book"]


async def test_an_answer_given_after_the_next_cycle_matched_says_what_its_own_cycle_did(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer, seller, writer, heard = await _setup(desk, 0xC1, monkeypatch)
    cycles = _Cycles(writer, heard, holding={1})
    monkeypatch.setattr(writer, "_known_orders", cycles)
    start = writer.sequence

    bid = asyncio.create_task(desk.place(buyer, "buy", price(9), WHOLE, client_order_id="resting"))
    try:
        await cycles.entered[1].wait()  # the bid's cycle has begun
        ask = asyncio.create_task(desk.place(seller, "sell", price(9), WHOLE, client_order_id="taker"))
        await _queued(writer, 1)  # the crossing ask waits for the next cycle
    finally:
        cycles.release()
    placed, taken = await bid, await ask

    # The ask's cycle began before the bid's cycle was told to anyone (held for its match) ...
    assert cycles.heard_at_start[:2] == [0, 0]
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
    assert _book(heard) == [("update", start + 1), ("update", start + 2)]
    head = await desk.journal()
    assert (head["sequence"], head["open_orders"]) == (start + 2, 0)


async def test_a_next_cycle_that_fails_gives_the_held_answers_first(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    buyer, seller, writer, heard = await _setup(desk, 0xC3, monkeypatch)
    cycles = _Cycles(writer, heard, holding={1}, failing={2})
    monkeypatch.setattr(writer, "_known_orders", cycles)
    start = writer.sequence
    bid = asyncio.create_task(desk.place(buyer, "buy", price(9), WHOLE, client_order_id="kept"))
    try:
        await cycles.entered[1].wait()
        ask = asyncio.create_task(desk.place(seller, "sell", price(9), WHOLE, client_order_id="lost"))
        await _queued(writer, 1)
    finally:
        cycles.release()
    placed, failed = await bid, await ask

    assert cycles.heard_at_start[:2] == [0, 0]  # the failing cycle began with the answers held
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "open"
    assert failed.status_code == 503, failed.text
    # The committed cycle reached the feed before the recovery's fresh snapshot, not after it.
    assert _book(heard) == [("update", start + 1), ("snapshot", start + 1)]
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


async def test_a_cycle_that_answered_a_probe_is_not_held(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    buyer, seller, writer, heard = await _setup(desk, 0xC5, monkeypatch)
    cycles = _Cycles(writer, heard, holding={1, 2})
    monkeypatch.setattr(writer, "_known_orders", cycles)
    first = asyncio.create_task(desk.place(buyer, "buy", price(8), WHOLE, client_order_id="first"))
    try:
        await cycles.entered[1].wait()
        # The next cycle: a probe (whose caller reads the book when answered) and an order.
        probe = cycles.watched = asyncio.ensure_future(writer.submit(ProbeIntent()))
        second = asyncio.create_task(desk.place(buyer, "buy", price(9), WHOLE, client_order_id="second"))
        await _queued(writer, 2)
        cycles.released[1].set()
        await cycles.entered[2].wait()
        third = asyncio.create_task(desk.place(seller, "sell", price(9), WHOLE, client_order_id="third"))
        await _queued(writer, 1)  # waiting while the probe's cycle runs
    finally:
        cycles.release()
    assert all(reply.status_code == 201 for reply in await asyncio.gather(first, second, third))
    assert (await probe).sequence >= 2
    # The first cycle was held for the second (two commands waited), the probe's was not.
    assert cycles.answered_at_start[:3] == [False, False, True]
