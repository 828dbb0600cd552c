"""The ledger repository on both databases: postings persist, invariants refuse, nothing half-written."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
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
