"""The ledger repository on both databases: postings persist, invariants refuse, nothing half-written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

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
