"""The ledger repository on both databases: postings persist, invariants refuse, nothing half-written."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.db import bulk
from exchange.db.base import utc_now
from exchange.trading import ledger, repository
from exchange.trading.ledger import VAULT_EXTERNAL, Balance
from exchange.trading.models import LedgerEntry

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
BPC = "0x" + "0c" * 20


@pytest.fixture
def session(db_session: AsyncSession) -> AsyncSession:
    return db_session


async def test_deposit_reserve_and_fill_persist(session: AsyncSession) -> None:
    async with session.begin():
        await repository.credit_deposit(session, ALICE, BPC, 500, reference="0xaa:1")
        await repository.apply_postings(
            session, ledger.reserve(ALICE, BPC, 200), cause="test", reference="r1"
        )
    async with session.begin():
        balances = await repository.balances_of(session, ALICE)
        entries = await session.scalar(select(func.count()).select_from(LedgerEntry))
        external = await session.scalar(
            select(LedgerEntry.total_delta).where(LedgerEntry.account == VAULT_EXTERNAL)
        )
    assert balances == {BPC: Balance(total=500, reserved=200)}
    assert entries == 3
    assert external == -500


async def test_overdraft_is_refused_and_writes_nothing(session: AsyncSession) -> None:
    async with session.begin():
        await repository.credit_deposit(session, ALICE, BPC, 100, reference="0xaa:1")
    with pytest.raises(repository.LedgerRefused) as refused:
        async with session.begin():
            await repository.apply_postings(
                session, ledger.reserve(ALICE, BPC, 101), cause="order.reserve", reference="o1"
            )
    assert refused.value.extra["reference"] == "o1"
    async with session.begin():
        assert await repository.balances_of(session, ALICE) == {BPC: Balance(total=100, reserved=0)}
        assert await session.scalar(select(func.count()).select_from(LedgerEntry)) == 2


async def test_unbalanced_postings_are_refused(session: AsyncSession) -> None:
    with pytest.raises(repository.LedgerRefused):
        async with session.begin():
            await repository.apply_postings(
                session, [ledger.Posting(BOB, BPC, 10)], cause="test", reference="unbalanced"
            )
    async with session.begin():
        assert await repository.balances_of(session, BOB) == {}


async def test_a_first_balance_of_an_account_is_locked_so_a_racing_first_deposit_waits(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Two transactions find no row for (BOB, BPC): a writer cycle about to credit BOB's first
    purchase, and the indexer crediting BOB's first deposit. Each used to insert the row, and the
    later one failed on its key. A locked read creates the row at zero first, so the deposit
    waits for the cycle, then adds to what it wrote: both amounts are kept."""
    async with sessionmaker() as setup, setup.begin():
        await repository.credit_deposit(setup, ALICE, BPC, 100, reference="0xaa:1")
    async with sessionmaker() as cycle:
        if cycle.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite runs one writing transaction at a time (BEGIN IMMEDIATE)")
        async with cycle.begin():
            connection = await cycle.connection()
            await connection.exec_driver_sql("SELECT 1")  # BEGIN sent: the raw statements join it
            driver = (await connection.get_raw_connection()).driver_connection
            target = bulk.Raw(driver, cycle.get_bind().dialect)  # as the writer's cycle reads
            assert await repository.load_balances(target, [(ALICE, BPC), (BOB, BPC)]) == {
                (ALICE, BPC): Balance(100, 0),
                (BOB, BPC): Balance(0, 0),
            }

            async def first_deposit() -> None:
                async with sessionmaker() as indexer, indexer.begin():
                    await repository.credit_deposit(indexer, BOB, BPC, 7, reference="0xbb:1")

            deposit = asyncio.create_task(first_deposit())
            await asyncio.sleep(0.3)
            assert not deposit.done()  # waiting for the cycle's lock on the row it created
            transfer = [ledger.Posting(ALICE, BPC, -40), ledger.Posting(BOB, BPC, 40)]
            current = {(ALICE, BPC): Balance(100, 0), (BOB, BPC): Balance(0, 0)}
            changed = ledger.apply(current, transfer)
            await repository.write_balances(target, changed, current.keys(), utc_now())
            entries = [(posting, "test", "t1") for posting in transfer]
            await repository.insert_entries(target, entries, utc_now())
        await deposit
    async with sessionmaker() as check, check.begin():
        assert await repository.balances_of(check, BOB) == {BPC: Balance(total=47, reserved=0)}


async def test_a_transaction_crossing_the_writers_lock_order_gives_way_to_the_writer(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The writer holds CAROL's balance (an account placing an order) and, matching, comes to
    ALICE's (a maker). A settlement void of a fill between ALICE and CAROL locks the fill's
    balances in order and holds ALICE's while it waits for BOB's, which a third transaction
    holds; when that one commits, the void and the writer wait for each other. PostgreSQL ends
    whichever waited a second first: the writer, whose whole cycle would fail. The void asks for
    several rows at once, so it waits for none of them: it gives way at once, writes nothing and
    raises ``BalancesBusy``; the writer goes on."""
    carol = "0x" + "c3" * 20
    async with sessionmaker() as setup, setup.begin():
        for account, reference in ((ALICE, "0xaa:1"), (BOB, "0xbb:1"), (carol, "0xcc:1")):
            await repository.credit_deposit(setup, account, BPC, 100, reference=reference)
    async with sessionmaker() as writer, sessionmaker() as third:
        if writer.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite runs one writing transaction at a time (BEGIN IMMEDIATE)")
        async with writer.begin(), third.begin():
            assert await writer.scalar(text("SHOW deadlock_timeout")) == "1s"
            connection = await writer.connection()
            await connection.exec_driver_sql("SELECT 1")  # BEGIN sent: the raw statements join it
            driver = (await connection.get_raw_connection()).driver_connection
            cycle = bulk.Raw(driver, writer.get_bind().dialect)
            await repository.load_balances(cycle, [(carol, BPC)], yielding=False)
            await repository.load_balances(third, [(BOB, BPC)], yielding=False)

            async def void() -> None:
                postings = [ledger.Posting(ALICE, BPC, -3), ledger.Posting(BOB, BPC, 1)]
                postings.append(ledger.Posting(carol, BPC, 2))
                async with sessionmaker() as settler, settler.begin():
                    await repository.apply_postings(settler, postings, cause="fill.void", reference="t:1")

            voiding = asyncio.create_task(void())
            await asyncio.sleep(0.1)  # the void holds ALICE's row and waits for BOB's
            matching = asyncio.create_task(repository.load_balances(cycle, [(ALICE, BPC)], yielding=False))
            await asyncio.sleep(0.7)  # the void waits for BOB's row behind the third transaction
            await third.commit()  # BOB's row is free: were the void still waiting, a deadlock now
            assert await asyncio.wait_for(matching, timeout=5) == {(ALICE, BPC): Balance(100, 0)}
            with pytest.raises(repository.BalancesBusy):
                await voiding
    async with sessionmaker() as check, check.begin():
        for account in (ALICE, BOB, carol):
            assert await repository.balances_of(check, account) == {BPC: Balance(total=100, reserved=0)}
        assert (
            await check.scalar(
                select(func.count()).select_from(LedgerEntry).where(LedgerEntry.reference == "t:1")
            )
            == 0
        )


async def test_once_a_transaction_holds_a_balance_it_waits_for_no_other(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Its first single row a transaction waits for (it holds nothing the writer could wait for);
    a later one it does not: ``BalancesBusy`` at once, and its savepoint can be rolled back."""
    async with sessionmaker() as setup, setup.begin():
        for account, reference in ((ALICE, "0xaa:1"), (BOB, "0xbb:1")):
            await repository.credit_deposit(setup, account, BPC, 100, reference=reference)
    async with sessionmaker() as holder, sessionmaker() as other:
        if holder.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite runs one writing transaction at a time (BEGIN IMMEDIATE)")
        async with holder.begin():
            await repository.load_balances(holder, [(BOB, BPC)], yielding=False)  # as the writer
            async with other.begin():
                assert await repository.load_balances(other, [(ALICE, BPC)]) == {
                    (ALICE, BPC): Balance(100, 0)
                }
                started = asyncio.get_running_loop().time()
                with pytest.raises(repository.BalancesBusy):
                    async with other.begin_nested():
                        await asyncio.wait_for(repository.load_balances(other, [(BOB, BPC)]), timeout=5)
                assert asyncio.get_running_loop().time() - started < 0.5  # did not wait
                # The transaction goes on; its lock wait is what it was.
                assert await other.scalar(text("SHOW lock_timeout")) == "0"
        async with other.begin():  # a new transaction: its first row is waited for again
            assert await repository.load_balances(other, [(BOB, BPC)]) == {(BOB, BPC): Balance(100, 0)}


async def test_a_first_read_that_begins_its_transaction_waits_for_its_row(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A session with no transaction yet (its read begins one) holds no balance: it waits."""
    async with sessionmaker() as setup, setup.begin():
        await repository.credit_deposit(setup, BOB, BPC, 100, reference="0xbb:1")
    async with sessionmaker() as holder, sessionmaker() as other:
        if holder.get_bind().dialect.name != "postgresql":
            pytest.skip("SQLite runs one writing transaction at a time (BEGIN IMMEDIATE)")
        async with holder.begin():
            await repository.load_balances(holder, [(BOB, BPC)], yielding=False)
            waiting = asyncio.create_task(repository.load_balances(other, [(BOB, BPC)]))
            await asyncio.sleep(0.3)
            assert not waiting.done()
        assert await asyncio.wait_for(waiting, timeout=5) == {(BOB, BPC): Balance(100, 0)}
        await other.rollback()
