"""A database upgraded from the indexer's own cursor (the revision before the chain indexer's):
the resolver keeps answering at that cursor's block, with the state it had, until the indexer
applies newer events; its first pass reads on from the block after it rather than from the
deployment block."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.db.migrate import alembic_config, upgrade_to_head
from exchange.db.session import app_engine, app_sessionmaker
from exchange.licenses import repository
from exchange.licenses.indexer import DeviceIndexer, registry_of
from exchange.licenses.models import IndexerCursor
from exchange.trading.settlement_models import ChainBlock, ChainCursor, ChainEvent, EventState
from tests.licenses_service.conftest import Service
from tests.licenses_service.test_device_batches import devices, registered_batch

REVISION = "f78410e6b261"  # the licence cursor follows the chain indexer
DEVICES = devices(3, "UPG")


async def answers(service: Service) -> dict[str, Any]:
    reply = await service.client.post("/v1/devices/query", json={"devices": DEVICES, "proofs": False})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def statuses(answered: dict[str, Any]) -> list[str]:
    return [answer["status"] for answer in answered["devices"]]


async def migrate(database_url: str, *, to_previous: bool) -> None:
    """Down to the revision before :data:`REVISION`, or up to the head (in a thread: Alembic runs a loop)."""
    config = alembic_config(database_url)
    if to_previous:
        previous = ScriptDirectory.from_config(config).get_revision(REVISION).down_revision
        assert isinstance(previous, str)
        await asyncio.to_thread(command.downgrade, config, previous)
    else:
        await asyncio.to_thread(upgrade_to_head, database_url)


async def recorded_events(sessionmaker: async_sessionmaker[AsyncSession], cursor_id: int) -> list[Any]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(ChainEvent.name, ChainEvent.block_number, ChainEvent.state)
            .where(ChainEvent.cursor_id == cursor_id)
            .order_by(ChainEvent.block_number, ChainEvent.log_index)
        )
        return [tuple(row) for row in rows]


@pytest.mark.parametrize("cursor_before", ["none", "same block"])
async def test_the_upgrade_keeps_the_answered_block_and_the_first_pass_resumes_after_it(
    licensing: Service, database_url: str, cursor_before: str
) -> None:
    """`cursor_before`: "none", a database the earlier indexer alone had indexed (no chain cursor
    of the registry); "same block", a database downgraded after the chain indexer had run and
    upgraded again (its chain cursor is at the block the downgrade kept)."""
    sessionmaker = app_sessionmaker(licensing.app)
    registry = registry_of(licensing.runtime)
    batch, _ = await registered_batch(licensing, DEVICES)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [1])
    block = await licensing.catch_up()
    before = await answers(licensing)
    assert (before["block"], statuses(before)) == (block, ["licensed", "revoked", "licensed"])

    await migrate(database_url, to_previous=True)  # licence_indexer_cursors holds the block again
    if cursor_before == "none":
        async with sessionmaker() as session, session.begin():
            cursor = select(ChainCursor.id).where(ChainCursor.contract == registry.address)
            await session.execute(delete(ChainEvent).where(ChainEvent.cursor_id.in_(cursor)))
            await session.execute(delete(ChainBlock).where(ChainBlock.cursor_id.in_(cursor)))
            await session.execute(delete(ChainCursor).where(ChainCursor.id.in_(cursor)))
    await migrate(database_url, to_previous=False)

    # Before the first pass: the same block and statuses, and a resolver-only process finds the registry.
    async with sessionmaker() as session:
        link = await session.get_one(IndexerCursor, (registry.chain_id, registry.address))
        assert (link.cursor_id, link.resume_block) == (None, block)
    assert await answers(licensing) == before
    async with app_engine(licensing.app).connect() as connection:
        assert await repository.latest_indexed_registry(connection) == registry

    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [2])
    head = licensing.w3.eth.block_number
    # A first pass that links the cursor and records the new event, not deep enough to apply it.
    waiting = DeviceIndexer(licensing.runtime, sessionmaker, confirmations=head - block)
    assert await waiting.catch_up() == block
    assert await answers(licensing) == before
    indexer = DeviceIndexer(licensing.runtime, sessionmaker)  # a process started after the upgrade
    position = await indexer.position()
    assert (position.scanned_block, position.credited_block) == (head, head)
    after = await answers(licensing)
    assert (after["block"], statuses(after)) == (head, ["licensed", "revoked", "revoked"])

    cursor_id = await indexer.chain.cursor_id()
    async with sessionmaker() as session:
        link = await session.get_one(IndexerCursor, (registry.chain_id, registry.address))
        assert (link.cursor_id, link.resume_block) == (cursor_id, None)
        blocks = select(ChainBlock.number).where(ChainBlock.cursor_id == cursor_id)
        tracked = (await session.scalars(blocks)).all()
    events = await recorded_events(sessionmaker, cursor_id)
    credited = EventState.CREDITED.value
    if cursor_before == "none":
        # Read from the block after the carried-over one: nothing of the registry's history again.
        assert events == [("DeviceRevoked", head, credited)]
        assert min(tracked) > block
    else:
        assert [name for name, _, _ in events] == ["BatchRegistered", "DeviceRevoked", "DeviceRevoked"]
        assert [(number, state) for _, number, state in events][-1] == (head, credited)
        assert {state for _, _, state in events} == {credited}
