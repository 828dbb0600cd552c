"""How the writer moves from one cycle to the next."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from exchange.db import bulk
from exchange.trading import market_claim
from exchange.trading import writer as writer_module
from exchange.trading.intents import Intent
from exchange.trading.models import TradingFill
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


async def test_commands_queued_during_a_cycle_start_the_next_before_its_answers_go_out(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await desk.member(0x91)
    await desk.deposit(alice, desk.market["quote"], 1_000 * DOLLAR)
    writer = desk.trading.market("BPC-TUSD").writer
    events: list[str] = []
    started, all_queued, gate = asyncio.Event(), asyncio.Event(), asyncio.Event()
    enqueued: list[Intent] = []
    cycle, read, write = writer._cycle, writer._read, writer._write
    enqueue = writer.enqueue

    async def traced_cycle(batch: list[Intent]) -> Any:
        events.append(f"cycle of {len(batch)}")
        started.set()
        if len(events) == 1:
            await gate.wait()  # the others queue meanwhile
        return await cycle(batch)

    async def traced_read(*args: Any) -> Any:
        known = await read(*args)
        events.append("read")
        return known

    async def traced_write(*args: Any) -> None:
        events.append("write")
        await write(*args)

    def traced_enqueue(intent: Intent) -> None:
        enqueue(intent)
        intent.future.add_done_callback(lambda _: events.append("answered"))
        enqueued.append(intent)
        if len(enqueued) == 3:
            all_queued.set()

    # No claim check due between the cycles (it awaits the database): not what is tested here.
    monkeypatch.setattr(market_claim, "CHECK_S", 3600.0)
    monkeypatch.setattr(writer, "_cycle", traced_cycle)
    monkeypatch.setattr(writer, "_read", traced_read)
    monkeypatch.setattr(writer, "_write", traced_write)
    monkeypatch.setattr(writer, "enqueue", traced_enqueue)
    first = asyncio.create_task(desk.place(alice, "buy", price(5), WHOLE))
    await started.wait()
    rest = [asyncio.create_task(desk.place(alice, "buy", price(dollars), WHOLE)) for dollars in (6, 7)]
    await all_queued.wait()
    gate.set()
    replies = await asyncio.gather(first, *rest)
    assert [reply.status_code for reply in replies] == [201, 201, 201]
    # The second cycle began before the first one's answer reached anyone waiting for it, and
    # that answer went out once the second cycle had read, while it waited for its write.
    assert events == [
        "cycle of 1",
        "read",
        "write",
        "cycle of 2",
        "read",
        "write",
        "answered",
        "answered",
        "answered",
    ]


class Statements:
    """The statements the writer's PostgreSQL connection sends, each as its first words."""

    def __init__(self, driver: Any) -> None:
        self.sent: list[str] = []
        self.driver = driver
        driver.add_query_logger(self.logged)

    def logged(self, record: Any) -> None:
        query = record.query
        self.sent.append(query if len(query) < 20 else " ".join(query.split()[:3]))

    def close(self) -> None:
        self.driver.remove_query_logger(self.logged)


async def queued(desk: Desk, count: int) -> None:
    """Once ``count`` commands wait in the writer's queue (the requests' way there has no event)."""
    writer = desk.trading.market("BPC-TUSD").writer
    for _ in range(5000):
        if writer.queued >= count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{count} commands never queued")


def hold_next_cycle(writer: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """The writer's next cycle waits, once begun (the first event), until the second is set: the
    commands sent meanwhile queue for the cycle after it."""
    started, gate = asyncio.Event(), asyncio.Event()
    cycle = writer._cycle

    async def gated_cycle(batch: list[Intent]) -> Any:
        if not started.is_set():
            started.set()
            await gate.wait()
        return await cycle(batch)

    monkeypatch.setattr(writer, "_cycle", gated_cycle)
    return started, gate


async def gated_cycles(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, queue_meanwhile: Any
) -> tuple[Statements, Any]:
    """A placed order's cycle held open while ``queue_meanwhile()`` queues more, then let go; the
    statements the writer sent from that cycle on, and what ``queue_meanwhile`` returned."""
    writer = desk.trading.market("BPC-TUSD").writer
    if writer._engine.dialect.name != "postgresql":
        pytest.skip("the cycle's statements on PostgreSQL")
    alice = await desk.member(0x92)
    await desk.deposit(alice, desk.market["quote"], 1_000 * DOLLAR)
    monkeypatch.setattr(market_claim, "CHECK_S", 3600.0)
    assert (await desk.place(alice, "buy", price(4), WHOLE)).status_code == 201  # connection held
    connection = writer._connection
    assert connection is not None
    statements = Statements((await connection.get_raw_connection()).driver_connection)
    started, gate = hold_next_cycle(writer, monkeypatch)
    first = asyncio.create_task(desk.place(alice, "buy", price(5), WHOLE))
    await started.wait()
    waiting = await queue_meanwhile(alice)
    gate.set()
    assert (await first).status_code == 201
    return statements, waiting


async def two_queued_meanwhile(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> Statements:
    """``gated_cycles`` with two orders queued while the first cycle is held, all placed; the
    statements sent until the writer waits for commands again."""

    async def two_more(alice: Trader) -> list[asyncio.Task[Any]]:
        orders = [asyncio.create_task(desk.place(alice, "buy", price(dollars), WHOLE)) for dollars in (6, 7)]
        await queued(desk, 2)
        return orders

    statements, orders = await gated_cycles(desk, monkeypatch, two_more)
    assert [reply.status_code for reply in await asyncio.gather(*orders)] == [201, 201]
    await asyncio.sleep(0.05)  # the writer waits for commands again
    statements.close()
    return statements


async def test_a_cycle_is_three_round_trips_and_its_commit_begins_the_next_one_waiting(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements = await two_queued_meanwhile(desk, monkeypatch)
    writer = desk.trading.market("BPC-TUSD").writer
    assert statements.sent == [
        "BEGIN",
        "WITH locked AS",  # the known orders and the balances, locked
        "WITH w0 AS",  # every row the cycle writes, and the journal head
        "COMMIT; BEGIN",  # two orders were waiting: the next cycle's transaction begins
        "WITH locked AS",
        "WITH w0 AS",
        "COMMIT",  # nothing waiting: no transaction is left open
    ]
    assert not statements.driver.is_in_transaction()
    assert writer.running


async def test_a_transaction_begun_for_commands_that_needed_no_cycle_is_ended_before_waiting(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = desk.trading.market("BPC-TUSD").writer

    async def a_probe(_alice: Trader) -> asyncio.Task[Any]:
        probe = asyncio.create_task(writer.recent_head(0.0))
        await queued(desk, 1)
        return probe

    statements, probe = await gated_cycles(desk, monkeypatch, a_probe)
    assert (await probe).sequence == writer.sequence  # answered without a transaction
    await asyncio.sleep(0.05)
    statements.close()
    assert statements.sent[-2:] == ["COMMIT; BEGIN", "ROLLBACK"]
    assert not statements.driver.is_in_transaction()


async def seller_and_buyer(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, seller_key: int, buyer_key: int
) -> tuple[Trader, Trader, Any]:
    """A member holding base to sell and one holding quote to buy, and the market's writer, with
    no claim check due between its cycles."""
    seller, buyer = await desk.member(seller_key), await desk.member(buyer_key)
    await desk.deposit(seller, desk.market["base"], 10 * WHOLE)
    await desk.deposit(buyer, desk.market["quote"], 1_000 * DOLLAR)
    monkeypatch.setattr(market_claim, "CHECK_S", 3600.0)
    return seller, buyer, desk.trading.market("BPC-TUSD").writer


async def test_fills_name_their_orders_whether_resting_or_placed_in_the_same_cycle(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob, writer = await seller_and_buyer(desk, monkeypatch, 0x93, 0x94)
    resting = await desk.place(alice, "sell", price(5), WHOLE)
    started, gate = hold_next_cycle(writer, monkeypatch)
    held = asyncio.create_task(desk.place(bob, "buy", price(1), WHOLE))  # crosses nothing
    await started.wait()
    # One cycle: a sell, then a buy taking the resting sell and that new one.
    placed = asyncio.create_task(desk.place(alice, "sell", price(6), WHOLE))
    await queued(desk, 1)
    taking = asyncio.create_task(desk.place(bob, "buy", price(6), 2 * WHOLE))
    await queued(desk, 2)
    gate.set()
    replies = [await held, await placed, await taking]
    assert [reply.status_code for reply in (resting, *replies)] == [201] * 4
    names = ("at 5", "at 6", "buy")
    ids = {name: int(reply.json()["id"]) for name, reply in zip(names, (resting, *replies[1:]), strict=True)}
    async with desk.trading.sessionmaker() as session:
        fills = (
            await session.execute(
                select(TradingFill.maker_order_id, TradingFill.taker_order_id).order_by(TradingFill.trade_id)
            )
        ).all()
    assert [tuple(fill) for fill in fills] == [(ids["at 5"], ids["buy"]), (ids["at 6"], ids["buy"])]


async def test_a_cycle_that_fails_before_its_write_still_answers_the_committed_one_before_it(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await desk.member(0x95)
    await desk.deposit(alice, desk.market["quote"], 1_000 * DOLLAR)
    writer = desk.trading.market("BPC-TUSD").writer
    monkeypatch.setattr(market_claim, "CHECK_S", 3600.0)
    read = writer._read
    reads = 0

    async def failing_read(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise ConnectionResetError("the database went away")
        return await read(*args)

    enqueued: list[Intent] = []
    enqueue, recover = writer.enqueue, writer._recover
    answered_at_recovery: list[bool] = []

    def traced_enqueue(intent: Intent) -> None:
        enqueued.append(intent)
        enqueue(intent)

    async def traced_recover() -> None:
        answered_at_recovery.append(enqueued[0].future.done())
        await recover()

    started, gate = hold_next_cycle(writer, monkeypatch)
    monkeypatch.setattr(writer, "_read", failing_read)
    monkeypatch.setattr(writer, "enqueue", traced_enqueue)
    monkeypatch.setattr(writer, "_recover", traced_recover)
    first = asyncio.create_task(desk.place(alice, "buy", price(5), WHOLE))
    await started.wait()
    second = asyncio.create_task(desk.place(alice, "buy", price(6), WHOLE))
    await queued(desk, 1)
    gate.set()
    # The first cycle committed with a command waiting: its answer was held for the next
    # cycle's write, which never came. It is answered before the book is rebuilt, and the
    # second one is refused.
    assert (await first).status_code == 201
    assert (await second).status_code == 503
    assert answered_at_recovery == [True]
    assert writer.running
    assert (await desk.place(alice, "buy", price(6), WHOLE)).status_code == 201


async def held_driver(desk: Desk) -> Any:
    """The asyncpg connection the writer holds (PostgreSQL), after one placed order."""
    writer = desk.trading.market("BPC-TUSD").writer
    if writer._engine.dialect.name != "postgresql":
        pytest.skip("the writer's own transaction on PostgreSQL")
    alice = await desk.member(0x96)
    await desk.deposit(alice, desk.market["quote"], 1_000 * DOLLAR)
    assert (await desk.place(alice, "buy", price(4), WHOLE)).status_code == 201
    connection = writer._connection
    assert connection is not None
    return (await connection.get_raw_connection()).driver_connection


async def test_a_cycle_goes_on_only_in_the_transaction_a_commit_began_for_it(desk: Desk) -> None:
    driver = await held_driver(desk)
    # A transaction the writer did not begin for a cycle, with a write in it: the next cycle
    # must not commit it.
    await driver.execute("BEGIN")
    await driver.execute(
        "INSERT INTO ledger_entries (account, token, total_delta, reserved_delta, cause, reference,"
        " created_at) VALUES ('stray', 'stray', '0', '0', 'stray', 'stray', now())"
    )
    alice = await desk.member(0x96, admit=False)
    assert (await desk.place(alice, "buy", price(5), WHOLE)).status_code == 201
    async with desk.trading.sessionmaker() as session:
        strays = await session.scalar(text("SELECT count(*) FROM ledger_entries WHERE cause = 'stray'"))
    assert strays == 0


async def test_a_connection_given_back_leaves_no_transaction_begun_for_a_next_cycle(desk: Desk) -> None:
    driver = await held_driver(desk)
    writer = desk.trading.market("BPC-TUSD").writer
    await driver.execute("BEGIN")
    writer._carried = True  # as a commit with commands waiting leaves it
    await writer._drop_connection()
    assert not driver.is_in_transaction()
    assert writer._connection is None
    assert not writer._carried


async def test_held_answers_and_reports_say_what_their_cycle_committed(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Alice's sell commits while Bob's crossing buy waits: her answer and the cycle's report are
    # held until Bob's cycle sends its write, which then fails. They still say what her cycle
    # committed (open, unfilled, journal head 1), not what Bob's cycle matched and never wrote.
    alice, bob, writer = await seller_and_buyer(desk, monkeypatch, 0x97, 0x98)
    head = writer.sequence
    write_all = bulk.write_all
    reported: list[tuple[int, list[str]]] = []
    assert writer.listener is not None
    committed = writer.listener.committed

    def traced_committed(report: Any) -> None:
        reported.append((report.sequence, [row.status for row in report.orders]))
        committed(report)

    async def failing_write_all(*args: Any, **kwargs: Any) -> Any:
        if reported:  # the second cycle's write: the first one's report is out
            raise ConnectionResetError("the database went away")
        return await write_all(*args, **kwargs)

    answer_held = writer._answer_held
    held_when_sent: list[bool] = []

    def traced_answer_held() -> None:
        if writer._held is not None:
            held_when_sent.append(writer.sequence > head + 1)  # the next cycle had matched
        answer_held()

    started, gate = hold_next_cycle(writer, monkeypatch)
    monkeypatch.setattr(writer.listener, "committed", traced_committed)
    monkeypatch.setattr(writer, "_answer_held", traced_answer_held)
    monkeypatch.setattr(bulk, "write_all", failing_write_all)
    selling = asyncio.create_task(desk.place(alice, "sell", price(5), WHOLE))
    await started.wait()
    buying = asyncio.create_task(desk.place(bob, "buy", price(5), WHOLE))
    await queued(desk, 1)
    gate.set()
    sold, bought = await selling, await buying
    assert sold.status_code == 201
    assert (sold.json()["status"], sold.json()["filled"]) == ("open", "0")
    assert bought.status_code == 503
    assert held_when_sent == [True]  # held, and sent once Bob's cycle had matched
    assert reported == [(head + 1, ["open"])]
    assert writer.sequence == head + 1  # the book rebuilt from the journal
    monkeypatch.setattr(bulk, "write_all", write_all)
    assert (await desk.order(alice, sold.json()["id"]))["status"] == "open"


async def test_a_writer_stopped_mid_cycle_answers_that_cycles_commands(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await desk.member(0x99)
    await desk.deposit(alice, desk.market["quote"], 1_000 * DOLLAR)
    writer = desk.trading.market("BPC-TUSD").writer
    started, _ = hold_next_cycle(writer, monkeypatch)  # never let go: the writer stops in it
    placing = asyncio.create_task(desk.place(alice, "buy", price(5), WHOLE))
    await started.wait()
    task = writer._task
    assert task is not None
    task.cancel()
    reply = await asyncio.wait_for(placing, 10)
    assert reply.status_code == 503
    assert "retry it" in reply.json()["detail"]
    with contextlib.suppress(asyncio.CancelledError):
        await task
    writer._task = None  # stopped already: the service's stop only gives the market up


async def test_a_cycle_takes_its_orders_ids_ahead_and_keeps_its_writes_plans(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a cycle's first read takes an id for each order the cycle may place: the
    orders placed get them in turn, and one refused leaves the cycle's last id unused. The rest
    of the cycle's transaction keeps its plans, every join a nested loop; the connection's own
    settings are back once the transaction ends."""
    writer = desk.trading.market("BPC-TUSD").writer
    if writer._engine.dialect.name != "postgresql":
        pytest.skip("the writer's own transaction on PostgreSQL")
    alice = await desk.member(0x96)
    await desk.deposit(alice, desk.market["quote"], 10 * DOLLAR)
    monkeypatch.setattr(market_claim, "CHECK_S", 3600.0)
    before = await desk.place(alice, "buy", price(1), WHOLE)
    assert before.status_code == 201, before.text
    settings: list[tuple[str, ...]] = []
    write_all = bulk.write_all
    names = ("plan_cache_mode", "enable_seqscan", "enable_hashjoin", "enable_mergejoin")
    shown = "SELECT " + ", ".join(f"current_setting('{name}')" for name in names)

    async def observed(target: Any, *args: Any, **kwargs: Any) -> Any:
        settings.append(tuple(await target.driver.fetchrow(shown)))
        return await write_all(target, *args, **kwargs)

    monkeypatch.setattr(bulk, "write_all", observed)
    started, gate = hold_next_cycle(writer, monkeypatch)
    held = asyncio.create_task(desk.place(alice, "buy", price(1), WHOLE))
    await started.wait()
    placing = []
    for count, amount in enumerate((WHOLE, 100 * WHOLE, WHOLE), 1):  # the second: more than alice has
        placing.append(asyncio.create_task(desk.place(alice, "buy", price(1), amount)))
        await queued(desk, count)
    gate.set()
    replies = [await held, *[await reply for reply in placing]]
    assert [reply.status_code for reply in replies] == [201, 201, 409, 201]
    after = await desk.place(alice, "buy", price(1), WHOLE)
    assert after.status_code == 201, after.text
    first = int(before.json()["id"])
    ids = [int(reply.json()["id"]) for reply in (replies[0], replies[1], replies[3], after)]
    assert ids == [first + 1, first + 2, first + 3, first + 5]
    assert settings
    assert set(settings) == {("force_generic_plan", "off", "off", "off")}
    connection = writer._connection
    assert connection is not None
    driver = (await connection.get_raw_connection()).driver_connection
    plans = await driver.fetch(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'WITH w0 AS%'"
    )
    assert plans
    assert all(row["custom_plans"] == 0 for row in plans)  # the writes kept their plans
    assert sum(row["generic_plans"] for row in plans) >= 2
    assert tuple(await driver.fetchrow(shown)) == ("force_custom_plan", "on", "on", "on")


async def test_the_writer_has_its_plans_made_anew_every_so_many_cycles(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``_REPLAN_EVERY`` cycles the commit discards the connection's plans, also when it
    begins the next cycle's transaction; and a connection goes back to the pool without them."""
    writer = desk.trading.market("BPC-TUSD").writer
    if writer._engine.dialect.name != "postgresql":
        pytest.skip("the writer's own transaction on PostgreSQL")
    alice = await desk.member(0x97)
    await desk.deposit(alice, desk.market["quote"], 100 * DOLLAR)
    monkeypatch.setattr(market_claim, "CHECK_S", 3600.0)
    monkeypatch.setattr(writer_module, "_REPLAN_EVERY", 2)
    assert (await desk.place(alice, "buy", price(1), WHOLE)).status_code == 201  # connection held
    connection = writer._connection
    assert connection is not None
    statements = Statements((await connection.get_raw_connection()).driver_connection)
    try:
        for _ in range(4):  # one cycle each, nothing waiting at its commit
            assert (await desk.place(alice, "buy", price(1), WHOLE)).status_code == 201
    finally:
        statements.close()
    commits = [sent for sent in statements.sent if sent.startswith("COMMIT")]
    assert commits in (
        ["COMMIT", "COMMIT; DISCARD PLANS"] * 2,
        ["COMMIT; DISCARD PLANS", "COMMIT"] * 2,
    )

    monkeypatch.setattr(writer_module, "_REPLAN_EVERY", 1)
    carried = await two_queued_meanwhile(desk, monkeypatch)
    assert carried.sent == [
        "BEGIN",
        "WITH locked AS",
        "WITH w0 AS",
        "COMMIT; DISCARD PLANS;",  # and BEGIN: two orders were waiting
        "WITH locked AS",
        "WITH w0 AS",
        "COMMIT; DISCARD PLANS",
    ]

    connection = writer._connection
    assert connection is not None
    sent: list[str] = []
    execute = AsyncConnection.exec_driver_sql

    async def traced(self: AsyncConnection, statement: str, *args: Any, **kwargs: Any) -> Any:
        if self is connection:
            sent.append(statement)
        return await execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(AsyncConnection, "exec_driver_sql", traced)
    await writer._drop_connection()  # back to the pool
    assert "DISCARD PLANS" in sent
