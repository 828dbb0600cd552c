"""Retries return the first result and do nothing else; a key reused for another request is refused."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db.base import utc_now
from exchange.trading import repository, routes
from exchange.trading.idempotency import STALE_AFTER_S, request_digest
from exchange.trading.models import IdempotencyKey
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


async def _trader(desk: Desk) -> Trader:
    trader = await desk.member(0x91)
    await desk.deposit(trader, desk.market["quote"], 100 * DOLLAR)
    await desk.deposit(trader, desk.market["base"], 10 * WHOLE)
    return trader


async def test_resending_a_client_order_id_returns_the_order_once(desk: Desk) -> None:
    trader = await _trader(desk)
    body = desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="retry-me")
    first = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    again = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["order_hash"] == first.json()["order_hash"]
    assert len(await desk.orders(trader)) == 1
    reserved = (await desk.balances(trader))[desk.market["quote"]]["reserved"]
    assert reserved == int(first.json()["reserved"])


async def test_a_client_order_id_reused_for_another_order_is_refused(desk: Desk) -> None:
    trader = await _trader(desk)
    first = await desk.place(trader, "buy", price(10), WHOLE, client_order_id="once")
    other = await desk.place(trader, "buy", price(11), WHOLE, client_order_id="once")
    assert first.status_code == 201
    assert other.status_code == 409, other.text
    assert other.json()["type"].endswith("/order-conflict")
    assert len(await desk.orders(trader)) == 1


async def test_a_nonce_is_used_once(desk: Desk) -> None:
    trader = await _trader(desk)
    assert (await desk.place(trader, "buy", price(10), WHOLE, nonce=7)).status_code == 201
    reply = await desk.place(trader, "buy", price(11), WHOLE, nonce=7)
    assert reply.status_code == 409
    assert "nonce" in reply.json()["detail"]


async def test_a_signed_order_is_placed_once_whatever_its_client_order_id(desk: Desk) -> None:
    trader = await _trader(desk)
    body = desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="first-id")
    assert (await desk.client.post("/v1/orders", json=body, headers=trader.headers)).status_code == 201
    # The same signature under another client order id, in a later journal transaction.
    reply = await desk.client.post(
        "/v1/orders", json={**body, "client_order_id": "second-id"}, headers=trader.headers
    )
    assert reply.status_code == 409, reply.text
    assert "already placed" in reply.json()["detail"]
    assert len(await desk.orders(trader)) == 1


async def test_idempotency_key_replays_the_first_answer(desk: Desk) -> None:
    trader = await _trader(desk)
    headers = {**trader.headers, "Idempotency-Key": "k-1"}
    body = desk.order_body(trader, "sell", price(12), WHOLE)
    first = await desk.client.post("/v1/orders", json=body, headers=headers)
    again = await desk.client.post("/v1/orders", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"

    changed = desk.order_body(trader, "sell", price(13), WHOLE)
    refused = await desk.client.post("/v1/orders", json=changed, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/idempotency-key-reused")
    assert len(await desk.orders(trader)) == 1

    order_id = first.json()["id"]
    cancel_headers = {**trader.headers, "Idempotency-Key": "cancel-1"}
    cancelled = await desk.client.delete(f"/v1/orders/{order_id}", headers=cancel_headers)
    replayed = await desk.client.delete(f"/v1/orders/{order_id}", headers=cancel_headers)
    assert cancelled.status_code == replayed.status_code == 200
    assert replayed.json() == cancelled.json()


async def test_idempotency_key_replays_refusals_and_withdrawals_once(desk: Desk) -> None:
    trader = await _trader(desk)
    headers = {**trader.headers, "Idempotency-Key": "w-1"}
    body = {"token": desk.market["quote"], "amount": str(10 * DOLLAR)}
    first = await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)
    again = await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert len((await desk.client.get("/v1/account/withdrawals", headers=trader.headers)).json()) == 1
    assert (await desk.balances(trader))[desk.market["quote"]]["reserved"] == 10 * DOLLAR

    too_much = {"token": desk.market["quote"], "amount": str(1_000 * DOLLAR)}
    key = {**trader.headers, "Idempotency-Key": "w-2"}
    refused = await desk.client.post("/v1/account/withdrawals", json=too_much, headers=key)
    replayed = await desk.client.post("/v1/account/withdrawals", json=too_much, headers=key)
    assert refused.status_code == replayed.status_code == 409
    assert replayed.headers["content-type"] == "application/problem+json"
    assert replayed.json()["detail"] == refused.json()["detail"]


async def test_keys_belong_to_their_account(desk: Desk) -> None:
    alice = await _trader(desk)
    bob = await desk.member(0x92)
    await desk.deposit(bob, desk.market["quote"], 100 * DOLLAR)
    body_a = desk.order_body(alice, "buy", price(10), WHOLE)
    body_b = desk.order_body(bob, "buy", price(10), WHOLE)
    a = await desk.client.post(
        "/v1/orders", json=body_a, headers={**alice.headers, "Idempotency-Key": "same"}
    )
    b = await desk.client.post("/v1/orders", json=body_b, headers={**bob.headers, "Idempotency-Key": "same"})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


async def _abandoned_claim(desk: Desk, trader: Trader, key: str, path: str, raw: bytes) -> None:
    """The claim a process leaves when it dies mid-request, older than the takeover delay."""
    async with desk.trading.sessionmaker() as session, session.begin():
        session.add(
            IdempotencyKey(
                account=trader.address,
                key=key,
                request_sha256=request_digest("POST", path, raw),
                created_at=utc_now() - timedelta(seconds=STALE_AFTER_S + 5),
            )
        )


async def test_an_abandoned_claim_is_taken_over_for_orders_but_never_for_withdrawals(desk: Desk) -> None:
    """An order runs again safely (its client order id); a withdrawal would take a second nonce
    and reserve again, so its abandoned key is refused and nothing is authorised."""
    trader = await _trader(desk)
    order = json.dumps(desk.order_body(trader, "buy", price(10), WHOLE)).encode()
    withdrawal = json.dumps({"token": desk.market["quote"], "amount": str(DOLLAR)}).encode()
    await _abandoned_claim(desk, trader, "o-1", "/v1/orders", order)
    await _abandoned_claim(desk, trader, "w-1", "/v1/account/withdrawals", withdrawal)
    json_headers = {**trader.headers, "Content-Type": "application/json"}

    placed = await desk.client.post(
        "/v1/orders", content=order, headers={**json_headers, "Idempotency-Key": "o-1"}
    )
    assert placed.status_code == 201, placed.text
    reserved = (await desk.balances(trader))[desk.market["quote"]]["reserved"]
    refused = await desk.client.post(
        "/v1/account/withdrawals", content=withdrawal, headers={**json_headers, "Idempotency-Key": "w-1"}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/idempotency-key-unfinished")
    assert (await desk.client.get("/v1/account/withdrawals", headers=trader.headers)).json() == []
    assert (await desk.balances(trader))[desk.market["quote"]]["reserved"] == reserved
    assert len(await desk.orders(trader)) == 1


async def test_a_withdrawal_that_lost_a_nonce_race_releases_its_key(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nonce taken by a concurrent withdrawal is a transient refusal: the key is not kept
    with it, so sending the request again under the same key authorises the withdrawal."""
    trader = await _trader(desk)
    headers = {**trader.headers, "Idempotency-Key": "w-race"}
    first = await desk.client.post(
        "/v1/account/withdrawals",
        json={"token": desk.market["quote"], "amount": str(DOLLAR)},
        headers=trader.headers,
    )
    assert first.status_code == 201, first.text
    taken = first.json()["nonce"]
    calls = 0
    next_nonce = repository.next_withdrawal_nonce

    async def behind_once(session: AsyncSession, account: str) -> int:
        nonlocal calls
        calls += 1
        # As if a concurrent request read the same highest nonce first: the insert then clashes.
        return int(taken) if calls == 1 else await next_nonce(session, account)

    monkeypatch.setattr(repository, "next_withdrawal_nonce", behind_once)
    body = {"token": desk.market["quote"], "amount": str(2 * DOLLAR)}
    lost = await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)
    assert lost.status_code == 409, lost.text
    assert lost.json()["type"].endswith("/withdrawal-race")
    assert lost.headers["Retry-After"] == "1"
    again = await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert "Idempotent-Replayed" not in again.headers
    listed = (await desk.client.get("/v1/account/withdrawals", headers=trader.headers)).json()
    assert sorted(int(item["amount"]) for item in listed) == [DOLLAR, 2 * DOLLAR]
    assert (await desk.balances(trader))[desk.market["quote"]]["reserved"] == 3 * DOLLAR


async def test_an_unexpected_failure_keeps_a_withdrawal_key_claimed(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the withdrawal committed (here: while its answer is built) leaves the key
    claimed: the retry is told the first request has not finished, and is not run again."""
    trader = await _trader(desk)
    headers = {**trader.headers, "Idempotency-Key": "w-lost"}
    body = {"token": desk.market["quote"], "amount": str(DOLLAR)}
    answer = routes.withdrawal_out

    def lost(*args: Any) -> Any:
        raise ConnectionResetError("the answer was lost")

    monkeypatch.setattr(routes, "withdrawal_out", lost)
    failed = await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)
    assert failed.status_code == 500, failed.text
    monkeypatch.setattr(routes, "withdrawal_out", answer)
    retried = await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)
    assert retried.status_code == 409, retried.text
    assert retried.json()["type"].endswith("/idempotency-key-in-use")
    listed = (await desk.client.get("/v1/account/withdrawals", headers=trader.headers)).json()
    assert len(listed) == 1
    assert (await desk.balances(trader))[desk.market["quote"]]["reserved"] == DOLLAR


async def _age_every_key(session: AsyncSession, age: timedelta) -> None:
    """Every stored key made ``age`` ago."""
    await session.execute(update(IdempotencyKey).values(created_at=utc_now() - age))


async def test_keys_older_than_the_retention_are_purged_and_free_again(desk: Desk) -> None:
    trader = await _trader(desk)
    body = {"token": desk.market["quote"], "amount": str(DOLLAR)}
    raw = json.dumps(body).encode()
    first = await desk.client.post(
        "/v1/account/withdrawals", json=body, headers={**trader.headers, "Idempotency-Key": "w-old"}
    )
    assert first.status_code == 201, first.text
    await _abandoned_claim(desk, trader, "w-dead", "/v1/account/withdrawals", raw)
    async with desk.trading.sessionmaker() as session, session.begin():
        await _age_every_key(session, timedelta(days=1, seconds=1))  # beyond the default day

    desk.trading.idempotency._next_purge = 0  # due now: the next claim purges
    fresh = await desk.client.post(
        "/v1/account/withdrawals", json=body, headers={**trader.headers, "Idempotency-Key": "w-new"}
    )
    assert fresh.status_code == 201, fresh.text
    async with desk.trading.sessionmaker() as session:
        assert list(await session.scalars(select(IdempotencyKey.key))) == ["w-new"]
    for key in ("w-old", "w-dead"):  # a new request each, no longer a replay or an unfinished claim
        again = await desk.client.post(
            "/v1/account/withdrawals", json=body, headers={**trader.headers, "Idempotency-Key": key}
        )
        assert again.status_code == 201, again.text
        assert again.json()["nonce"] not in (first.json()["nonce"], fresh.json()["nonce"])
    replayed = await desk.client.post(
        "/v1/account/withdrawals", json=body, headers={**trader.headers, "Idempotency-Key": "w-new"}
    )
    assert replayed.json() == fresh.json()


_KEEP_KEYS = {  # a database that refuses the purge's DELETE
    "sqlite": [
        "CREATE TRIGGER keep_keys BEFORE DELETE ON trading_idempotency_keys "
        "BEGIN SELECT RAISE(ABORT, 'keys are kept'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION keep_keys() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'keys are kept'; END $$",
        "CREATE TRIGGER keep_keys BEFORE DELETE ON trading_idempotency_keys "
        "FOR EACH ROW EXECUTE FUNCTION keep_keys()",
    ],
}


async def test_a_failed_purge_does_not_fail_the_request(desk: Desk) -> None:
    trader = await _trader(desk)
    body = {"token": desk.market["quote"], "amount": str(DOLLAR)}
    headers = {**trader.headers, "Idempotency-Key": "w-first"}
    assert (await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)).status_code == 201
    async with desk.trading.sessionmaker() as session, session.begin():
        await _age_every_key(session, timedelta(days=2))
        for statement in _KEEP_KEYS[session.bind.dialect.name]:
            await session.execute(text(statement))

    desk.trading.idempotency._next_purge = 0  # due now: the next claim purges, and the purge fails
    headers = {**trader.headers, "Idempotency-Key": "w-second"}
    answer = await desk.client.post("/v1/account/withdrawals", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    async with desk.trading.sessionmaker() as session:
        assert sorted(await session.scalars(select(IdempotencyKey.key))) == ["w-first", "w-second"]


async def test_a_key_claimed_by_a_third_request_in_a_race_is_in_use_not_an_error(
    database_url: str, desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request meets its key held (request A's); by the time it reads the key, A released it
    (a refusal worth retrying) and request C claimed it. Its claim is a 409 to retry, as when it
    finds the key held, and nothing is placed. (On SQLite the read takes the write lock first,
    so no third request gets in between.)"""
    if not database_url.startswith("postgresql"):
        pytest.skip("a race SQLite's write lock rules out")
    trader = await _trader(desk)
    body = desk.order_body(trader, "buy", price(10), WHOLE)
    raw = json.dumps(body).encode()
    key, digest = "raced", request_digest("POST", "/v1/orders", raw)
    store = desk.trading.idempotency

    async def held(holding: bool) -> None:
        async with store._sessionmaker() as session, session.begin():
            if holding:
                session.add(
                    IdempotencyKey(
                        account=trader.address, key=key, request_sha256=digest, created_at=utc_now()
                    )
                )
            else:
                await session.execute(delete(IdempotencyKey).where(IdempotencyKey.key == key))

    await held(True)  # request A's
    read = AsyncSession.get

    async def get_between(self: AsyncSession, entity: Any, ident: Any, **options: Any) -> Any:
        if entity is not IdempotencyKey:
            return await read(self, entity, ident, **options)
        monkeypatch.setattr(AsyncSession, "get", read)
        await held(False)  # A released its key ...
        row = await read(self, entity, ident, **options)
        await held(True)  # ... and C claimed it before this request's insert
        return row

    monkeypatch.setattr(AsyncSession, "get", get_between)
    reply = await desk.client.post(  # plain JSON: the order route's fast path
        "/v1/orders",
        content=raw,
        headers={**trader.headers, "Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert reply.status_code == 409, reply.text
    assert reply.json()["type"].endswith("/idempotency-key-in-use")
    assert reply.headers["retry-after"] == "1"
    assert await desk.orders(trader) == []
