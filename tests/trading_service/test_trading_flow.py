"""End to end through HTTP: members sign in, deposit, trade; balances reconcile to the base unit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from exchange.trading.amounts import settlement_amounts
from exchange.trading.intake import buy_reservation
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, price


def _assert_ccxt_stamped(item: dict[str, Any]) -> None:
    """CCXT's pair: ``timestamp`` is an integer of Unix ms, the moment ``datetime`` names in ISO 8601."""
    moment = datetime.fromisoformat(item["datetime"])
    assert moment.tzinfo is not None, item["datetime"]
    assert type(item["timestamp"]) is int, item["timestamp"]
    assert item["timestamp"] == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


async def test_markets_are_public_and_ccxt_shaped(desk: Desk) -> None:
    reply = await desk.client.get("/v1/markets")
    assert reply.status_code == 200
    (market,) = reply.json()
    assert market["id"] == "BPC-TUSD"
    assert market["symbol"] == "BPC/TUSD"
    assert market["base"] == "BPC"
    assert market["quote"] == "TUSD"
    assert market["vault"] == desk.chain.deployment.address("Vault")
    assert market["precision"] == {"price": str(10**4), "amount": str(10**15)}
    assert market["limits"]["amount"]["min"] == str(10**16)
    assert (market["maker"], market["taker"]) == ("0.001", "0.002")


async def test_two_members_trade_and_balances_reconcile(desk: Desk) -> None:
    market = desk.market
    alice = await desk.member(0x51)
    bob = await desk.member(0x52)
    await desk.deposit(alice, market["base"], 10 * WHOLE)
    await desk.deposit(bob, market["quote"], 1_000 * DOLLAR)

    ask = await desk.place(alice, "sell", price(12.5), 4 * WHOLE)
    assert ask.status_code == 201, ask.text
    assert ask.json()["status"] == "open"
    bid = await desk.place(bob, "buy", price(13), 3 * WHOLE, max_fee_bps=30)
    assert bid.status_code == 201, bid.text
    taken = bid.json()
    assert taken["status"] == "closed"
    assert taken["filled"] == str(3 * WHOLE)

    amounts = settlement_amounts(3 * WHOLE, price(12.5), 20, 30, 10, 50)  # bob takes, alice makes
    alice_balances = await desk.balances(alice)
    bob_balances = await desk.balances(bob)
    assert alice_balances[market["base"]] == {"total": 7 * WHOLE, "available": 6 * WHOLE, "reserved": WHOLE}
    assert alice_balances[market["quote"]]["total"] == amounts.seller_receives
    assert bob_balances[market["base"]] == {"total": 3 * WHOLE, "available": 3 * WHOLE, "reserved": 0}
    assert bob_balances[market["quote"]] == {
        "total": 1_000 * DOLLAR - amounts.buyer_pays,
        "available": 1_000 * DOLLAR - amounts.buyer_pays,
        "reserved": 0,
    }

    trades = (await desk.client.get("/v1/account/trades", headers=bob.headers)).json()["items"]
    assert [(t["side"], t["taker_or_maker"], t["amount"], t["price"]) for t in trades] == [
        ("buy", "taker", str(3 * WHOLE), str(price(12.5)))
    ]
    assert trades[0]["fee"]["cost"] == str(amounts.buyer_fee)
    assert trades[0]["settlement_state"] == "pending"
    maker_trades = (await desk.client.get("/v1/account/trades", headers=alice.headers)).json()["items"]
    assert [(t["side"], t["taker_or_maker"]) for t in maker_trades] == [("sell", "maker")]
    assert maker_trades[0]["fee"]["cost"] == str(amounts.seller_fee)
    for trade in trades + maker_trades:
        _assert_ccxt_stamped(trade)
    assert trades[0]["timestamp"] == maker_trades[0]["timestamp"]
    for order in (ask.json(), taken):
        _assert_ccxt_stamped(order)
        assert datetime.fromisoformat(order["datetime"]) == datetime.fromisoformat(order["created_at"])

    # Cancelling the rest of the ask releases its reservation.
    order_id = ask.json()["id"]
    cancelled = await desk.client.delete(f"/v1/orders/{order_id}", headers=alice.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["filled"]) == ("canceled", str(3 * WHOLE))
    assert (cancelled.json()["remaining"], cancelled.json()["cancel_reason"]) == (str(WHOLE), "user")
    _assert_ccxt_stamped(cancelled.json())
    assert cancelled.json()["timestamp"] == ask.json()["timestamp"]
    assert (await desk.balances(alice))[market["base"]] == {
        "total": 7 * WHOLE,
        "available": 7 * WHOLE,
        "reserved": 0,
    }


async def test_a_cancelled_order_keeps_its_unfilled_amount_as_remaining(desk: Desk) -> None:
    bob = await desk.member(0x54)
    await desk.deposit(bob, desk.market["quote"], 100 * DOLLAR)
    placed = await desk.place(bob, "buy", price(10), 2 * WHOLE)
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    cancelled = await desk.client.delete(f"/v1/orders/{order_id}", headers=bob.headers)
    assert cancelled.status_code == 200, cancelled.text
    shown = (await desk.client.get(f"/v1/orders/{order_id}", headers=bob.headers)).json()
    for order in (cancelled.json(), shown, *(await desk.orders(bob))):
        assert (order["status"], order["filled"]) == ("canceled", "0")
        assert order["remaining"] == order["amount"] == str(2 * WHOLE)


async def test_a_resting_buy_reserves_quote_at_its_limit_plus_its_fee_cap(desk: Desk) -> None:
    market = desk.market
    bob = await desk.member(0x53)
    await desk.deposit(bob, market["quote"], 100 * DOLLAR)
    reply = await desk.place(bob, "buy", price(10), 2 * WHOLE, max_fee_bps=40)
    assert reply.status_code == 201, reply.text
    reserved = buy_reservation(2 * WHOLE, price(10), 40)
    assert reserved == 20 * DOLLAR + 20 * DOLLAR * 40 // 10_000
    assert reply.json()["reserved"] == str(reserved)
    assert (await desk.balances(bob))[market["quote"]]["reserved"] == reserved


async def test_a_buy_filled_below_its_limit_keeps_reserved_only_what_its_rest_may_cost(desk: Desk) -> None:
    """As taker (a better price) and then as maker (a fee under its cap), each fill gives back
    at once what the part filled did not cost: the rest reserves as a new order of it would."""
    market = desk.market
    alice = await desk.member(0x55)
    bob = await desk.member(0x56)
    await desk.deposit(alice, market["base"], 10 * WHOLE)
    await desk.deposit(bob, market["quote"], 1_000 * DOLLAR)

    assert (await desk.place(alice, "sell", price(10), WHOLE // 2)).status_code == 201
    bid = await desk.place(bob, "buy", price(12), 2 * WHOLE, max_fee_bps=40)
    assert bid.status_code == 201, bid.text
    taken = settlement_amounts(WHOLE // 2, price(10), 20, 40, 10, 50)  # bob takes at alice's price
    rest = buy_reservation(2 * WHOLE - WHOLE // 2, price(12), 40)
    assert bid.json()["reserved"] == str(rest)
    assert (await desk.balances(bob))[market["quote"]] == {
        "total": 1_000 * DOLLAR - taken.buyer_pays,
        "available": 1_000 * DOLLAR - taken.buyer_pays - rest,
        "reserved": rest,
    }

    hit = await desk.place(alice, "sell", price(12), WHOLE // 2)  # alice takes: bob pays the maker fee
    assert hit.status_code == 201, hit.text
    made = settlement_amounts(WHOLE // 2, price(12), 10, 40, 20, 50)
    rest = buy_reservation(WHOLE, price(12), 40)
    order = (await desk.client.get(f"/v1/orders/{bid.json()['id']}", headers=bob.headers)).json()
    assert (order["remaining"], order["reserved"]) == (str(WHOLE), str(rest))
    paid = taken.buyer_pays + made.buyer_pays
    assert (await desk.balances(bob))[market["quote"]] == {
        "total": 1_000 * DOLLAR - paid,
        "available": 1_000 * DOLLAR - paid - rest,
        "reserved": rest,
    }

    cancelled = await desk.client.delete(f"/v1/orders/{bid.json()['id']}", headers=bob.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (await desk.balances(bob))[market["quote"]] == {
        "total": 1_000 * DOLLAR - paid,
        "available": 1_000 * DOLLAR - paid,
        "reserved": 0,
    }
