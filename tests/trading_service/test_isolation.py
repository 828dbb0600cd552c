"""A member never sees or touches another member's orders, trades, balances or withdrawals.

``test_every_private_route_is_covered`` lists the private routes of the app, so
a new route without an isolation check here fails the suite.
"""

from __future__ import annotations

from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price

CHECKED_ROUTES = {
    ("POST", "/v1/orders"),
    ("POST", "/v1/orders/batch"),
    ("GET", "/v1/orders"),
    ("DELETE", "/v1/orders"),
    ("GET", "/v1/orders/{order_id}"),
    ("DELETE", "/v1/orders/{order_id}"),
    ("POST", "/v1/orders/{order_id}/replace"),
    ("GET", "/v1/orders/by-client-id/{client_order_id}"),
    ("GET", "/v1/account/balances"),
    ("GET", "/v1/account/trades"),
    ("POST", "/v1/account/withdrawals"),
    ("GET", "/v1/account/withdrawals"),
}


def test_every_private_route_is_covered(desk: Desk) -> None:
    private = {
        (method.upper(), path)
        for path, operations in desk.app.openapi()["paths"].items()
        if path.startswith(("/v1/orders", "/v1/account"))
        for method in operations
    }
    assert private == CHECKED_ROUTES


async def _setup(desk: Desk) -> tuple[Trader, Trader, dict[str, str]]:
    market = desk.market
    alice = await desk.member(0x81)
    bob = await desk.member(0x82)
    carol = await desk.member(0x83)
    await desk.deposit(alice, market["base"], 10 * WHOLE)
    await desk.deposit(bob, market["quote"], 100 * DOLLAR)
    await desk.deposit(carol, market["quote"], 100 * DOLLAR)
    resting = await desk.place(alice, "sell", price(10), 3 * WHOLE, client_order_id="alice-1")
    assert resting.status_code == 201, resting.text
    taken = await desk.place(carol, "buy", price(10), WHOLE)  # alice trades with carol, not bob
    assert taken.status_code == 201, taken.text
    withdrawal = await desk.client.post(
        "/v1/account/withdrawals", json={"token": market["base"], "amount": str(WHOLE)}, headers=alice.headers
    )
    assert withdrawal.status_code == 201, withdrawal.text
    return alice, bob, {"order": resting.json()["id"], "client_order_id": "alice-1"}


async def test_reads_show_only_your_own(desk: Desk) -> None:
    alice, bob, alices = await _setup(desk)
    order_id = alices["order"]
    assert (await desk.client.get(f"/v1/orders/{order_id}", headers=alice.headers)).status_code == 200
    for path in (f"/v1/orders/{order_id}", "/v1/orders/by-client-id/alice-1"):
        reply = await desk.client.get(path, headers=bob.headers)
        assert reply.status_code == 404, path
        assert reply.headers["content-type"] == "application/problem+json"
    assert (await desk.client.get("/v1/orders", headers=bob.headers)).json()["items"] == []
    for status in ("open", "closed", "canceled"):
        page = await desk.client.get("/v1/orders", params={"status": status}, headers=bob.headers)
        assert page.json()["items"] == []
    assert (await desk.client.get("/v1/account/trades", headers=bob.headers)).json()["items"] == []
    assert (await desk.client.get("/v1/account/withdrawals", headers=bob.headers)).json() == []
    bobs_balances = (await desk.client.get("/v1/account/balances", headers=bob.headers)).json()
    assert bobs_balances["account"] == bob.address
    assert {item["token"]: item["total"] for item in bobs_balances["balances"]} == {
        desk.market["base"]: "0",
        desk.market["quote"]: str(100 * DOLLAR),
    }
    assert len((await desk.client.get("/v1/account/trades", headers=alice.headers)).json()["items"]) == 1


async def test_writes_touch_only_your_own(desk: Desk) -> None:
    alice, bob, alices = await _setup(desk)
    order_id = alices["order"]
    reply = await desk.client.delete(f"/v1/orders/{order_id}", headers=bob.headers)
    assert reply.status_code == 404
    cancelled = await desk.client.delete(
        "/v1/orders", params={"market": desk.market["id"]}, headers=bob.headers
    )
    assert cancelled.status_code == 200
    assert cancelled.json()["cancelled"] == []
    # A withdrawal request can only reserve the requester's own funds.
    reply = await desk.client.post(
        "/v1/account/withdrawals",
        json={"token": desk.market["base"], "amount": str(WHOLE)},
        headers=bob.headers,
    )
    assert reply.status_code == 409
    # Nor replaced with an order of bob's own: alice's order is not his to cancel.
    bobs = desk.order_body(bob, "buy", price(9), WHOLE, client_order_id="bob-replacement")
    reply = await desk.client.post(f"/v1/orders/{order_id}/replace", json=bobs, headers=bob.headers)
    assert reply.status_code == 404, reply.text
    assert (await desk.client.get("/v1/orders", headers=bob.headers)).json()["items"] == []
    # An order made by alice cannot be placed from bob's session, even with alice's valid signature.
    body = desk.order_body(alice, "sell", price(11), WHOLE)
    assert (await desk.client.post("/v1/orders", json=body, headers=bob.headers)).status_code == 403
    replacing = await desk.client.post(f"/v1/orders/{order_id}/replace", json=body, headers=bob.headers)
    assert replacing.status_code == 403
    batch = await desk.client.post("/v1/orders/batch", json={"orders": [body]}, headers=bob.headers)
    [result] = batch.json()["results"]
    assert (result["status"], result["order"]) == (403, None)
    assert result["problem"]["type"].endswith("/not-order-maker")
    order = (await desk.client.get(f"/v1/orders/{order_id}", headers=alice.headers)).json()
    assert (order["status"], order["remaining"]) == ("open", str(2 * WHOLE))
    assert len((await desk.client.get("/v1/orders", headers=alice.headers)).json()["items"]) == 1
