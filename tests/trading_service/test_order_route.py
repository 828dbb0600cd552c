"""POST /v1/orders answers a plain request on its lean path and anything else through FastAPI, alike."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from exchange.trading.repository import padded
from exchange.trading.routes import OrderFront
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


async def _trader(desk: Desk) -> Trader:
    trader = await desk.member(0x93)
    await desk.deposit(trader, desk.market["quote"], 100 * DOLLAR)
    await desk.deposit(trader, desk.market["base"], 10 * WHOLE)
    return trader


async def test_both_paths_give_the_same_answers(desk: Desk) -> None:
    trader = await _trader(desk)
    body = desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="both-ways")
    raw = json.dumps(body).encode()
    # A charset parameter sends the request through FastAPI's own handler.
    generic = {**trader.headers, "Content-Type": "application/json; charset=utf-8"}
    lean = {**trader.headers, "Content-Type": "application/json"}
    first = await desk.client.post("/v1/orders", content=raw, headers=generic)
    again = await desk.client.post("/v1/orders", content=raw, headers=lean)
    assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)
    assert again.json() == first.json()

    other = desk.order_body(trader, "sell", price(12), WHOLE, client_order_id="lean-first")
    raw = json.dumps(other).encode()
    placed = await desk.client.post("/v1/orders", content=raw, headers=lean)
    replayed = await desk.client.post("/v1/orders", content=raw, headers=generic)
    assert (placed.status_code, replayed.status_code) == (201, 200)
    assert replayed.json() == placed.json()
    assert len(await desk.orders(trader)) == 2


async def test_idempotency_keys_work_the_same_on_both_paths(desk: Desk) -> None:
    trader = await _trader(desk)
    raw = json.dumps(desk.order_body(trader, "sell", price(13), WHOLE)).encode()
    lean = {**trader.headers, "Content-Type": "application/json", "Idempotency-Key": "route-1"}
    generic = {**lean, "Content-Type": "application/json; charset=utf-8"}
    first = await desk.client.post("/v1/orders", content=raw, headers=lean)
    again = await desk.client.post("/v1/orders", content=raw, headers=generic)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    bad_key = {**lean, "Idempotency-Key": "with space"}
    refused = await desk.client.post("/v1/orders", content=raw, headers=bad_key)
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert len(await desk.orders(trader)) == 1


async def test_unusual_requests_are_refused_as_before_and_change_nothing(desk: Desk) -> None:
    trader = await _trader(desk)
    body = desk.order_body(trader, "buy", price(10), WHOLE)
    raw = json.dumps(body).encode()
    lean = {**trader.headers, "Content-Type": "application/json"}

    query = await desk.client.post("/v1/orders?dry_run=1", content=raw, headers=lean)
    assert query.status_code == 422
    assert "unknown query parameter 'dry_run'" in query.json()["detail"]

    anonymous = await desk.client.post(
        "/v1/orders", content=raw, headers={"Content-Type": "application/json"}
    )
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"

    malformed = await desk.client.post("/v1/orders", content=raw[:-1], headers=lean)
    assert malformed.status_code in (400, 422)
    assert malformed.headers["content-type"].startswith("application/problem+json")

    extra = await desk.client.post(
        "/v1/orders", content=json.dumps({**body, "leverage": 10}).encode(), headers=lean
    )
    assert extra.status_code == 422
    assert extra.json()["type"].endswith("/validation-failed")

    # Documents the front's parser refuses or reads otherwise than Python's json go on to FastAPI
    # as before: an integer beyond 64 bits (a float to orjson), NaN, a UTF-16 body.
    huge = await desk.client.post(
        "/v1/orders", content=json.dumps({**body, "time_in_force": 2**70}).encode(), headers=lean
    )
    assert huge.status_code == 422
    assert huge.json()["type"].endswith("/validation-failed")
    not_a_number = await desk.client.post("/v1/orders", content=raw.replace(b'"GTC"', b"NaN"), headers=lean)
    assert not_a_number.status_code == 422
    assert await desk.orders(trader) == []
    # Python's json reads UTF-16 as well (RFC 8259 asks for UTF-8): placed, as it was before.
    utf16 = await desk.client.post("/v1/orders", content=json.dumps(body).encode("utf-16"), headers=lean)
    assert utf16.status_code == 201, utf16.text
    assert [order["id"] for order in await desk.orders(trader)] == [utf16.json()["id"]]


def test_padded_lists_have_few_lengths() -> None:
    assert padded([]) == []
    assert padded([3]) == [3]
    assert padded({"b", "a", "c"}) == ["a", "b", "c", "c"]
    assert [len(padded(range(n))) for n in range(1, 10)] == [1, 2, 4, 4, 8, 8, 8, 8, 16]


async def test_the_front_answers_with_the_apps_request_ids_and_problems(desk: Desk) -> None:
    """A plain placement is answered ahead of the app's routing (OrderFront), with one request id
    (the caller's, when valid) and the app's problem documents."""
    trader = await _trader(desk)
    lean = {**trader.headers, "Content-Type": "application/json", "X-Request-ID": "front-1"}
    body = desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="front")
    placed = await desk.client.post("/v1/orders", content=json.dumps(body).encode(), headers=lean)
    assert placed.status_code == 201, placed.text
    assert placed.headers.get_list("x-request-id") == ["front-1"]

    unknown = desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="front-2")
    unknown["market"] = "NOPE-USD"
    refused = await desk.client.post("/v1/orders", content=json.dumps(unknown).encode(), headers=lean)
    generic = {**lean, "Content-Type": "application/json; charset=utf-8"}
    routed = await desk.client.post("/v1/orders", content=json.dumps(unknown).encode(), headers=generic)
    assert refused.status_code == routed.status_code == 404, refused.text
    assert refused.headers["content-type"] == routed.headers["content-type"] == "application/problem+json"
    assert refused.json() == routed.json()
    assert refused.json()["request_id"] == "front-1"
    assert refused.headers.get_list("x-request-id") == ["front-1"]
    assert len(await desk.orders(trader)) == 1


async def test_a_placement_lets_what_is_ready_run_before_its_work() -> None:
    """The front reads a placement only after what was already ready to run (under load, the
    market writer's next step) has run; any other request is not held."""
    events: list[str] = []

    async def receive() -> dict[str, Any]:
        events.append("read")
        return {"type": "http.request", "body": b"", "more_body": False}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        events.append("app")

    async def send(message: Any) -> None:
        raise AssertionError("nothing is answered by the front here")

    front = OrderFront(app)
    loop = asyncio.get_running_loop()
    for method, path, expected in (
        ("POST", "/v1/orders", ["ready", "read", "app"]),
        ("GET", "/v1/orders", ["app", "ready"]),
        ("POST", "/v1/orders/batch", ["app", "ready"]),
    ):
        events.clear()
        scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
        request = asyncio.ensure_future(front(scope, receive, send))
        loop.call_soon(events.append, "ready")  # ready as the request's task first runs
        await request
        await asyncio.sleep(0)
        assert events == expected, (method, path)


async def test_the_unified_symbol_names_the_market_as_its_id_does(desk: Desk) -> None:
    trader = await _trader(desk)
    symbol, market_id = "BPC/TUSD", desk.market["id"]
    body = {**desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="by-symbol"), "market": symbol}
    placed = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    assert placed.status_code == 201, placed.text
    assert (placed.json()["market"], placed.json()["symbol"]) == (market_id, symbol)

    for path in ("/v1/orders", "/v1/account/trades"):
        by_symbol = await desk.client.get(path, params={"market": symbol}, headers=trader.headers)
        by_id = await desk.client.get(path, params={"market": market_id}, headers=trader.headers)
        assert by_symbol.status_code == 200, by_symbol.text
        assert by_symbol.json() == by_id.json()
    assert [order["id"] for order in (await desk.orders(trader))] == [placed.json()["id"]]

    cancelled = await desk.client.delete("/v1/orders", params={"market": symbol}, headers=trader.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (await desk.orders(trader))[0]["status"] == "canceled"

    unknown = await desk.client.get("/v1/orders", params={"market": "BPC/USD"}, headers=trader.headers)
    assert unknown.status_code == 404, unknown.text
    assert unknown.headers["content-type"].startswith("application/problem+json")


async def test_a_wrong_method_names_every_method_the_path_serves(desk: Desk) -> None:
    """Starlette's 405 names the first route whose path matched; the answer names them all."""
    for method, path, allowed in (
        ("PUT", "/v1/orders", "DELETE, GET, POST"),
        ("PATCH", "/v1/orders/1", "DELETE, GET"),
        ("POST", "/v1/time", "GET"),
    ):
        reply = await desk.client.request(method, path)
        assert (reply.status_code, reply.headers["allow"]) == (405, allowed), (method, path)
        assert reply.headers["content-type"] == "application/problem+json"
