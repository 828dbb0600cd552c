"""The WebSocket stream through a real server: book snapshot + diffs, trades, own orders and fills."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import uvicorn
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from exchange.auth.service import Principal
from exchange.chain.runtime import ChainRuntime
from exchange.main import server_options
from exchange.settings import Settings
from exchange.trading.fill_notices import APPLICATION_NAME
from exchange.trading.settlement_service import build_settlement
from exchange.trading.ws import CLOSE_RATE_LIMITED, MAX_REFUSALS_IN_A_ROW
from tests.trading_service.conftest import start_desk, trading_settings
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price

TICK = 10**4
LOT = 10**15
WAIT_S = 10


async def serve(desk: Desk) -> AsyncIterator[str]:
    """Serve the desk's (already started) app on a loopback port; yield the stream's URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            desk.app, host="127.0.0.1", port=port, lifespan="off", **server_options(desk.trading.settings)
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server stopped while starting"
        await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}/v1/ws"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def ws_url(desk: Desk) -> AsyncIterator[str]:
    async for url in serve(desk):
        yield url


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    return message


async def until_closed(stream: Stream) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes the connection, and the close code it sent."""
    messages: list[dict[str, Any]] = []
    try:
        while True:
            messages.append(await stream.next())
    except ConnectionClosed as closed:
        return messages, None if closed.rcvd is None else closed.rcvd.code


ANSWERS = ("subscribed", "unsubscribed", "authenticated", "pong", "error")


class Stream:
    """A client connection: operations and their answers, data messages in arrival order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[dict[str, Any]] = []  # data that arrived while waiting for an answer

    async def request(self, **op: Any) -> dict[str, Any]:
        await self.ws.send(orjson.dumps(op).decode())
        while True:
            message = await receive(self.ws)
            if message["type"] in ANSWERS:
                return message
            self.pending.append(message)

    async def next(self) -> dict[str, Any]:
        return self.pending.pop(0) if self.pending else await receive(self.ws)


class BookClient:
    """A client keeping the book from a snapshot and diffs, checking every sequence link."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.sides: dict[str, dict[str, tuple[str, int]]] = {"bids": {}, "asks": {}}
        self.sequence: int | None = None
        self.updates = 0

    def apply(self, message: dict[str, Any]) -> None:
        if message["channel"] != "book":
            return
        if message["type"] == "snapshot":
            self.sides = {
                key: {level[0]: (level[1], level[2]) for level in message[key]} for key in ("bids", "asks")
            }
            self.sequence = message["sequence"]
            return
        assert message["prev_sequence"] == self.sequence, "gap in the book stream"
        assert message["sequence"] > message["prev_sequence"]
        for key in ("bids", "asks"):
            for price_text, amount, orders in message[key]:
                if amount == "0":
                    self.sides[key].pop(price_text, None)
                else:
                    self.sides[key][price_text] = (amount, orders)
        self.sequence = message["sequence"]
        self.updates += 1

    async def catch_up(self, sequence: int) -> None:
        while self.sequence != sequence:
            self.apply(await self.stream.next())

    def levels(self) -> dict[str, list[list[Any]]]:
        return {
            "bids": [[p, a, n] for p, (a, n) in sorted(self.sides["bids"].items(), key=lambda i: -int(i[0]))],
            "asks": [[p, a, n] for p, (a, n) in sorted(self.sides["asks"].items(), key=lambda i: int(i[0]))],
        }


async def _funded(desk: Desk, *keys: int) -> list[Trader]:
    traders = []
    for key in keys:
        trader = await desk.member(key)
        await desk.deposit(trader, desk.market["base"], 1_000 * WHOLE)
        await desk.deposit(trader, desk.market["quote"], 100_000 * DOLLAR)
        traders.append(trader)
    return traders


async def _orders(desk: Desk, traders: list[Trader], rng: random.Random, count: int) -> None:
    for _ in range(count):
        reply = await desk.place(
            rng.choice(traders),
            rng.choice(("buy", "sell")),
            price(10) + rng.randint(-15, 15) * TICK * 10,
            rng.randint(10, 300) * LOT,
        )
        assert reply.status_code == 201, reply.text


async def _rest_book(desk: Desk) -> dict[str, Any]:
    book: dict[str, Any] = (await desk.client.get("/v1/markets/BPC-TUSD/orderbook")).json()
    return book


async def test_snapshot_and_diffs_rebuild_the_committed_book(desk: Desk, ws_url: str) -> None:
    alice, bob = await _funded(desk, 0x71, 0x72)
    rng = random.Random(3)
    async with connect(ws_url) as early:
        first = BookClient(Stream(early))
        answer = await first.stream.request(op="subscribe", channel="book", market="BPC-TUSD", id=1)
        assert answer == {"type": "subscribed", "channel": "book", "market": "BPC-TUSD", "id": 1}
        await _orders(desk, [alice, bob], rng, 30)
        async with connect(ws_url) as late:  # joins mid-stream: its snapshot is the book at that moment
            second = BookClient(Stream(late))
            answer = await second.stream.request(op="subscribe", channel="book", market="BPC-TUSD")
            assert answer["type"] == "subscribed"
            await _orders(desk, [alice, bob], rng, 30)
            book = await _rest_book(desk)
            await first.catch_up(book["sequence"])
            await second.catch_up(book["sequence"])
            expected = {"bids": book["bids"], "asks": book["asks"]}
            assert first.levels() == expected
            assert second.levels() == expected
            assert first.updates > second.updates > 0


async def test_subscribing_again_resends_the_book_snapshot_and_keeps_one_subscription(
    desk: Desk, ws_url: str
) -> None:
    alice, bob = await _funded(desk, 0x7C, 0x7D)
    assert (await desk.place(alice, "sell", price(10), 2 * WHOLE)).status_code == 201
    async with connect(ws_url) as raw:
        stream = Stream(raw)
        for channel in ("book", "book", "trades", "trades"):
            answer = await stream.request(op="subscribe", channel=channel, market="BPC-TUSD")
            answer.pop("sequence", None)  # the trades chain's (test_trades_updates_are_chained...)
            assert answer == {"type": "subscribed", "channel": channel, "market": "BPC-TUSD"}
        # A snapshot for each book subscribe, none for trades.
        assert [message["type"] for message in stream.pending] == ["snapshot", "snapshot"]
        first, again = stream.pending
        stream.pending.clear()
        book = await _rest_book(desk)
        assert again == first
        assert (again["type"], again["sequence"]) == ("snapshot", book["sequence"])
        assert (again["bids"], again["asks"]) == (book["bids"], book["asks"])

        assert (await desk.place(bob, "buy", price(10), WHOLE)).status_code == 201
        assert (await stream.request(op="ping"))["type"] == "pong"
        # One of each, though each channel was subscribed twice.
        assert [message["channel"] for message in stream.pending] == ["book", "trades"]
        update, trade = stream.pending
        assert (update["channel"], update["type"]) == ("book", "update")
        assert update["prev_sequence"] == again["sequence"]
        assert update["asks"] == [[str(price(10)), str(WHOLE), 1]]
        assert (trade["channel"], trade["type"]) == ("trades", "update")


async def test_trades_updates_are_chained_by_sequence_from_the_subscription_on(
    desk: Desk, ws_url: str
) -> None:
    alice, bob = await _funded(desk, 0x88, 0x89)
    assert (await desk.place(alice, "sell", price(10), WHOLE)).status_code == 201
    assert (await desk.place(bob, "buy", price(10), WHOLE)).status_code == 201  # a trade before
    async with connect(ws_url) as raw:
        stream = Stream(raw)
        answer = await stream.request(op="subscribe", channel="trades", market="BPC-TUSD")
        assert answer["sequence"] == (await desk.journal())["sequence"]  # its last cycle traded
        assert (await desk.place(alice, "sell", price(11), WHOLE)).status_code == 201  # no trade
        assert (await desk.place(alice, "sell", price(12), WHOLE)).status_code == 201
        assert (await desk.place(bob, "buy", price(12), 2 * WHOLE)).status_code == 201  # two fills
        assert (await desk.place(bob, "buy", price(12), WHOLE // 2)).status_code == 201  # nothing left
        assert (await desk.place(alice, "sell", price(12), WHOLE)).status_code == 201  # fills the rest
        assert (await stream.request(op="ping"))["type"] == "pong"
        first, second = (message for message in stream.pending if message["channel"] == "trades")
        assert first["prev_sequence"] == answer["sequence"]
        assert first["sequence"] == answer["sequence"] + 3  # the two sells between had no trade
        assert len(first["data"]) == 2
        assert second["prev_sequence"] == first["sequence"]
        assert second["sequence"] == (await desk.journal())["sequence"]


async def test_the_book_snapshot_is_encoded_once_per_state_of_the_book(desk: Desk) -> None:
    alice, bob = await _funded(desk, 0x86, 0x87)
    feed = desk.trading.markets["BPC-TUSD"].feed
    assert (await desk.place(alice, "sell", price(10), 2 * WHOLE)).status_code == 201
    first = feed.encoded_snapshot()
    assert feed.encoded_snapshot() is first  # every subscriber at this sequence shares it
    assert orjson.loads(first) == feed.snapshot()
    assert (await desk.place(bob, "buy", price(10), WHOLE)).status_code == 201
    later = feed.encoded_snapshot()
    assert orjson.loads(later) == feed.snapshot()
    assert orjson.loads(later)["asks"] == [[str(price(10)), str(WHOLE), 1]]
    assert orjson.loads(later)["sequence"] > orjson.loads(first)["sequence"]


async def test_trades_and_private_channels_reach_only_their_audience(desk: Desk, ws_url: str) -> None:
    alice, bob, carol = await _funded(desk, 0x73, 0x74, 0x75)
    token = alice.headers["Authorization"].removeprefix("Bearer ")
    async with (
        connect(ws_url) as public_ws,
        connect(ws_url) as mine_ws,
        connect(ws_url, additional_headers=carol.headers) as carols_ws,
    ):
        public, mine, carols = Stream(public_ws), Stream(mine_ws), Stream(carols_ws)
        assert (await public.request(op="subscribe", channel="trades", market="BPC/TUSD"))[
            "type"
        ] == "subscribed"
        refused = await public.request(op="subscribe", channel="orders", id="x")
        assert (refused["type"], refused["status"], refused["id"]) == ("error", 401, "x")
        authenticated = await mine.request(op="auth", token=token)
        assert authenticated == {"type": "authenticated", "account": alice.address}
        for channel in ("orders", "fills"):
            assert (await mine.request(op="subscribe", channel=channel))["account"] == alice.address
        assert (await carols.next())["type"] == "authenticated"  # signed in at the handshake
        for channel in ("orders", "fills"):
            assert (await carols.request(op="subscribe", channel=channel))["account"] == carol.address

        ask = await desk.place(alice, "sell", price(10), 5 * WHOLE)
        bid = await desk.place(bob, "buy", price(10), 2 * WHOLE)
        assert (ask.status_code, bid.status_code) == (201, 201)

        trades = (await public.next())["data"]
        assert [(t["side"], t["price"], t["amount"]) for t in trades] == [
            ("buy", str(price(10)), str(2 * WHOLE))
        ]
        rest = (await desk.client.get("/v1/markets/BPC-TUSD/trades")).json()["items"]
        assert trades == rest

        seen: dict[str, list[dict[str, Any]]] = {"orders": [], "fills": []}
        while len(seen["fills"]) < 1 or not any(o["filled"] == str(2 * WHOLE) for o in seen["orders"]):
            message = await mine.next()
            seen[message["channel"]].extend(message["data"])
        own = await desk.orders(alice)
        assert {o["id"] for o in seen["orders"]} == {o["id"] for o in own}
        assert seen["orders"][-1] == own[0]
        my_trades = (await desk.client.get("/v1/account/trades", headers=alice.headers)).json()["items"]
        assert seen["fills"] == my_trades
        assert (await carols.request(op="ping"))["type"] == "pong"
        assert carols.pending == []  # nothing of alice's or bob's arrived before the pong


async def test_a_trade_that_fails_settlement_is_taken_back_on_the_trades_and_fills_channels(
    desk: Desk, ws_url: str
) -> None:
    # Credited in the ledger only: the Vault holds nothing of theirs, so it refuses to settle the trade.
    alice, bob = await _funded(desk, 0x78, 0x79)
    async with connect(ws_url) as public_ws, connect(ws_url, additional_headers=alice.headers) as mine_ws:
        public, mine = Stream(public_ws), Stream(mine_ws)
        assert (await public.request(op="subscribe", channel="trades", market="BPC-TUSD"))["type"] == (
            "subscribed"
        )
        assert (await mine.next())["type"] == "authenticated"
        assert (await mine.request(op="subscribe", channel="fills"))["type"] == "subscribed"
        assert (await desk.place(alice, "sell", price(10), WHOLE)).status_code == 201
        assert (await desk.place(bob, "buy", price(10), WHOLE)).status_code == 201
        traded = await public.next()
        assert traded["type"] == "update"
        matched = await mine.next()
        assert matched["data"][0]["settlement_state"] == "pending"

        await desk.app.state.settlement.settler.drain(poll_s=0.02, timeout_s=60)

        void = await public.next()
        assert (void["channel"], void["type"], void["market"]) == ("trades", "void", "BPC-TUSD")
        assert void["data"] == traded["data"]
        failed = await mine.next()
        assert failed["channel"] == "fills"
        own = (await desk.client.get("/v1/account/trades", headers=alice.headers)).json()["items"]
        assert failed["data"] == own
        assert [fill["settlement_state"] for fill in own] == ["failed"]
        assert {**failed["data"][0], "settlement_state": "pending"} == matched["data"][0]
        assert (await desk.client.get("/v1/markets/BPC-TUSD/trades")).json()["items"] == []


async def test_a_fill_that_settles_is_sent_again_settled_on_the_fills_channel(
    database_url: str, settings: Settings, desk: Desk, ws_url: str
) -> None:
    """Once by the settler of this process, and (on PostgreSQL) once by a settler elsewhere, whose
    batch the service hears of from the database's notice; each batch once, however often heard."""
    alice, bob = await desk.funded_in_the_vault()
    async with connect(ws_url, additional_headers=bob.headers) as bobs_ws, connect(ws_url) as public_ws:
        mine, public = Stream(bobs_ws), Stream(public_ws)
        assert (await mine.next())["type"] == "authenticated"
        assert (await mine.request(op="subscribe", channel="fills"))["type"] == "subscribed"
        assert (await public.request(op="subscribe", channel="trades", market="BPC-TUSD"))["type"] == (
            "subscribed"
        )
        settlers = [desk.app.state.settlement.settler]
        if database_url.startswith("postgresql"):
            assert desk.trading.fill_notices is not None
            assert desk.trading.fill_notices.listening.is_set()
            settlers.append(build_settlement(desk.chain, settings, desk.trading.sessionmaker).settler)
        for settler in settlers:
            assert (await desk.place(alice, "sell", price(10), WHOLE)).status_code == 201
            assert (await desk.place(bob, "buy", price(10), WHOLE)).status_code == 201
            matched = await mine.next()
            assert [fill["settlement_state"] for fill in matched["data"]] == ["pending"]
            await public.next()

            await settler.drain(poll_s=0.02, timeout_s=60)
            settled = await asyncio.wait_for(mine.next(), 10)
            assert settled["channel"] == "fills"
            own = (await desk.client.get("/v1/account/trades", headers=bob.headers)).json()["items"]
            assert settled["data"] == [own[0]]
            assert own[0]["settlement_state"] == "settled"
            assert own[0]["tx_hash"]
            assert {**settled["data"][0], "settlement_state": "pending", "tx_hash": None} == matched["data"][
                0
            ]
        await asyncio.sleep(0.2)  # time for a notice of the last batch to be handled too
        assert (await mine.request(op="ping"))["type"] == "pong"
        assert mine.pending == []  # each batch sent once, though the settler here both called and notified
        assert (await public.request(op="ping"))["type"] == "pong"
        assert public.pending == []  # a settlement changes nothing public


async def test_a_fill_failed_by_a_settler_elsewhere_is_taken_back_once_even_while_the_listener_was_cut(
    database_url: str, desk: Desk, ws_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL notifications")
    notices = desk.trading.fill_notices
    assert notices is not None
    assert notices.listening.is_set()
    alice, bob = await _funded(desk, 0x7A, 0x7B)
    async with connect(ws_url) as public_ws:
        public = Stream(public_ws)
        assert (await public.request(op="subscribe", channel="trades", market="BPC-TUSD"))["type"] == (
            "subscribed"
        )
        traded = []
        for _ in range(3):
            assert (await desk.place(alice, "sell", price(10), WHOLE)).status_code == 201
            assert (await desk.place(bob, "buy", price(10), WHOLE)).status_code == 201
            traded.append(await public.next())

        await desk.fail_fills([int(traded[0]["data"][0]["id"])], settler_here=False)
        void = await asyncio.wait_for(public.next(), 10)
        assert (void["channel"], void["type"], void["data"]) == ("trades", "void", traded[0]["data"])
        # Heard a second time (the settler inside serve also calls the service): taken back once only.
        await desk.trading.fill_failed(int(traded[0]["data"][0]["id"]))
        assert (await public.request(op="ping"))["type"] == "pong"
        assert public.pending == []

        # The listening connection is cut: a failure while nobody listens is read back once one
        # listens again, and the next failure is heard.
        notices.first_retry_s = 2.0  # time enough to fail a fill before the connection is reopened
        async with desk.trading.sessionmaker() as session:
            cut = await session.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            )
        assert cut == 1
        for _ in range(200):
            if not notices.listening.is_set():
                break
            await asyncio.sleep(0.02)
        assert not notices.listening.is_set()
        await desk.fail_fills([int(traded[2]["data"][0]["id"])], settler_here=False)  # its notice is lost
        await asyncio.wait_for(notices.listening.wait(), 10)
        void = await asyncio.wait_for(public.next(), 10)
        assert (void["type"], void["data"]) == ("void", traded[2]["data"])
        second = int(traded[1]["data"][0]["id"])
        await desk.fail_fills([second], settler_here=False)
        # Heard three times at once (the notice and two calls): still one void.
        await asyncio.gather(desk.trading.fill_failed(second), desk.trading.fill_failed(second))
        void = await asyncio.wait_for(public.next(), 10)
        assert (void["type"], void["data"]) == ("void", traded[1]["data"])
        await asyncio.sleep(0.2)  # time for the notice to be handled too
        assert (await public.request(op="ping"))["type"] == "pong"
        assert public.pending == []


async def test_bad_operations_are_answered_and_the_connection_stays(desk: Desk, ws_url: str) -> None:
    async with connect(ws_url) as raw:
        ws = Stream(raw)
        await raw.send("not json")
        assert (await ws.next())["status"] == 422
        cases = [
            ({"op": "dance", "id": 1}, 422),
            ({"op": "subscribe", "channel": "gossip", "id": 2}, 422),
            ({"op": "subscribe", "channel": "book", "market": "NOPE-X", "id": 3}, 422),
            ({"op": "subscribe", "channel": "book", "id": 4}, 422),
            ({"op": "auth", "token": "not-a-session", "id": 5}, 401),
            ({"op": "auth", "id": 6}, 422),
            ({"op": "subscribe", "channel": "book", "market": "BPC-TUSD", "limit": 1, "id": 8}, 422),
            ({"op": "ping", "zzz": 1, "id": 9}, 422),
        ]
        for op, status in cases:
            answer = await ws.request(**op)
            assert (answer["type"], answer["status"], answer["id"]) == ("error", status, op["id"]), answer
            assert answer["detail"]
        await raw.send(b"\x00binary")
        assert (await ws.next())["status"] == 422
        await raw.send("[1, 2]")
        assert (await ws.next())["status"] == 422
        assert (await ws.request(op="ping", id=7)) == {"type": "pong", "id": 7}
        unknown = await ws.request(op="subscribe", channel="book", market="BPC-TUSD", limit=1, id=10)
        assert unknown["detail"] == "subscribe takes no field 'limit'; its fields: op, id, channel, market"
        assert ws.pending == []  # refused whole: no snapshot was sent


async def test_a_message_over_the_size_limit_closes_the_connection(desk: Desk, ws_url: str) -> None:
    limit = desk.trading.settings.ws_max_message_bytes
    async with connect(ws_url, max_size=None) as raw:
        ws = Stream(raw)
        assert (await ws.request(op="ping", id=1)) == {"type": "pong", "id": 1}
        await raw.send('{"op": "ping", "pad": "' + "x" * limit + '"}')
        _, code = await until_closed(ws)
    assert code == 1009  # message too big


async def _started(settings: Settings, chain: ChainRuntime) -> AsyncIterator[tuple[Desk, str]]:
    async for desk in start_desk(settings, chain):
        async for url in serve(desk):
            yield desk, url


async def test_a_book_rebuilt_at_start_is_stamped(database_url: str, chain_runtime: ChainRuntime) -> None:
    """The snapshot of a book no cycle changed since the start carries the time it was rebuilt,
    as the REST order book does; it had no time at all."""
    settings = trading_settings(database_url)
    async for desk, _ in _started(settings, chain_runtime):
        (alice,) = await _funded(desk, 0x7D)
        assert (await desk.place(alice, "sell", price(10), WHOLE)).status_code == 201
    async for desk, url in _started(settings, chain_runtime):
        started = time.time()
        async with connect(url) as raw:
            ws = Stream(raw)
            await ws.request(op="subscribe", channel="book", market="BPC-TUSD")
            (snapshot,) = ws.pending
        book = (await desk.client.get("/v1/markets/BPC-TUSD/orderbook")).json()
        assert len(snapshot["asks"]) == len(book["asks"]) == 1
        assert snapshot["timestamp"] == book["timestamp"] == snapshot["timestamp_us"] // 1000
        assert snapshot["timestamp"] <= started * 1000 + 1  # rebuilt before the subscribe


@pytest.mark.parametrize(
    "outbox",
    [{"trading_ws_outbox_limit": 2}, {"trading_ws_outbox_max_bytes": 1024}],
    ids=["messages", "characters"],
)
async def test_a_consumer_that_falls_behind_is_closed_not_skipped(
    database_url: str, chain_runtime: ChainRuntime, outbox: dict[str, int]
) -> None:
    settings = trading_settings(database_url, **outbox)
    async for desk, url in _started(settings, chain_runtime):
        alice, bob = await _funded(desk, 0x76, 0x77)
        headers = {**alice.headers, "X-Request-ID": "slow-reader-1"}
        async with connect(url, additional_headers=headers) as raw:
            ws = Stream(raw)
            assert (await ws.next())["type"] == "authenticated"
            for op in (
                {"channel": "book", "market": "BPC-TUSD"},
                {"channel": "trades", "market": "BPC-TUSD"},
                {"channel": "orders"},
                {"channel": "fills"},
            ):
                assert (await ws.request(op="subscribe", **op))["type"] == "subscribed"
            for step in range(8):
                await desk.place(bob, "sell", price(10) + step * TICK * 10, WHOLE)
            # One cycle publishes four messages to ws, the last of them after some 2 KB.
            await desk.place(alice, "buy", price(10) + 7 * TICK * 10, 8 * WHOLE)
            messages, code = await until_closed(ws)
            assert code == 1013
            feed = desk.trading.markets["BPC-TUSD"].feed
            assert feed.book_subscribers == set()
            assert feed.trade_subscribers == set()
            assert (feed.order_subscribers, feed.fill_subscribers) == ({}, {})
            assert messages[-1]["type"] == "error"
            assert messages[-1]["title"] == "Connection too slow"
            assert messages[-1]["request_id"] == "slow-reader-1"  # closed from the feed, not the handler


async def test_a_snapshot_larger_than_the_outbox_budget_is_delivered_with_its_answer(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    budget = 1024  # the least the setting allows
    settings = trading_settings(database_url, trading_ws_outbox_max_bytes=budget)
    async for desk, url in _started(settings, chain_runtime):
        (alice,) = await _funded(desk, 0x7B)
        for step in range(40):  # forty price levels: a snapshot of a few kilobytes
            reply = await desk.place(alice, "sell", price(10) + step * TICK * 10, WHOLE)
            assert reply.status_code == 201, reply.text
        assert len(desk.trading.markets["BPC-TUSD"].feed.encoded_snapshot()) > budget
        async with connect(url) as raw:
            ws = Stream(raw)
            answer = await ws.request(op="subscribe", channel="book", market="BPC-TUSD")
            assert answer == {"type": "subscribed", "channel": "book", "market": "BPC-TUSD"}
            (snapshot,) = ws.pending
            assert (snapshot["type"], len(snapshot["asks"])) == ("snapshot", 40)
            assert (await ws.request(op="ping"))["type"] == "pong"  # still open


async def test_a_signed_out_session_is_closed(database_url: str, chain_runtime: ChainRuntime) -> None:
    # The watcher asks the database, not the trading routes' cache of sessions (a minute here).
    settings = trading_settings(database_url, trading_ws_session_recheck_s=0.1, trading_session_cache_s=60)
    async for desk, url in _started(settings, chain_runtime):
        (alice,) = await _funded(desk, 0x78)
        async with connect(url, additional_headers=alice.headers) as raw:
            ws = Stream(raw)
            assert (await ws.next())["type"] == "authenticated"
            logout = await desk.client.post("/v1/auth/logout", headers=alice.headers)
            assert logout.status_code < 300, logout.text
            messages, code = await until_closed(ws)
            assert code == 4401
            assert messages[-1]["status"] == 401


async def test_signing_in_as_another_account_ends_the_first_accounts_private_stream(
    desk: Desk, ws_url: str
) -> None:
    alice, bob = await _funded(desk, 0x79, 0x7A)
    async with connect(ws_url, additional_headers=alice.headers) as raw:
        ws = Stream(raw)
        assert (await ws.next())["account"] == alice.address
        assert (await ws.request(op="subscribe", channel="orders"))["account"] == alice.address
        bob_token = bob.headers["Authorization"].removeprefix("Bearer ")
        assert (await ws.request(op="auth", token=bob_token))["account"] == bob.address
        feed = desk.trading.markets["BPC-TUSD"].feed
        assert alice.address not in feed.order_subscribers
        assert (await desk.place(alice, "sell", price(30), WHOLE)).status_code == 201
        assert (await ws.request(op="ping"))["type"] == "pong"
        assert ws.pending == []  # alice's new order did not reach bob's connection
        assert (await ws.request(op="subscribe", channel="orders"))["account"] == bob.address
        assert (await ws.request(op="unsubscribe", channel="orders"))["type"] == "unsubscribed"
        assert feed.order_subscribers == {}


async def test_an_auth_refused_after_signing_out_ends_the_private_stream_at_once(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    # The watcher checks every 30 s; the trading routes' cache of sessions keeps answers a minute.
    settings = trading_settings(database_url, trading_session_cache_s=60)
    async for desk, url in _started(settings, chain_runtime):
        (alice,) = await _funded(desk, 0x7B)
        token = alice.headers["Authorization"].removeprefix("Bearer ")
        async with connect(url) as raw:
            ws = Stream(raw)
            assert (await ws.request(op="auth", token=f" {token} "))["account"] == alice.address
            assert (await ws.request(op="subscribe", channel="orders"))["type"] == "subscribed"
            logout = await desk.client.post("/v1/auth/logout", headers=alice.headers)
            assert logout.status_code < 300, logout.text
            assert (await ws.request(op="auth", token=token))["status"] == 401
            assert desk.trading.markets["BPC-TUSD"].feed.order_subscribers == {}
            again = await ws.request(op="subscribe", channel="orders")
            assert (again["type"], again["status"]) == ("error", 401)


async def test_a_token_sent_with_spaces_is_the_session_the_watcher_checks(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    settings = trading_settings(database_url, trading_ws_session_recheck_s=0.05, trading_session_cache_s=0)
    async for desk, url in _started(settings, chain_runtime):
        (alice,) = await _funded(desk, 0x7C)
        token = alice.headers["Authorization"].removeprefix("Bearer ")
        async with connect(url) as raw:
            ws = Stream(raw)
            assert (await ws.request(op="auth", token=f" {token}\t"))["account"] == alice.address
            await asyncio.sleep(0.3)  # several checks of the session
            assert (await ws.request(op="ping"))["type"] == "pong"


# --------------------------------------------------------------------------- rate limits

IP_BURST = 4


def _strict_settings(database_url: str, **overrides: object) -> Settings:
    """Tokens that come back once in 1000 s: none during a test."""
    values: dict[str, object] = {"trading_rate_ip_per_s": 0.001, "trading_rate_ip_burst": IP_BURST}
    return trading_settings(database_url, **{**values, **overrides})


def _counted_lookups(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens the trading service resolves from now on, in order."""
    principals = desk.trading.principals
    resolve = principals.resolve
    tokens: list[str] = []

    async def counting(token: str, **options: Any) -> Principal:
        tokens.append(token)
        return await resolve(token, **options)

    monkeypatch.setattr(principals, "resolve", counting)
    return tokens


async def test_every_operation_takes_a_token_and_a_refused_auth_looks_nothing_up(
    database_url: str, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async for desk, url in _started(_strict_settings(database_url), chain_runtime):
        lookups = _counted_lookups(desk, monkeypatch)
        async with connect(url) as raw:  # the handshake takes the first token
            ws = Stream(raw)
            for n in range(IP_BURST - 1):
                answer = await ws.request(op="auth", token="not-a-session", id=n)
                assert (answer["type"], answer["status"], answer["id"]) == ("error", 401, n), answer
            refused = await ws.request(op="auth", token="not-a-session", id="last")
            assert (refused["type"], refused["status"], refused["id"]) == ("error", 429, "last")
            assert refused["problem"].endswith("/rate-limited")
            assert refused["retry_after_seconds"] >= 1
            assert lookups == ["not-a-session"] * (IP_BURST - 1)  # none for the refused one
            # The connection stays for a client that waits: another refusal, not a close.
            assert (await ws.request(op="ping"))["status"] == 429


async def test_a_connection_that_keeps_sending_while_refused_is_closed_with_4429(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    async for desk, url in _started(_strict_settings(database_url), chain_runtime):
        async with connect(url) as raw:
            ws = Stream(raw)
            for _ in range(IP_BURST - 1):
                assert (await ws.request(op="ping"))["type"] == "pong"
            for n in range(MAX_REFUSALS_IN_A_ROW):
                refused = await ws.request(op="subscribe", channel="book", market="BPC-TUSD", id=n)
                assert (refused["type"], refused["status"], refused["id"]) == ("error", 429, n), refused
            assert ws.pending == []  # a refused subscribe sends no snapshot
            assert desk.trading.markets["BPC-TUSD"].feed.book_subscribers == set()
            await raw.send(orjson.dumps({"op": "ping"}).decode())
            messages, code = await until_closed(ws)
            assert code == CLOSE_RATE_LIMITED == 4429
            assert [(message["type"], message["status"]) for message in messages] == [("error", 429)]


async def test_a_signed_in_connection_also_spends_its_accounts_tokens(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    settings = trading_settings(
        database_url,
        trading_rate_account_per_s=0.001,
        trading_rate_account_burst=2,
        trading_rate_ip_per_s=0.001,  # no token comes back during the test: the IP's count is exact
        trading_rate_ip_burst=1000,
    )
    async for desk, url in _started(settings, chain_runtime):
        alice = await desk.member(0x7E)
        async with connect(url, additional_headers=alice.headers) as raw:
            ws = Stream(raw)
            assert (await ws.next())["type"] == "authenticated"
            for _ in range(2):
                assert (await ws.request(op="ping"))["type"] == "pong"
            ip_bucket = desk.trading.ip_limits._buckets["ip:127.0.0.1"]
            ip_tokens = ip_bucket.tokens
            for _ in range(3):
                refused = await ws.request(op="ping")
                assert (refused["type"], refused["status"]) == ("error", 429)
                assert alice.address in refused["detail"]
            # What the account's bucket refused costs the IP nothing (but 0.001 token a second back).
            assert ip_bucket.tokens == pytest.approx(ip_tokens, abs=0.1)
        async with connect(url) as raw:  # the IP has tokens left for a connection not signed in
            assert (await Stream(raw).request(op="ping"))["type"] == "pong"


async def test_a_client_ip_holds_at_most_its_connections_open(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    """Every book subscriber is sent every diff: one address cannot open connections without end."""
    settings = _strict_settings(database_url, trading_ws_connections_per_ip=2, trading_rate_ip_burst=50)
    async for _desk, url in _started(settings, chain_runtime):
        async with connect(url) as first, connect(url):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
            response = refused.value.response
            assert response.status_code == 429
            problem = orjson.loads(response.body)
            assert (problem["type"].rsplit("/", 1)[-1], problem["limit"]) == ("rate-limited", 2)
            assert "2 WebSocket connections open" in problem["detail"]
            await first.close()
        async with connect(url) as again:  # those closed are counted out
            assert (await Stream(again).request(op="ping"))["type"] == "pong"


async def test_a_handshake_over_the_ip_limit_is_answered_429_with_retry_after(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    settings = _strict_settings(database_url, trading_rate_ip_burst=1)
    async for _desk, url in _started(settings, chain_runtime):
        async with connect(url):  # takes the only token
            pass
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert response.headers["Content-Type"] == "application/problem+json"
        retry_after = int(response.headers["Retry-After"])
        assert retry_after >= 1
        problem = orjson.loads(response.body)
        assert problem["type"].endswith("/rate-limited")
        assert (problem["status"], problem["instance"]) == (429, "/v1/ws")
        assert problem["retry_after_seconds"] == retry_after
        assert problem["request_id"] == response.headers["X-Request-ID"]
