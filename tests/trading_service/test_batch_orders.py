"""POST /v1/orders/batch: each order placed as POST /v1/orders would, in order, with its own answer."""

from __future__ import annotations

import pytest
from eth_account import Account
from sqlalchemy import func, select

from exchange.chain.runtime import ChainRuntime
from exchange.trading.chain_cancels import ExitHeld
from exchange.trading.intents import Intent, PlaceIntent, WriterUnavailable
from exchange.trading.models import TradingOrder
from exchange.trading.schemas import MAX_BATCH_ORDERS
from tests.trading_service.conftest import start_desk, trading_settings
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price

BATCH = "/v1/orders/batch"


async def _funded(desk: Desk, key: int) -> Trader:
    trader = await desk.member(key)
    await desk.deposit(trader, desk.market["quote"], 100 * DOLLAR)
    await desk.deposit(trader, desk.market["base"], 10 * WHOLE)
    return trader


async def test_a_batch_is_placed_in_order_and_matched(desk: Desk) -> None:
    alice = await _funded(desk, 0xB1)
    before = await desk.balances(alice)
    bodies = [
        desk.order_body(alice, "sell", price(11), WHOLE, client_order_id="ladder-1"),
        desk.order_body(alice, "sell", price(12), 2 * WHOLE, client_order_id="ladder-2"),
        desk.order_body(alice, "buy", price(9), WHOLE, client_order_id="ladder-3"),
    ]
    reply = await desk.client.post(BATCH, json={"orders": bodies}, headers=alice.headers)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [result["status"] for result in results] == [201, 201, 201]
    assert [result["problem"] for result in results] == [None, None, None]
    placed = [result["order"] for result in results]
    assert [order["client_order_id"] for order in placed] == ["ladder-1", "ladder-2", "ladder-3"]
    ids = [int(order["id"]) for order in placed]
    assert ids == sorted(ids), "the batch enters the journal in the order given"
    assert {order["id"] for order in await desk.orders(alice)} == {order["id"] for order in placed}

    # Reservations are those of three single orders: 3 BPC for the sells, the buy's quote plus fee cap.
    after = await desk.balances(alice)
    base, quote = desk.market["base"], desk.market["quote"]
    assert after[base]["reserved"] - before[base]["reserved"] == 3 * WHOLE
    assert after[quote]["reserved"] == int(placed[2]["reserved"])
    assert after[base]["total"] == before[base]["total"]
    assert after[quote]["total"] == before[quote]["total"]

    # A batch that crosses the book trades like single orders.
    bob = await _funded(desk, 0xB2)
    taking = [desk.order_body(bob, "buy", price(12), 3 * WHOLE, time_in_force="IOC")]
    reply = await desk.client.post(BATCH, json={"orders": taking}, headers=bob.headers)
    [taken] = reply.json()["results"]
    assert (taken["status"], taken["order"]["status"]) == (201, "closed")
    assert taken["order"]["filled"] == str(3 * WHOLE)
    trades = (await desk.client.get("/v1/account/trades", headers=bob.headers)).json()["items"]
    assert sorted(int(trade["price"]) for trade in trades) == [price(11), price(12)]


async def test_each_order_is_answered_on_its_own_and_refusals_change_nothing(desk: Desk) -> None:
    alice = await _funded(desk, 0xB3)
    stranger = Account.from_key(bytes([0xB4]) * 32)
    good = desk.order_body(alice, "sell", price(11), WHOLE, client_order_id="good")
    again = dict(good)  # the same signed order under the same id: the first answer again (200)
    off_tick = desk.order_body(alice, "sell", price(11) + 1, WHOLE)
    not_mine = desk.order_body(alice, "sell", price(11), WHOLE, signer=stranger)
    other_market = {**desk.order_body(alice, "sell", price(11), WHOLE), "market": "NOPE-USD"}
    reused_id = desk.order_body(alice, "sell", price(13), WHOLE, client_order_id="good")
    too_big = desk.order_body(alice, "sell", price(11), 1_000 * WHOLE)
    expired = desk.order_body(alice, "buy", price(9), WHOLE, expiry=1)
    head = await desk.journal()

    bodies = [good, again, off_tick, not_mine, other_market, reused_id, too_big, expired]
    reply = await desk.client.post(BATCH, json={"orders": bodies}, headers=alice.headers)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [result["status"] for result in results] == [201, 200, 422, 422, 404, 409, 409, 422]
    assert results[1]["order"] == results[0]["order"]
    kinds = [result["problem"]["type"].rsplit("/", 1)[1] for result in results[2:]]
    assert kinds == [
        "order-refused",
        "invalid-signature",
        "unknown-market",
        "order-conflict",
        "insufficient-balance",
        "order-expired",
    ]
    for result in results[2:]:
        assert result["order"] is None
        assert result["problem"]["status"] == result["status"]
        assert result["problem"]["instance"] == BATCH
    assert results[2]["problem"]["errors"][0]["loc"] == ["body", "orders", 2, "order", "price"]

    # Only the good order exists, reserved once; the journal took one command.
    assert [order["client_order_id"] for order in await desk.orders(alice)] == ["good"]
    assert (await desk.balances(alice))[desk.market["base"]]["reserved"] == WHOLE
    assert (await desk.journal())["sequence"] == head["sequence"] + 1


async def test_resending_a_batch_places_nothing_twice(desk: Desk) -> None:
    alice = await _funded(desk, 0xB5)
    bodies = [desk.order_body(alice, "sell", price(10 + n), WHOLE) for n in range(3)]
    first = await desk.client.post(BATCH, json={"orders": bodies}, headers=alice.headers)
    again = await desk.client.post(BATCH, json={"orders": bodies}, headers=alice.headers)
    assert [result["status"] for result in first.json()["results"]] == [201] * 3
    assert [result["status"] for result in again.json()["results"]] == [200] * 3
    assert [r["order"] for r in again.json()["results"]] == [r["order"] for r in first.json()["results"]]
    assert len(await desk.orders(alice)) == 3

    keyed = {**alice.headers, "Idempotency-Key": "batch-1"}
    more = [desk.order_body(alice, "sell", price(20), WHOLE)]
    placed = await desk.client.post(BATCH, json={"orders": more}, headers=keyed)
    replayed = await desk.client.post(BATCH, json={"orders": more}, headers=keyed)
    assert (placed.status_code, replayed.status_code) == (200, 200)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json() == placed.json()
    other = [desk.order_body(alice, "sell", price(21), WHOLE)]
    reused = await desk.client.post(BATCH, json={"orders": other}, headers=keyed)
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("/idempotency-key-reused")
    assert len(await desk.orders(alice)) == 4


@pytest.mark.parametrize(
    ("failure", "status", "problem_type", "answered"),
    [
        (WriterUnavailable("the market is restarting"), 503, "trading-unavailable", False),
        (RuntimeError("a bug met by this order only"), 500, "order-failed", False),
        (RuntimeError("a bug met by this order only"), 500, "order-failed", True),
        # A transient refusal (an exit's hold, which ends once the exit is settled) is worth a
        # retry as a 5xx is: the single-order route keeps no such answer either.
        (ExitHeld("the account's exit holds its orders back"), 409, "cancelled-on-chain", False),
    ],
    ids=["unavailable", "unexpected", "unexpected-outcome", "transient"],
)
async def test_an_answer_with_an_order_worth_retrying_is_not_kept_under_its_key(
    desk: Desk,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    status: int,
    problem_type: str,
    answered: bool,
) -> None:
    alice = await _funded(desk, 0xB9)
    writer = desk.trading.market(desk.market["id"]).writer
    enqueue = writer.enqueue
    refused_once: list[str] = []

    def failing_once(intent: Intent) -> None:
        """The second order fails once: refused as it is queued, or (``answered``) with its outcome."""
        if isinstance(intent, PlaceIntent) and intent.order.client_order_id == "second" and not refused_once:
            refused_once.append("second")
            if not answered:
                raise failure
            intent.future.set_exception(failure)
            return
        enqueue(intent)

    monkeypatch.setattr(writer, "enqueue", failing_once)
    bodies = [
        desk.order_body(alice, "sell", price(11 + n), WHOLE, client_order_id=name)
        for n, name in enumerate(("first", "second", "third"))
    ]
    keyed = {**alice.headers, "Idempotency-Key": "batch-retry"}
    first = await desk.client.post(BATCH, json={"orders": bodies}, headers=keyed)
    assert first.status_code == 200, first.text
    # The order that failed is answered on its own; the orders around it are placed.
    assert [result["status"] for result in first.json()["results"]] == [201, status, 201]
    problem = first.json()["results"][1]["problem"]
    assert (problem["type"].split("/")[-1], problem["status"]) == (problem_type, status)
    assert problem["request_id"] == first.headers["X-Request-Id"]
    assert "a bug" not in problem["detail"]  # an unexpected error's text stays in the log
    assert [order["client_order_id"] for order in await desk.orders(alice)] == ["third", "first"]

    again = await desk.client.post(BATCH, json={"orders": bodies}, headers=keyed)
    assert "Idempotent-Replayed" not in again.headers  # run again, not replayed
    assert [result["status"] for result in again.json()["results"]] == [200, 201, 200]
    kept = await desk.client.post(BATCH, json={"orders": bodies}, headers=keyed)
    assert kept.headers["Idempotent-Replayed"] == "true"
    assert kept.json() == again.json()
    assert len(await desk.orders(alice)) == 3


async def test_malformed_or_unauthorised_batches_are_refused_whole(desk: Desk) -> None:
    alice = await _funded(desk, 0xB6)
    one = desk.order_body(alice, "sell", price(11), WHOLE)
    head = await desk.journal()

    anonymous = await desk.client.post(BATCH, json={"orders": [one]})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    malformed: list[object] = [
        {"orders": []},
        {"orders": [one] * (MAX_BATCH_ORDERS + 1)},
        {"orders": [one], "dry_run": True},
        {"orders": [{**one, "signature": "0xzz"}]},
        {"orders": [one, {**one, "order": {**one["order"], "price": "-1"}}]},
        [one],
    ]
    for body in malformed:
        reply = await desk.client.post(BATCH, json=body, headers=alice.headers)
        assert reply.status_code == 422, reply.text
        assert reply.headers["content-type"] == "application/problem+json"

    # A member who is not active has the whole batch refused.
    outsider = await desk.member(0xB7, admit=False)
    mine = desk.order_body(outsider, "sell", price(11), WHOLE)
    refused = await desk.client.post(BATCH, json={"orders": [mine]}, headers=outsider.headers)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/not-active-member")

    assert await desk.orders(alice) == []
    assert (await desk.journal())["sequence"] == head["sequence"]


@pytest.mark.parametrize("bucket", ["account", "ip"])
async def test_a_batch_takes_one_token_per_order_from_each_rate_limit(
    bucket: str, database_url: str, chain_runtime: ChainRuntime
) -> None:
    limits = {f"trading_rate_{bucket}_per_s": 0.01, f"trading_rate_{bucket}_burst": 4}
    async for desk in start_desk(trading_settings(database_url, **limits), chain_runtime):
        alice = await _funded(desk, 0xB8)
        five = [desk.order_body(alice, "sell", price(10 + n), WHOLE) for n in range(5)]
        too_many = await desk.client.post(BATCH, json={"orders": five}, headers=alice.headers)
        assert too_many.status_code == 422
        assert too_many.json()["errors"][0]["loc"] == ["body", "orders"]
        assert "allows 4 at once" in too_many.json()["detail"]

        three = await desk.client.post(BATCH, json={"orders": five[:3]}, headers=alice.headers)
        assert [result["status"] for result in three.json()["results"]] == [201] * 3
        two = await desk.client.post(BATCH, json={"orders": five[3:]}, headers=alice.headers)
        assert two.status_code == 429
        assert int(two.headers["Retry-After"]) >= 1
        # The account's fourth token is still there; the IP's went to the refused request of five.
        read = await desk.client.get("/v1/orders", headers=alice.headers)
        assert read.status_code == (200 if bucket == "account" else 429)
        async with desk.trading.sessionmaker() as session:
            placed = select(func.count()).where(TradingOrder.account == alice.address)
            assert await session.scalar(placed) == 3
