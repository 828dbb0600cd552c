"""The pool indexer: the background loop, its persisted cursor, and a chain that changed under it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
from eth_account import Account
from eth_utils.crypto import keccak
from fastapi import FastAPI
from sqlalchemy import delete, select, update

from exchange.chain.pool import Tier
from exchange.chain.runtime import ChainRuntime
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.main import build_app
from exchange.pool.models import FundDeposit, IndexerCursor, Member
from exchange.pool.service import PoolContext
from exchange.settings import Settings
from tests.pool_service.conftest import REGISTRAR, pool_settings
from tests.support.auth import bearer_headers, embedded_account


@asynccontextmanager
async def running(
    settings: Settings, chain: ChainRuntime
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = build_app(settings, chain=chain)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client, app


async def _member_when(
    client: httpx.AsyncClient, headers: dict[str, str], address: str, status: str
) -> dict[str, object]:
    for _ in range(200):
        reply = await client.get(f"/v1/admin/members/{address}", headers=headers)
        if reply.status_code == 200 and reply.json()["status"] == status:
            body: dict[str, object] = reply.json()
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{address} never became {status} in the service")


async def test_the_background_loop_follows_changes_made_directly_on_chain(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    pool, account = chain_runtime.pool, Account.create().address
    settings = pool_settings(database_url, pool_indexer_interval_s=0.1)
    async with running(settings, chain_runtime) as (client, app):
        headers = await bearer_headers(client, REGISTRAR)
        # The registrar role on chain is the operator's: someone used it without the service.
        # (Through the service's chain gateway only because the embedded EVM wants one caller at a time.)
        gateway = app.state.pool.chain
        await gateway.run(lambda: pool.admit(account, Tier.LARGE))
        member = await _member_when(client, headers, account, "active")
        assert (member["tier"], member["application_id"]) == ("large", None)
        await gateway.run(lambda: pool.suspend(account))
        await _member_when(client, headers, account, "suspended")

    # While the service is down the member is reinstated; the next start resumes from its cursor.
    pool.reinstate(account)
    depositor = embedded_account(6)
    pool.mint_bpc(depositor.address, 5)
    pool.approve_bpc(pool.fund.address, 5, sender=depositor.address)
    pool.fund.transact("deposit", pool.bpc.address, 5, keccak(b"trading-fee"), sender=depositor.address)
    async with running(pool_settings(database_url), chain_runtime) as (client, _):
        headers = await bearer_headers(client, REGISTRAR)
        member = await _member_when(client, headers, account, "active")
        assert member["last_block"] == chain_runtime.w3.eth.block_number - 3

    engine = create_engine_for_url(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            deposits = (await session.scalars(select(FundDeposit))).all()
            cursors = {row.name: row.block for row in (await session.scalars(select(IndexerCursor))).all()}
    finally:
        await engine.dispose()
    assert [(d.sender, d.amount_wei, d.source) for d in deposits] == [
        (depositor.address, 5, "0x" + keccak(b"trading-fee").hex())
    ]
    head = chain_runtime.w3.eth.block_number
    assert cursors == {"registry": head, "fund": head, "vault": head}


async def test_a_database_indexed_from_another_chain_is_rebuilt(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    pool, admitted = chain_runtime.pool, Account.create().address
    pool.admit(admitted, Tier.SMALL)
    settings = pool_settings(database_url)
    async with running(settings, chain_runtime):
        pass
    ghost = Account.create().address
    engine = create_engine_for_url(database_url)
    try:
        # As if the database had followed an earlier embedded chain with the same addresses.
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.execute(update(IndexerCursor).values(anchor_block_hash="0x" + "11" * 32))
            session.add(
                Member(
                    address=ghost,
                    tier="large",
                    status="active",
                    admitted_at=datetime.now(UTC),
                    last_block=1,
                    last_log_index=0,
                    last_tx_hash="0x" + "22" * 32,
                )
            )
        async with running(settings, chain_runtime):
            pass
        async with create_sessionmaker(engine)() as session:
            members = {row.address: row.status for row in (await session.scalars(select(Member))).all()}
            anchors = set((await session.scalars(select(IndexerCursor.anchor_block_hash))).all())
    finally:
        await engine.dispose()
    assert members == {admitted: "active"}
    deploy_block = chain_runtime.w3.eth.get_block(chain_runtime.deployment.deploy_block)
    assert anchors == {"0x" + bytes(deploy_block["hash"]).hex()}


async def test_two_passes_meeting_a_new_chain_at_once_rebuild_it_once(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    # Two first passes at once (a request catching up while the loop does, or two processes):
    # each used to find no usable cursor and insert one, and the second failed on the first's row.
    pool, admitted = chain_runtime.pool, Account.create().address
    pool.admit(admitted, Tier.SMALL)
    async with running(pool_settings(database_url), chain_runtime) as (_, app):
        context = app.state.pool
        for forget in (
            delete(IndexerCursor),
            update(IndexerCursor).values(anchor_block_hash="0x" + "11" * 32),
        ):
            async with context.sessionmaker() as session, session.begin():
                await session.execute(forget)  # no cursor yet, then cursors of another chain
            async with context.sessionmaker() as first, first.begin():
                await context.indexer.catch_up(first)
                second = asyncio.create_task(_catch_up(context))
                await asyncio.sleep(0.3)
                assert not second.done()  # waits for the first pass's cursor rows
            await second
            async with context.sessionmaker() as session:
                cursors = (await session.scalars(select(IndexerCursor))).all()
                members = (await session.scalars(select(Member))).all()
            head = chain_runtime.w3.eth.block_number
            assert sorted((row.name, row.block) for row in cursors) == [
                ("fund", head),
                ("registry", head),
                ("vault", head),
            ]
            assert [(row.address, row.status) for row in members if row.address == admitted] == [
                (admitted, "active")
            ]


async def _catch_up(context: PoolContext) -> None:
    async with context.sessionmaker() as session, session.begin():
        await context.indexer.catch_up(session)
