"""How the writer moves from one cycle to the next."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exchange.trading import market_claim
from exchange.trading.intents import Intent
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, price


async def test_commands_queued_during_a_cycle_start_the_next_before_its_answers_go_out(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await desk.member(0x91)
    await desk.deposit(alice, desk.market["quote"], 1_000 * DOLLAR)
    writer = desk.trading.market("BPC-TUSD").writer
    events: list[str] = []
    started, all_queued, gate = asyncio.Event(), asyncio.Event(), asyncio.Event()
    enqueued: list[Intent] = []
    cycle = writer._cycle
    enqueue = writer.enqueue

    async def traced_cycle(batch: list[Intent]) -> Any:
        events.append(f"cycle of {len(batch)}")
        started.set()
        if len(events) == 1:
            await gate.wait()  # the others queue meanwhile
        return await cycle(batch)

    def traced_enqueue(intent: Intent) -> None:
        enqueue(intent)
        intent.future.add_done_callback(lambda _: events.append("answered"))
        enqueued.append(intent)
        if len(enqueued) == 3:
            all_queued.set()

    # No claim check due between the cycles (it awaits the database): not what is tested here.
    monkeypatch.setattr(market_claim, "CHECK_S", 3600.0)
    monkeypatch.setattr(writer, "_cycle", traced_cycle)
    monkeypatch.setattr(writer, "enqueue", traced_enqueue)
    first = asyncio.create_task(desk.place(alice, "buy", price(5), WHOLE))
    await started.wait()
    rest = [asyncio.create_task(desk.place(alice, "buy", price(dollars), WHOLE)) for dollars in (6, 7)]
    await all_queued.wait()
    gate.set()
    replies = await asyncio.gather(first, *rest)
    assert [reply.status_code for reply in replies] == [201, 201, 201]
    # The second cycle began before the first one's answer reached anyone waiting for it.
    assert events == ["cycle of 1", "cycle of 2", "answered", "answered", "answered"]
