"""Replacing an open order (``POST /v1/orders/{id}/replace``): cancel and place in one cycle, or neither."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from exchange.trading.writer import MarketWriter
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


async def _funded(desk: Desk, key: int, *, base: int = 0, quote: int = 0) -> Trader:
    trader = await desk.member(key)
    if base:
        await desk.deposit(trader, desk.market["base"], base)
    if quote:
        await desk.deposit(trader, desk.market["quote"], quote)
    return trader


async def _asks(desk: Desk) -> list[str]:
    book = (await desk.client.get(f"/v1/markets/{desk.market['id']}/orderbook")).json()
    return [level[0] for level in book["asks"]]


async def _post(desk: Desk, trader: Trader, order_id: str, body: dict[str, Any]) -> httpx.Response:
    return await desk.client.post(f"/v1/orders/{order_id}/replace", json=body, headers=trader.headers)


async def test_a_replacement_cancels_the_order_and_rests_in_its_stead(desk: Desk) -> None:
    alice = await _funded(desk, 0x91, base=3 * WHOLE)
    first = await desk.place(alice, "sell", price(12), 3 * WHOLE)
    assert first.status_code == 201, first.text
    before = await desk.journal()

    # All of alice's BPC is reserved for the first ask: the second needs the first's released.
    body = desk.order_body(alice, "sell", price(11.5), 3 * WHOLE, client_order_id="ask-2")
    second = await _post(desk, alice, first.json()["id"], body)
    assert second.status_code == 201, second.text
    assert (second.json()["status"], second.json()["price"]) == ("open", str(price(11.5)))
    replaced = await desk.order(alice, first.json()["id"])
    assert (replaced["status"], replaced["cancel_reason"]) == ("canceled", "replaced")
    balances = await desk.balances(alice)
    assert balances[desk.market["base"]] == {"total": 3 * WHOLE, "available": 0, "reserved": 3 * WHOLE}
    after = await desk.journal()
    assert after["sequence"] == before["sequence"] + 2  # the cancel, then the new order
    assert after["open_orders"] == before["open_orders"]
    assert await _asks(desk) == [str(price(11.5))]

    # Sent again (a retry), the replacement is answered and nothing else happens.
    again = await _post(desk, alice, first.json()["id"], body)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == second.json()["id"]
    assert await desk.journal() == after


async def test_a_replacement_that_crosses_trades(desk: Desk) -> None:
    alice = await _funded(desk, 0x92, base=3 * WHOLE)
    bob = await _funded(desk, 0x93, quote=1_000 * DOLLAR)
    bid = await desk.place(bob, "buy", price(10), WHOLE)
    ask = await desk.place(alice, "sell", price(12), 2 * WHOLE)
    taken = await desk.replace(alice, ask.json()["id"], "sell", price(10), 2 * WHOLE)
    assert taken.status_code == 201, taken.text
    assert (taken.json()["filled"], taken.json()["status"]) == (str(WHOLE), "open")
    assert (await desk.order(bob, bid.json()["id"]))["status"] == "closed"
    assert await _asks(desk) == [str(price(10))]


async def test_an_order_that_ended_is_not_replaced_and_nothing_is_placed(desk: Desk) -> None:
    alice = await _funded(desk, 0x94, base=3 * WHOLE)
    bob = await _funded(desk, 0x95, quote=1_000 * DOLLAR)
    ask = await desk.place(alice, "sell", price(10), WHOLE)
    await desk.place(bob, "buy", price(10), WHOLE)  # fills the ask
    cancelled = await desk.place(alice, "sell", price(13), WHOLE)
    await desk.client.delete(f"/v1/orders/{cancelled.json()['id']}", headers=alice.headers)
    head = await desk.journal()
    for ended in (ask, cancelled):
        reply = await desk.replace(
            alice, ended.json()["id"], "sell", price(11), WHOLE, client_order_id="late"
        )
        assert reply.status_code == 409, reply.text
        assert reply.json()["type"].endswith("/order-not-open")
    assert await desk.journal() == head
    assert "late" not in {order["client_order_id"] for order in await desk.orders(alice)}
    missing = await desk.replace(alice, 10**9, "sell", price(11), WHOLE)
    assert missing.status_code == 404, missing.text


async def test_an_order_placed_on_its_own_is_not_taken_for_a_replacement(desk: Desk) -> None:
    """A replace whose new order was already placed through ``POST /v1/orders`` (same client order
    id, same signed order) while the order to replace is still open: that order was not placed in
    its stead. Answering it as a resend would tell the client the old order is gone."""
    alice = await _funded(desk, 0x9A, base=3 * WHOLE)
    old = desk.order_body(alice, "sell", price(12), WHOLE, client_order_id="to-replace")
    new = desk.order_body(alice, "sell", price(11), WHOLE, client_order_id="on-its-own")
    ask, placed = [
        await desk.client.post("/v1/orders", json=body, headers=alice.headers) for body in (old, new)
    ]
    assert (ask.status_code, placed.status_code) == (201, 201), (ask.text, placed.text)
    head = await desk.journal()
    balances = await desk.balances(alice)
    # The new order placed on its own, and the order to replace sent as its own replacement.
    for body in (new, old):
        reply = await _post(desk, alice, ask.json()["id"], body)
        assert reply.status_code == 409, reply.text
        assert reply.json()["type"].endswith("/order-conflict"), reply.text
        assert "still open" in reply.json()["detail"]
    assert (await desk.order(alice, ask.json()["id"]))["status"] == "open"
    assert await desk.journal() == head
    assert await desk.balances(alice) == balances
    assert sorted(await _asks(desk)) == sorted([str(price(11)), str(price(12))])


async def test_a_refused_replacement_leaves_the_order_as_it_was(desk: Desk) -> None:
    alice = await _funded(desk, 0x96, base=2 * WHOLE, quote=100 * DOLLAR)
    bob = await _funded(desk, 0x97, quote=1_000 * DOLLAR)
    await desk.place(bob, "buy", price(9), WHOLE)
    ask = await desk.place(alice, "sell", price(12), 2 * WHOLE)
    order_id = ask.json()["id"]
    head = await desk.journal()
    balances = await desk.balances(alice)
    refusals = [
        # More BPC than alice has, even with the ask's 2 released.
        (desk.order_body(alice, "sell", price(12), 3 * WHOLE), 409, "insufficient-balance"),
        # A buy reserves quote: the ask's BPC does not count for it.
        (desk.order_body(alice, "buy", price(8), 20 * WHOLE), 409, "insufficient-balance"),
        # Post only, and it would trade with bob's bid.
        (desk.order_body(alice, "sell", price(9), WHOLE, time_in_force="PO"), 409, "post-only-would-take"),
        # Its client order id is the ask's own.
        (
            desk.order_body(alice, "sell", price(11), WHOLE, client_order_id=ask.json()["client_order_id"]),
            409,
            "order-conflict",
        ),
        (desk.order_body(alice, "sell", price(11), WHOLE, expiry=1), 422, "order-expired"),
    ]
    for body, status, problem in refusals:
        reply = await _post(desk, alice, order_id, body)
        assert reply.status_code == status, reply.text
        assert reply.json()["type"].endswith("/" + problem), reply.text
        assert (await desk.order(alice, order_id))["status"] == "open"
        assert await desk.journal() == head
        assert await desk.balances(alice) == balances


async def test_a_post_only_replacement_may_sit_where_the_order_it_replaces_was(desk: Desk) -> None:
    """With the replaced order gone the book does not cross: a post-only replacement on the other
    side, at the price of the order it replaces, rests."""
    alice = await _funded(desk, 0x98, base=2 * WHOLE, quote=100 * DOLLAR)
    bid = await desk.place(alice, "buy", price(10), WHOLE)
    ask = await desk.replace(alice, bid.json()["id"], "sell", price(10), WHOLE, time_in_force="PO")
    assert ask.status_code == 201, ask.text
    assert ask.json()["status"] == "open"
    assert await _asks(desk) == [str(price(10))]


async def test_a_replacement_that_would_not_rest_is_refused(desk: Desk) -> None:
    """An IOC or FOK replacement that did not fill would leave neither order: refused, 422."""
    alice = await _funded(desk, 0x99, base=2 * WHOLE)
    ask = await desk.place(alice, "sell", price(12), WHOLE)
    head = await desk.journal()
    for time_in_force in ("IOC", "FOK"):
        reply = await desk.replace(
            alice, ask.json()["id"], "sell", price(30), WHOLE, time_in_force=time_in_force
        )
        assert reply.status_code == 422, reply.text
        assert reply.json()["errors"][0]["loc"] == ["body", "time_in_force"]
    assert (await desk.order(alice, ask.json()["id"]))["status"] == "open"
    assert await desk.journal() == head


async def test_a_replacement_is_judged_by_one_clock_reading_per_cycle(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock passes the replacement's time to leave the book while its cycle cancels the old
    order: the cycle's one reading decides, so the replace is not refused after its cancel (which
    failed the whole cycle, 503, and rebuilt the book)."""
    alice = await _funded(desk, 0x9B, base=3 * WHOLE)
    first = await desk.place(alice, "sell", price(12), WHOLE)
    assert first.status_code == 201, first.text
    writer = desk.trading.markets[desk.market["id"]].writer
    ahead = [0.0]
    monkeypatch.setattr(writer, "_clock", lambda: time.time() + ahead[0])
    cancel = MarketWriter._cancel_resting

    async def slow_cancel(self: MarketWriter, cycle: Any, row: Any, cause: Any) -> None:
        await cancel(self, cycle, row, cause)
        ahead[0] += 5.0  # the cancel's work took that long

    monkeypatch.setattr(MarketWriter, "_cancel_resting", slow_cancel)
    expiry = int(time.time()) + desk.trading.settings.trading_expiry_margin_s + 3
    reply = await desk.replace(alice, first.json()["id"], "sell", price(11), WHOLE, expiry=expiry)
    assert reply.status_code == 201, reply.text
    assert writer.stats.failed_cycles == 0
