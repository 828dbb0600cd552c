"""Reorganisations simulated on a Hardhat node (``evm_snapshot`` / ``evm_revert``): no phantom credit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.db.models import ChainAnchor
from exchange.settings import Settings
from exchange.trading import ledger, repository
from exchange.trading.ledger import Balance
from exchange.trading.models import LedgerEntry, TradingWithdrawal, WithdrawalStatus
from exchange.trading.settlement_models import ChainEvent, EventState
from exchange.trading.settlement_service import build_settlement
from tests.chain.nodes import ROOT, advance_time
from tests.settlement.conftest import MEMBERS, USD, VaultNet
from tests.settlement.flows import assert_audit_clean, trading

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
    net.mine(3)  # the other branch grows past the deposit's height
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


@pytest.mark.parametrize("confirmations", [0, 2])
async def test_a_reorganisation_after_the_fork_check_is_found_before_the_scan_goes_on(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    confirmations: int,
) -> None:
    """The chain reorganises between a pass's look for a fork and its scan: the scan must not
    go on from the new branch while the old branch's events stay recorded (the same deposit,
    mined again, was credited twice, and no later pass saw a reorganisation)."""
    settings = chain_settings.model_copy(update={"vault_indexer_confirmations": confirmations})
    parts = build_settlement(net.runtime, settings, sessionmaker)
    indexer = parts.indexer
    await indexer.catch_up()
    member = MEMBERS[0]
    before = await quote_total(sessionmaker, net, member.address)
    fork = net.rpc("evm_snapshot")
    raw = signed_deposit(net, member, AMOUNT)
    tx_hash = "0x" + bytes(net.w3.eth.send_raw_transaction(raw)).hex()
    await indexer.catch_up()  # the deposit's block is scanned (and credited at 0 confirmations)
    net.mine(2)
    find_fork = indexer._find_fork

    async def reorganised_right_after(tracked: Any, head: int) -> int | None:
        found = await find_fork(tracked, head)  # no fork yet
        net.rpc("evm_revert", fork)  # another branch: an empty block, then the same deposit
        net.mine(1)
        net.w3.eth.send_raw_transaction(raw)
        net.mine(1)
        monkeypatch.undo()
        return found

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(indexer, "_find_fork", reorganised_right_after)
    try:
        await indexer.catch_up()
    finally:
        monkeypatch.undo()
    net.mine(confirmations + 1)
    for _ in range(2):
        await indexer.catch_up()
    assert await quote_total(sessionmaker, net, member.address) == before + AMOUNT
    assert await deposits_of(sessionmaker, tx_hash) == (
        [EventState.CREDITED, EventState.REVERSED]
        if confirmations == 0
        else [EventState.CREDITED, EventState.ORPHANED]
    )
    await assert_audit_clean(parts)


async def test_with_confirmations_an_orphaned_deposit_is_never_credited(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # Short log ranges too: the scan walks the chain in many eth_getLogs calls.
    settings = chain_settings.model_copy(
        update={"vault_indexer_confirmations": 3, "vault_indexer_max_blocks": 4}
    )
    parts = build_settlement(net.runtime, settings, sessionmaker)
    net.mine(3)
    await parts.indexer.catch_up()
    member = MEMBERS[1]
    before = await quote_total(sessionmaker, net, member.address)
    fork = net.rpc("evm_snapshot")
    tx_hash = "0x" + bytes(net.w3.eth.send_raw_transaction(signed_deposit(net, member, AMOUNT))).hex()
    net.mine(1)
    await parts.indexer.catch_up()
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.SEEN]  # two deep: not yet
    assert await quote_total(sessionmaker, net, member.address) == before

    net.rpc("evm_revert", fork)
    net.mine(6)
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
    net.mine(2)
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
    assert "settlement.node_signs" not in result.stderr  # the audit sends nothing: no warning of signing


async def test_a_stranded_deposit_whose_transaction_is_mined_again_is_not_credited_twice(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = build_settlement(net.runtime, chain_settings, sessionmaker)
    await parts.indexer.catch_up()
    member = MEMBERS[2]
    before = await quote_total(sessionmaker, net, member.address)
    fork = net.rpc("evm_snapshot")
    deposit = signed_deposit(net, member, AMOUNT)
    tx_hash = "0x" + bytes(net.w3.eth.send_raw_transaction(deposit)).hex()
    await parts.indexer.catch_up()
    async with sessionmaker() as session, session.begin():  # the member reserves everything for orders
        await repository.apply_postings(
            session,
            ledger.reserve(member.address, net.quote_token, before + AMOUNT),
            cause="test",
            reference="all-in",
        )
    net.rpc("evm_revert", fork)
    net.mine(2)
    await parts.indexer.catch_up()
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.STRANDED]

    net.w3.eth.send_raw_transaction(deposit)  # mined again, in a block of the new branch
    await parts.indexer.catch_up()
    assert await deposits_of(sessionmaker, tx_hash) == [EventState.CREDITED, EventState.REVERSED]
    assert await quote_total(sessionmaker, net, member.address) == before + AMOUNT  # once
    assert net.pool.vault.call("balanceOf", member.address, net.quote_token) == before + AMOUNT
    await assert_audit_clean(parts)


async def test_the_commands_refuse_a_database_of_another_chain(
    net: VaultNet, sessionmaker: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """A node reset and deployed to again at the same addresses: ``exchange settle`` and ``exchange
    audit`` refuse the database a service started on the old chain, as the service would."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CHAIN_RPC_URL": net.url,
        "EXCHANGE_DEV_ACCOUNTS": "true",
        "EXCHANGE_DEPLOYMENT_MANIFEST": str(net.manifest),
    }

    async def run(*command: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "exchange.cli", *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    # No service has named a chain yet: the database is taken as it is (and the audit finds no
    # indexer run to compare with).
    assert "error: audit impossible: the Vault indexer has not run" in (await run("audit")).stderr
    deploy_block = net.runtime.deployment.deploy_block
    async with sessionmaker() as session, session.begin():
        session.add(
            ChainAnchor(
                id=1,
                chain_id=net.runtime.deployment.chain_id,
                deploy_block=deploy_block,
                block_hash="0x" + "ab" * 32,
            )
        )
    for command in (("audit",), ("settle", "--once")):
        result = await run(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "error: this database belongs to chain" in result.stderr
        assert "0x" + "ab" * 32 in result.stderr


async def withdrawal_states(sessionmaker: async_sessionmaker[AsyncSession], account: str) -> list[str]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(TradingWithdrawal)
            .where(TradingWithdrawal.account == account)
            .order_by(TradingWithdrawal.id)
        )
        return [row.status for row in rows]


async def balances(sessionmaker: async_sessionmaker[AsyncSession], account: str) -> dict[str, Balance]:
    async with sessionmaker() as session:
        return await repository.balances_of(session, account)


async def test_an_exit_whose_block_leaves_authorises_again_the_withdrawals_it_expired_still_valid(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = build_settlement(net.runtime, chain_settings, sessionmaker)
    await parts.indexer.catch_up()
    member, vault = MEMBERS[3], net.pool.vault
    async with trading(net, chain_settings, sessionmaker) as service, service.sessionmaker.begin() as session:
        live = await service.request_withdrawal(session, member.address, net.quote_token, AMOUNT)
        dead = await service.request_withdrawal(session, member.address, net.quote_token, AMOUNT)
    before = await balances(sessionmaker, member.address)
    assert before[net.quote_token].reserved == 2 * AMOUNT
    vault.transact("setExitDelay", 60)
    vault.transact("requestExit", sender=member.address)
    advance_time(net.w3, 61)
    await parts.indexer.catch_up()
    fork_block = net.w3.eth.get_block("latest")
    assert fork_block["timestamp"] < live.expiry_unix
    async with sessionmaker() as session, session.begin():  # reached its expiry, not yet released
        (await session.get_one(TradingWithdrawal, dead.id)).expiry_unix = fork_block["timestamp"]

    fork = net.rpc("evm_snapshot")
    vault.transact("exit", sender=member.address)
    await parts.indexer.catch_up()
    assert await withdrawal_states(sessionmaker, member.address) == [WithdrawalStatus.EXPIRED] * 2
    assert {balance.total for balance in (await balances(sessionmaker, member.address)).values()} == {0}
    await assert_audit_clean(parts)

    net.rpc("evm_revert", fork)
    net.mine(3)  # the other branch, without the exit, grows past its height
    assert (await parts.indexer.catch_up()).rolled_back_to == fork_block["number"]
    assert await withdrawal_states(sessionmaker, member.address) == [
        WithdrawalStatus.AUTHORISED,
        WithdrawalStatus.EXPIRED,  # the Vault refuses it from the fork block on
    ]
    after = await balances(sessionmaker, member.address)
    assert after[net.base_token] == before[net.base_token]
    assert after[net.quote_token] == Balance(before[net.quote_token].total, AMOUNT)
    async with sessionmaker() as session:
        causes = (
            await session.execute(
                select(LedgerEntry.cause, LedgerEntry.reference)
                .where(LedgerEntry.cause.like("withdrawal.%"))
                .order_by(LedgerEntry.id)
            )
        ).all()
    assert [(cause, reference.split("@")[0]) for cause, reference in causes] == [
        ("withdrawal.reserve", f"withdrawal:{live.id}"),
        ("withdrawal.reserve", f"withdrawal:{dead.id}"),
        ("withdrawal.exit_released", f"withdrawal:{live.id}"),
        ("withdrawal.exit_released", f"withdrawal:{dead.id}"),
        ("withdrawal.exit_released.reorg", f"withdrawal:{live.id}"),
    ]
    await assert_audit_clean(parts)

    # The Vault pays the authorisation, which consumes the reservation made again.
    signature = bytes.fromhex(live.operator_signature.removeprefix("0x"))
    vault.transact(
        "withdraw", net.quote_token, AMOUNT, live.nonce, live.expiry_unix, signature, sender=member.address
    )
    await parts.indexer.catch_up()
    assert await withdrawal_states(sessionmaker, member.address) == [
        WithdrawalStatus.COMPLETED,
        WithdrawalStatus.EXPIRED,
    ]
    assert (await balances(sessionmaker, member.address))[net.quote_token] == Balance(
        before[net.quote_token].total - AMOUNT, 0
    )
    await assert_audit_clean(parts)
