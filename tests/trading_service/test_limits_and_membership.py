"""Rate limits answer 429 with Retry-After; suspended members lose their open orders.

The membership cache is tested alone with a lookup of its own (the chain read it is
given), whose answers the test releases, to put a ``forget`` inside a read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from exchange.chain.runtime import ChainRuntime
from exchange.kit.ratelimit import RateLimiter
from exchange.settings import Settings
from exchange.trading.intents import CancelAllIntent
from exchange.trading.service import MembershipCache, TradingService
from exchange.trading.writer import MarketWriter
from tests.trading_service.conftest import start_desk, trading_settings
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.retry_after("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.retry_after("k") == 0.0
    assert limiter.retry_after("other") == 0.0


def test_a_request_may_take_several_tokens_but_never_more_than_the_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert limiter.retry_after("k", 2) == 0.0
    assert limiter.retry_after("k", 2) == pytest.approx(0.5)  # one left, one more in 0.5 s
    now[0] += 0.5
    assert limiter.retry_after("k", 2) == 0.0
    for tokens in (0, 4):
        with pytest.raises(ValueError, match="between 1 and 3 tokens"):
            limiter.retry_after("k", tokens)


class HeldLookup:
    """An ``isActiveMember`` lookup whose first answer waits until the test releases it."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, account: str) -> bool:
        self.asked.append(account)
        if len(self.asked) == 1:
            self.started.set()
            await self.release.wait()
        return self.answers[len(self.asked) - 1]


async def test_an_answer_read_before_a_forget_is_neither_kept_nor_given() -> None:
    lookup = HeldLookup([True, False])  # active when first asked, suspended by the time it is forgotten
    cache = MembershipCache(lookup, ttl_s=3600)
    in_flight = asyncio.create_task(cache.is_active("0xA"))
    await lookup.started.wait()
    cache.forget("0xA")  # the membership poller saw the suspension
    lookup.release.set()
    assert await in_flight is False
    assert lookup.asked == ["0xA", "0xA"]  # asked again after the forget
    assert await cache.is_active("0xA") is False  # the fresh answer is the one kept
    assert lookup.asked == ["0xA", "0xA"]


async def test_forgetting_another_account_keeps_an_answer_in_flight() -> None:
    lookup = HeldLookup([True])
    cache = MembershipCache(lookup, ttl_s=3600)
    in_flight = asyncio.create_task(cache.is_active("0xA"))
    await lookup.started.wait()
    cache.forget("0xB")
    lookup.release.set()
    assert await in_flight is True
    assert await cache.is_active("0xA") is True
    assert lookup.asked == ["0xA"]


@pytest.fixture
async def strict_desk(database_url: str, chain_runtime: ChainRuntime) -> AsyncIterator[Desk]:
    settings: Settings = trading_settings(
        database_url, trading_rate_account_per_s=0.001, trading_rate_account_burst=2
    )  # a token back in 1,000 s: no slow step of the test refills the bucket
    async for desk in start_desk(settings, chain_runtime):
        yield desk


async def test_account_rate_limit_is_429_with_retry_after(strict_desk: Desk) -> None:
    trader = await strict_desk.member(0xA1)
    statuses = [
        (await strict_desk.client.get("/v1/orders", headers=trader.headers)).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    reply = await strict_desk.client.get("/v1/account/balances", headers=trader.headers)
    assert reply.status_code == 429
    assert reply.headers["content-type"] == "application/problem+json"
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.json()["type"].endswith("/rate-limited")
    # Another account has its own bucket.
    other = await strict_desk.member(0xA2)
    assert (await strict_desk.client.get("/v1/orders", headers=other.headers)).status_code == 200


@pytest.fixture
async def ip_limited_desk(database_url: str, chain_runtime: ChainRuntime) -> AsyncIterator[Desk]:
    settings = trading_settings(database_url, trading_rate_ip_per_s=0.001, trading_rate_ip_burst=3)
    async for desk in start_desk(settings, chain_runtime):
        yield desk


async def test_ip_rate_limit_covers_public_routes(ip_limited_desk: Desk) -> None:
    statuses = [(await ip_limited_desk.client.get("/v1/markets")).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_suspension_cancels_open_orders_and_stops_trading(desk: Desk) -> None:
    market = desk.market
    trader = await desk.member(0xA3)
    await desk.deposit(trader, market["base"], 5 * WHOLE)
    await desk.deposit(trader, market["quote"], 100 * DOLLAR)
    assert (await desk.place(trader, "sell", price(20), WHOLE)).status_code == 201
    assert (await desk.place(trader, "buy", price(5), WHOLE)).status_code == 201

    desk.chain.pool.suspend(trader.address)
    assert await desk.trading.cancel_all_orders_of(trader.address, "suspended by the council") == 2

    orders = await desk.orders(trader)
    assert [(order["status"], order["cancel_reason"]) for order in orders] == [("canceled", "suspended")] * 2
    assert all(balance["reserved"] == 0 for balance in (await desk.balances(trader)).values())
    refused = await desk.place(trader, "buy", price(5), WHOLE)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/not-active-member")


@pytest.fixture
async def watching_desk(database_url: str, chain_runtime: ChainRuntime) -> AsyncIterator[Desk]:
    settings = trading_settings(database_url, trading_membership_poll_s=0.05, trading_membership_ttl_s=3600)
    async for desk in start_desk(settings, chain_runtime):
        yield desk


async def _latest_order_once_canceled(desk: Desk, trader: Trader) -> tuple[str, str | None]:
    """(status, cancel reason) of the trader's latest order, once the poller cancelled it (or 5 s on)."""
    for _ in range(100):
        latest = (await desk.orders(trader))[0]
        if latest["status"] == "canceled":
            break
        await asyncio.sleep(0.05)
    return latest["status"], latest["cancel_reason"]


async def test_a_suspension_on_chain_is_seen_and_cancels_orders(watching_desk: Desk) -> None:
    desk = watching_desk
    trader = await desk.member(0xA4)
    await desk.deposit(trader, desk.market["base"], 5 * WHOLE)
    assert (await desk.place(trader, "sell", price(20), WHOLE)).status_code == 201  # caches "active"
    desk.chain.pool.suspend(trader.address)  # no call from the pool service: only the event
    assert await _latest_order_once_canceled(desk, trader) == ("canceled", "suspended")
    assert (await desk.place(trader, "sell", price(20), WHOLE)).status_code == 403


async def test_a_suspensions_cancel_that_fails_is_tried_again_at_the_next_poll(
    watching_desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel of a suspended member's orders fails once (its market's cycle fails): the poller
    tries again until it is done, rather than leaving the orders on the book to trade."""
    desk = watching_desk
    trader = await desk.member(0xA9)
    await desk.deposit(trader, desk.market["base"], 5 * WHOLE)
    assert (await desk.place(trader, "sell", price(20), WHOLE)).status_code == 201
    cancel_all = MarketWriter._cancel_all
    attempts: list[str] = []

    async def failing_once(self: MarketWriter, cycle: Any, intent: CancelAllIntent) -> Any:
        attempts.append(intent.account)
        if len(attempts) == 1:
            raise RuntimeError("the cycle's database went away")
        return await cancel_all(self, cycle, intent)

    monkeypatch.setattr(MarketWriter, "_cancel_all", failing_once)
    desk.chain.pool.suspend(trader.address)
    assert await _latest_order_once_canceled(desk, trader) == ("canceled", "suspended")
    assert attempts[:2] == [trader.address] * 2
    assert all(balance["reserved"] == 0 for balance in (await desk.balances(trader)).values())


async def test_a_suspension_mined_during_the_start_up_check_is_seen_by_the_poller(
    database_url: str, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for desk in start_desk(trading_settings(database_url), chain_runtime):
        trader = await desk.member(0xA5)
        await desk.deposit(trader, desk.market["base"], 5 * WHOLE)
        assert (await desk.place(trader, "sell", price(20), WHOLE)).status_code == 201

    check_makers = TradingService._cancel_orders_of_inactive_members

    async def suspended_right_after_the_check(service: TradingService) -> None:
        await check_makers(service)  # finds the maker active
        chain_runtime.pool.suspend(trader.address)

    monkeypatch.setattr(TradingService, "_cancel_orders_of_inactive_members", suspended_right_after_the_check)
    settings = trading_settings(database_url, trading_membership_poll_s=0.05, trading_membership_ttl_s=3600)
    async for desk in start_desk(settings, chain_runtime):
        assert await _latest_order_once_canceled(desk, trader) == ("canceled", "suspended")


def test_a_refund_gives_back_tokens_up_to_the_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 3, clock=lambda: now[0])
    assert limiter.retry_after("k", 3) == 0.0
    limiter.refund("k", 2)
    assert limiter.retry_after("k", 2) == 0.0  # the two given back
    assert limiter.retry_after("k") == pytest.approx(1.0)
    limiter.refund("k", 5)
    assert limiter.retry_after("k", 3) == 0.0  # never more than the burst
    assert limiter.retry_after("k") == pytest.approx(1.0)
    limiter.refund("never-charged", 1)  # a bucket not kept is full: nothing to give back
    assert limiter.retry_after("never-charged", 3) == 0.0


@pytest.fixture
async def shared_ip_desk(database_url: str, chain_runtime: ChainRuntime) -> AsyncIterator[Desk]:
    settings = trading_settings(
        database_url,
        trading_rate_account_per_s=0.001,
        trading_rate_account_burst=2,
        trading_rate_ip_per_s=0.001,
        trading_rate_ip_burst=5,
    )
    async for desk in start_desk(settings, chain_runtime):
        yield desk


async def test_a_batch_the_account_limit_refuses_leaves_the_ip_tokens_to_others(shared_ip_desk: Desk) -> None:
    desk = shared_ip_desk
    alice, bob = await desk.member(0xA6), await desk.member(0xA7)  # behind the same IP

    async def batch(trader: Trader) -> int:
        bodies = [desk.order_body(trader, "sell", price(20), WHOLE) for _ in range(2)]
        reply = await desk.client.post("/v1/orders/batch", json={"orders": bodies}, headers=trader.headers)
        return reply.status_code

    assert await batch(alice) == 200  # the IP's 5 tokens: 3 left; alice's 2: none left
    assert await batch(alice) == 429  # by alice's limit: it costs the IP one token, as any request does
    assert await batch(bob) == 200  # so bob's two orders still find theirs
    assert (await desk.client.get("/v1/markets")).status_code == 429  # and the IP's burst is spent
