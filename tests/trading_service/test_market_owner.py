"""One process writes a market: on PostgreSQL the writer holds the market's advisory lock from
its start to its stop, and a second service on the same database refuses to start."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import text

from exchange.chain.runtime import ChainRuntime
from exchange.settings import Settings
from exchange.trading import market_claim
from exchange.trading import writer as writer_module
from exchange.trading.feed import MarketFeed
from exchange.trading.market_claim import MarketOwned
from tests.support.auth import embedded_account
from tests.trading_service.conftest import start_desk
from tests.trading_service.desk import WHOLE, Desk, Trader, price, until_stopped

served = contextlib.asynccontextmanager(start_desk)


@pytest.fixture(autouse=True)
def short_claim_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(market_claim, "WAIT_S", 0.3)


async def _first_order(desk: Desk) -> Trader:
    """A member with 10 BPC that offers 1 of them: the member."""
    alice = await desk.member(embedded_account(6))
    await desk.deposit(alice, desk.market["base"], 10 * WHOLE)
    placed = await desk.place(alice, "sell", price(10), WHOLE)
    assert placed.status_code == 201, placed.text
    return alice


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_second_service_on_the_database_refuses_to_start_while_the_first_serves(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    async with served(settings, chain_runtime) as first:
        alice = await _first_order(first)
        with pytest.raises(MarketOwned, match="written by another process"):
            async with served(settings, chain_runtime):
                pytest.fail("a second writer of the market started")
        # The first goes on writing, undisturbed.
        assert (await first.place(alice, "sell", price(10), WHOLE)).status_code == 201
        assert (await first.journal())["sequence"] == 2

    async with served(settings, chain_runtime) as second:  # once the first stopped, the market is free
        book = (await second.client.get(f"/v1/markets/{second.market['id']}/orderbook")).json()
        assert book["asks"] == [[str(price(10)), str(2 * WHOLE), 2]]


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_writer_that_fails_to_start_lets_the_market_go(
    settings: Settings, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: writer_module.MarketWriter) -> None:
        raise RuntimeError("the journal cannot be read")

    with monkeypatch.context() as patched:
        patched.setattr(writer_module.MarketWriter, "_recover", broken)
        with pytest.raises(RuntimeError, match="cannot be read"):
            async with served(settings, chain_runtime):
                pass
    async with served(settings, chain_runtime) as desk:
        await _first_order(desk)


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
async def test_sqlite_takes_no_lock(settings: Settings, chain_runtime: ChainRuntime) -> None:
    """On SQLite the claim is nothing (the embedded database's run lock is the service's)."""
    async with served(settings, chain_runtime) as desk:
        assert desk.trading.markets[desk.market["id"]].writer.claim.connection is None
        await _first_order(desk)


async def _end_claiming_session(desk: Desk) -> None:
    """The server ends the writer's claiming session (a restart, an idle timeout, an operator)."""
    owner = desk.trading.markets[desk.market["id"]].writer.claim.connection
    assert owner is not None
    raw = await owner.get_raw_connection()
    pid = raw.driver_connection.get_server_pid()
    async with desk.trading.sessionmaker() as session:
        await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        for _ in range(500):  # until the server has ended it, and its lock with it
            gone = await session.scalar(
                text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            )
            await session.commit()  # the next read takes a new snapshot of the server's activity
            if gone:
                return
            await asyncio.sleep(0.01)
    pytest.fail(f"the server did not end session {pid}")


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_writer_whose_claim_was_lost_claims_the_market_again(
    settings: Settings, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(market_claim, "CHECK_S", 0.05)
    async with served(settings, chain_runtime) as first:
        alice = await _first_order(first)
        await _end_claiming_session(first)
        await asyncio.sleep(0.2)  # the writer's next check finds the session gone and claims again
        assert (await first.place(alice, "sell", price(10), WHOLE)).status_code == 201
        with pytest.raises(MarketOwned):
            async with served(settings, chain_runtime):
                pytest.fail("a second writer of the market started")


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_writer_whose_market_another_process_took_stops_writing(
    settings: Settings, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken while its claim was lost: the first writer stops (503) and the second one writes.
    The first process's book no longer follows the journal: its followers are told and closed,
    and it is no longer served."""
    monkeypatch.setattr(market_claim, "CHECK_S", 3600)
    async with served(settings, chain_runtime) as first:
        alice = await _first_order(first)
        first_writer = first.trading.markets[first.market["id"]].writer
        follower = _Follower()
        first_feed = first.trading.markets[first.market["id"]].feed
        first_feed.book_subscribers.add(follower)
        first_feed.trade_subscribers.add(follower)
        await _end_claiming_session(first)
        async with served(settings, chain_runtime) as second:  # before the first's next check
            monkeypatch.setattr(market_claim, "CHECK_S", 0)  # which the next command brings
            refused = await first.place(alice, "sell", price(10), WHOLE)
            assert refused.status_code == 503, refused.text
            await until_stopped(first_writer)
            placed = await second.place(alice, "sell", price(11), WHOLE, client_order_id="taken", nonce=10**6)
            assert placed.status_code == 201, placed.text
            assert (await second.journal())["sequence"] == 2

            assert [type(error).__name__ for error in follower.ended] == ["WriterUnavailable"]  # once
            for path in ("orderbook", "ticker"):
                stale = await first.client.get(f"/v1/markets/{first.market['id']}/{path}")
                assert stale.status_code == 503, stale.text
                assert stale.json()["type"].endswith("/trading-unavailable")
            current = (await second.client.get(f"/v1/markets/{second.market['id']}/orderbook")).json()
            assert [level[0] for level in current["asks"]] == [str(price(10)), str(price(11))]


class _Follower:
    """A feed subscriber that keeps how its feed ended."""

    def __init__(self) -> None:
        self.ended: list[Exception] = []

    def offer(self, message: str) -> None:
        pass

    def end(self, feed: MarketFeed, channels: frozenset[str], error: Exception) -> None:
        self.ended.append(error)


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_claim_lost_while_the_database_cannot_be_reached_is_claimed_at_a_later_check(
    settings: Settings, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer goes on (its cycles meet the outage on their own) and claims the market again."""
    monkeypatch.setattr(market_claim, "CHECK_S", 3600)  # the test makes the checks itself
    async with served(settings, chain_runtime) as desk:
        alice = await _first_order(desk)
        writer = desk.trading.markets[desk.market["id"]].writer
        await _end_claiming_session(desk)
        claim = market_claim.MarketClaim.take
        attempts: list[int] = []

        async def unreachable_once(self: market_claim.MarketClaim) -> None:
            attempts.append(1)
            if len(attempts) == 1:
                raise OSError("connection refused")
            await claim(self)

        monkeypatch.setattr(market_claim.MarketClaim, "take", unreachable_once)
        monkeypatch.setattr(market_claim, "CHECK_S", 0)
        await writer.claim.keep()  # the session is gone, and the database does not answer
        assert writer.claim.connection is None
        await writer.claim.keep()  # the next check claims the market again
        assert writer.claim.connection is not None
        assert len(attempts) == 2
        monkeypatch.setattr(market_claim, "CHECK_S", 3600)
        assert writer.running
        assert (await desk.place(alice, "sell", price(10), WHOLE)).status_code == 201
        with pytest.raises(MarketOwned):
            async with served(settings, chain_runtime):
                pytest.fail("a second writer of the market started")
