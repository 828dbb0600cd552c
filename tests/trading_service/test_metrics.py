"""``GET /metrics``: the markets, the settlement backlog and the process, in Prometheus's format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from exchange.chain.runtime import ChainRuntime
from tests.trading_service.conftest import start_desk, trading_settings
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, price
from tests.trading_service.test_ws import Stream, serve

MARKET = "BPC-TUSD"


async def _scrape(desk: Desk, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and labels."""
    reply = await desk.client.get("/metrics", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def _market(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({"market": MARKET, **labels}.items()))


async def test_the_figures_follow_the_markets_and_the_settlement_backlog(desk: Desk) -> None:
    before = await _scrape(desk)
    assert before[_market("exchange_market_open_orders")] == 0
    assert before[("exchange_settlement_unsettled_fills", (("state", "pending"),))] == 0
    assert before[("exchange_settlement_oldest_unsettled_seconds", ())] == 0
    assert before[("exchange_ws_connections", ())] == 0
    assert ("process_resident_memory_bytes", ()) in before

    alice, bob = await desk.member(0xC1), await desk.member(0xC2)
    await desk.deposit(alice, desk.market["base"], 5 * WHOLE)
    await desk.deposit(bob, desk.market["quote"], 1_000 * DOLLAR)
    for order_price in (10, 11, 12):
        assert (await desk.place(alice, "sell", price(order_price), WHOLE)).status_code == 201
    assert (await desk.place(bob, "buy", price(11), 2 * WHOLE, time_in_force="IOC")).status_code == 201

    after = await _scrape(desk)
    head = await desk.journal()
    assert after[_market("exchange_market_journal_sequence")] == head["sequence"]
    assert after[_market("exchange_market_open_orders")] == head["open_orders"] == 1
    assert (
        after[_market("exchange_market_trades_total")] == before[_market("exchange_market_trades_total")] + 2
    )
    assert after[_market("exchange_market_writer_queue")] == 0
    cycles = after[_market("exchange_market_writer_cycle_seconds_count")]
    assert cycles > before[_market("exchange_market_writer_cycle_seconds_count")]
    assert after[_market("exchange_market_writer_cycle_seconds_sum")] > 0
    assert (
        after[_market("exchange_market_writer_commands_total")]
        >= before[_market("exchange_market_writer_commands_total")] + 4
    )
    assert after[_market("exchange_market_writer_failed_cycles_total")] == 0
    # No settler runs here: both fills wait.
    assert after[("exchange_settlement_unsettled_fills", (("state", "pending"),))] == 2
    assert after[("exchange_settlement_oldest_unsettled_seconds", ())] > 0
    blocks = {
        kind: after[("exchange_vault_indexer_block", (("block", kind),))]
        for kind in ("head", "scanned", "credited")
    }
    assert blocks["credited"] <= blocks["scanned"] <= blocks["head"]


@pytest.fixture
async def ws_url(desk: Desk) -> AsyncIterator[str]:
    async for url in serve(desk):
        yield url


async def test_websocket_connections_and_subscriptions_are_counted(desk: Desk, ws_url: str) -> None:
    alice = await desk.member(0xC3)
    async with connect(ws_url, additional_headers=alice.headers) as raw:
        ws = Stream(raw)
        assert (await ws.next())["type"] == "authenticated"
        for channel in ("book", "trades"):
            assert (await ws.request(op="subscribe", channel=channel, market=MARKET))["type"] == "subscribed"
        assert (await ws.request(op="subscribe", channel="orders"))["type"] == "subscribed"
        during = await _scrape(desk)
    assert during[("exchange_ws_connections", ())] == 1
    for channel, count in (("book", 1), ("trades", 1), ("orders", 1), ("fills", 0)):
        assert during[("exchange_ws_subscribers", (("channel", channel), ("market", MARKET)))] == count


async def test_a_metrics_token_is_asked_for_and_metrics_can_be_left_out(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    guarded = trading_settings(database_url, metrics_token="scrape-me")
    async for desk in start_desk(guarded, chain_runtime):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic scrape-me"}):
            refused = await desk.client.get("/metrics", headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
        assert _market("exchange_market_open_orders") in await _scrape(desk, Authorization="Bearer scrape-me")
    async for desk in start_desk(trading_settings(database_url, metrics=False), chain_runtime):
        left_out = await desk.client.get("/metrics")
        assert left_out.status_code == 404, left_out.text
        # The metrics stay out of the API's description.
        assert "/metrics" not in (await desk.client.get("/openapi.json")).json()["paths"]


async def test_a_scrape_never_waits_for_the_chain(desk: Desk) -> None:
    """The settlement's chain calls go one at a time, and a node call can take long: the scrape
    reports the head the Vault indexer's last pass saw, and asks the node nothing."""
    settlement = desk.app.state.settlement
    seen = settlement.indexer.position
    assert seen is not None
    async with settlement.calls._lock:  # the settler in a long call to the node
        samples = await asyncio.wait_for(_scrape(desk), 5)
    assert samples[("exchange_vault_indexer_block", (("block", "head"),))] == seen.head
