"""Reorganisations simulated on a Hardhat node (``evm_snapshot`` / ``evm_revert``): no phantom credit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.settings import Settings
from exchange.trading import ledger, repository
from exchange.trading.settlement_models import ChainEvent, EventState
from exchange.trading.settlement_service import build_settlement
from tests.chain.nodes import ROOT
from tests.settlement.conftest import MEMBERS, USD, VaultNet
from tests.settlement.flows import assert_audit_clean

pytestmark = [pytest.mark.hardhat]

AMOUNT = 500 * USD


def signed_deposit(net: VaultNet, member: LocalAccount, amount: int) -> bytes:
    """A deposit of the quote token, signed by the member: the same bytes can be sent again after a reorg."""
    tx = net.pool.vault.contract.functions.deposit(net.quote_token, amount).build_transaction(
        {"from": member.address, "nonce": net.w3.eth.get_transaction_count(member.address, "pending")}
    )
    return bytes(member.sign_transaction(dict(tx)).raw_transaction)  # type: ignore[arg-type]


async def quote_total(sessionmaker: async_sessionmaker[AsyncSession], net: VaultNet, account: str) -> int:
    async with sessionmaker() as session:
        balances = await repository.balances_of(session, account)
    return balances[net.quote_token].total


async def deposits_of(sessionmaker: async_sessionmaker[AsyncSession], tx_hash: str) -> list[str]:
    async with sessionmaker() as session:
        rows = (await session.scalars(select(ChainEvent).where(ChainEvent.tx_hash == tx_hash))).all()
    return sorted(row.state for row in rows)


def mine(net: VaultNet, blocks: int) -> None:
    for _ in range(blocks):
        net.rpc("evm_mine")


async def test_a_credited_deposit_whose_block_leaves_is_taken_back_then_credited_once_when_it_returns(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = build_settlement(net.runtime, chain_settings, sessionmaker)
    await parts.indexer.catch_up()
    member = MEMBERS[0]
    before = await quote_total(sessionmaker, net, member.address)
    fork = net.rpc("evm_snapshot")
    raw = signed_deposit(net, member, AMOUNT)
    tx_hash = "0x" + bytes(net.w3.eth.send_raw_transaction(raw)).hex()
    assert (await parts.indexer.catch_up()).rolled_back_to is None
    assert await quote_total(sessionmaker, net, member.address) == before + AMOUNT  # confirmations = 0

    net.rpc("evm_revert", fork)
    mine(net, 3)  # the other branch grows past the deposit's height
    position = await parts.indexer.catch_up()
    assert position.rolled_back_to is not None
    assert await quote_total(sessionmaker, net, member.address) == before
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.REVERSED]
    await assert_audit_clean(parts)

    net.w3.eth.send_raw_transaction(raw)  # the same transaction, in a block of the new branch
    await parts.indexer.catch_up()
    assert await quote_total(sessionmaker, net, member.address) == before + AMOUNT
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.CREDITED, EventState.REVERSED]
    await assert_audit_clean(parts)


async def test_with_confirmations_an_orphaned_deposit_is_never_credited(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # Short log ranges too: the scan walks the chain in many eth_getLogs calls.
    settings = chain_settings.model_copy(
        update={"vault_indexer_confirmations": 3, "vault_indexer_max_blocks": 4}
    )
    parts = build_settlement(net.runtime, settings, sessionmaker)
    mine(net, 3)
    await parts.indexer.catch_up()
    member = MEMBERS[1]
    before = await quote_total(sessionmaker, net, member.address)
    fork = net.rpc("evm_snapshot")
    tx_hash = "0x" + bytes(net.w3.eth.send_raw_transaction(signed_deposit(net, member, AMOUNT))).hex()
    mine(net, 1)
    await parts.indexer.catch_up()
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.SEEN]  # two deep: not yet
    assert await quote_total(sessionmaker, net, member.address) == before

    net.rpc("evm_revert", fork)
    mine(net, 6)
    assert (await parts.indexer.catch_up()).rolled_back_to is not None
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.ORPHANED]
    assert await quote_total(sessionmaker, net, member.address) == before
    await assert_audit_clean(parts)


async def test_a_deposit_spent_before_its_block_left_is_stranded_and_the_audit_command_reports_it(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    parts = build_settlement(net.runtime, chain_settings, sessionmaker)
    await parts.indexer.catch_up()
    member = MEMBERS[2]
    fork = net.rpc("evm_snapshot")
    tx_hash = "0x" + bytes(net.w3.eth.send_raw_transaction(signed_deposit(net, member, AMOUNT))).hex()
    await parts.indexer.catch_up()
    total = await quote_total(sessionmaker, net, member.address)
    async with sessionmaker() as session, session.begin():  # the member reserves everything for orders
        await repository.apply_postings(
            session, ledger.reserve(member.address, net.quote_token, total), cause="test", reference="all-in"
        )

    net.rpc("evm_revert", fork)
    mine(net, 2)
    await parts.indexer.catch_up()
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.STRANDED]
    report = await parts.audit()
    assert [(d.account, d.token, d.delta, d.what) for d in report.differences] == [
        (member.address, net.quote_token, AMOUNT, "balance"),
        ("vault:holding", net.quote_token, AMOUNT, "holding vs ledger"),
    ]

    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CHAIN_RPC_URL": net.url,
        "EXCHANGE_DEV_ACCOUNTS": "true",
        "EXCHANGE_DEPLOYMENT_MANIFEST": str(net.manifest),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "exchange.cli", "audit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert member.address in result.stdout
    assert "2 difference(s)" in result.stdout
