"""Settlement on a Hardhat node: random fills in batches, bad fills, stuck and reverted transactions."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from hexbytes import HexBytes
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.logs import EventLogErrorFlags
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse, TxReceipt, Wei

from exchange.chain.errors import ContractReverted
from exchange.chain.pool import Tier
from exchange.chain.signatures import ERC1271_GAS_CAP
from exchange.db.base import utc_now
from exchange.settings import Settings
from exchange.trading import repository, settlement
from exchange.trading import settlement_repository as store
from exchange.trading.batching import Fees, SettleArguments
from exchange.trading.eip712 import OrderSide, order_hash
from exchange.trading.models import (
    LedgerBalance,
    LedgerEntry,
    SettlementState,
    TradingFill,
    TradingOrder,
)
from exchange.trading.repository import FEES_ACCOUNT
from exchange.trading.settlement import SettlementBlocked, StepOutcome
from exchange.trading.settlement_models import (
    BatchState,
    ChainEvent,
    SettlementAttempt,
    SettlementBatch,
    SettlementFailure,
)
from exchange.trading.settlement_service import Settlement, build_settlement
from tests.settlement.conftest import MEMBERS, OPERATOR, VaultNet
from tests.settlement.flows import (
    Trader,
    assert_audit_clean,
    assert_settled_exactly_once,
    trade_randomly,
    trading,
)
from tests.support.wallets import act_as, deploy_wallet

pytestmark = [pytest.mark.hardhat]


async def _parts(
    net: VaultNet, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> Settlement:
    parts = build_settlement(net.runtime, settings, sessionmaker)
    await parts.indexer.catch_up()  # credits the members' deposits into this test's ledger
    return parts


PRICE_QUOTE = 2 * 10**6


async def buys(
    net: VaultNet,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    buyer: Trader,
    sellers: list[Trader],
    amount_base: int = 10**17,
) -> None:
    """Each seller rests a sell of `amount_base`; the buyer takes them all with one IOC buy."""
    async with trading(net, settings, sessionmaker) as service:
        market = next(iter(service.markets.values())).spec
        for seller in sellers:
            await service.place_order(
                seller.address, seller.order(market, OrderSide.SELL, PRICE_QUOTE, amount_base)
            )
        total = amount_base * len(sellers)
        await service.place_order(
            buyer.address, buyer.order(market, OrderSide.BUY, PRICE_QUOTE, total, tif="IOC")
        )


async def _settled_once_and_audited(
    net: VaultNet, sessionmaker: async_sessionmaker[AsyncSession], parts: Settlement
) -> None:
    """Every fill settled in exactly one batch and, once the indexer caught up, a clean audit."""
    await assert_settled_exactly_once(net, sessionmaker)
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


async def _fills(sessionmaker: async_sessionmaker[AsyncSession]) -> list[TradingFill]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(TradingFill).order_by(TradingFill.id))).all())


@pytest.mark.slow
async def test_random_fills_settle_in_batches_and_the_ledger_equals_the_vault(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = await _parts(net, chain_settings, sessionmaker)
    traders = [Trader(member) for member in MEMBERS]
    async with trading(net, chain_settings, sessionmaker) as service:
        began = time.perf_counter()
        count = await trade_randomly(service, traders, sessionmaker, fills=1000, seed=20261122)
        traded_s = time.perf_counter() - began
    assert count >= 1000
    began = time.perf_counter()
    await parts.settler.drain(poll_s=0.02, timeout_s=300)
    settled_s = time.perf_counter() - began
    await parts.indexer.catch_up()

    await assert_settled_exactly_once(net, sessionmaker)
    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch).order_by(SettlementBatch.id))).all()
        trades = (await session.scalars(select(ChainEvent).where(ChainEvent.name == "Trade"))).all()
    report = await parts.audit()
    assert [batch.state for batch in batches] == [BatchState.SETTLED] * math.ceil(count / 50)
    assert all(batch.fill_count <= 50 for batch in batches)
    assert len(trades) == count
    assert report.clean, "\n".join(report.lines())
    assert report.accounts == len(MEMBERS)
    gas = sum(batch.gas_used or 0 for batch in batches)
    print(
        f"\n{count} fills: traded in {traded_s:.1f} s, "
        f"settled in {len(batches)} batches in {settled_s:.1f} s "
        f"({count / settled_s:.0f} fills/s), {gas // count:,} gas per fill"
    )


# What a maker can do on chain to its own order between the match and the batch, and the reason
# the Vault gives for skipping the order's fills.
_WITHDRAWALS: dict[str, tuple[Callable[[VaultNet, Trader], object], str, str]] = {
    "cancelOrder": (
        lambda net, maker: net.pool.vault.transact(
            "cancelOrder", maker.orders[-1].as_abi_tuple(), sender=maker.address
        ),
        "ORDER_CANCELLED",
        "maker cancelled the order on chain",
    ),
    "cancelOrdersBelowNonce": (
        lambda net, maker: net.pool.vault.transact(
            "cancelOrdersBelowNonce", maker.orders[-1].nonce + 1, sender=maker.address
        ),
        "ORDER_NONCE_CANCELLED",
        "maker cancelled its orders below a nonce on chain",
    ),
    "requestExit": (
        lambda net, maker: net.pool.vault.transact("requestExit", sender=maker.address),
        "ACCOUNT_EXITING",
        "maker requested an exit from the Vault",
    ),
}


@pytest.mark.parametrize("action", list(_WITHDRAWALS))
async def test_a_fill_whose_maker_withdrew_its_order_is_skipped_and_its_batch_settles_at_once(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], action: str
) -> None:
    """Bob takes three sells; Carol withdraws hers on chain before the batch. The Vault skips that
    fill (FillSkipped) and settles the other two in the same transaction: no batch reverts, no
    simulation has to find her. Her fill fails for good and is voided (she keeps her BPC, Bob his
    quote), the feed takes the trade back, and the ledger still equals the Vault."""
    withdraw, skip_reason, why = _WITHDRAWALS[action]
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol, dave = (Trader(member) for member in MEMBERS[:4])
    async with trading(net, chain_settings, sessionmaker) as service:
        parts.settler.fill_failed = service.fill_failed  # as the service wires them
        feed = next(iter(service.markets.values())).feed
        market = next(iter(service.markets.values())).spec
        for seller in (alice, carol, dave):
            await service.place_order(
                seller.address, seller.order(market, OrderSide.SELL, PRICE_QUOTE, 10**17)
            )
        await service.place_order(
            bob.address, bob.order(market, OrderSide.BUY, PRICE_QUOTE, 3 * 10**17, tif="IOC")
        )
        withdrawn = carol.orders[-1]
        withdraw(net, carol)
        async with sessionmaker() as session:
            before = {
                (row.account, row.token): row.total
                for row in (await session.scalars(select(LedgerBalance))).all()
            }

        await parts.settler.drain(poll_s=0.02, timeout_s=60)
        voids = feed.voids
    await parts.indexer.catch_up()

    fills = await _fills(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [
        SettlementState.SETTLED,
        SettlementState.FAILED,
        SettlementState.SETTLED,
    ]
    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch))).all()
        failure = await session.get_one(SettlementFailure, fills[1].id)
        skipped_events = (
            await session.scalars(select(ChainEvent).where(ChainEvent.name == "FillSkipped"))
        ).all()
        after = {
            (row.account, row.token): row.total
            for row in (await session.scalars(select(LedgerBalance))).all()
        }
    # One transaction, mined successfully, for all three fills: nothing reverted on chain.
    assert [(batch.state, batch.fill_count, batch.error_name) for batch in batches] == [
        (BatchState.SETTLED, 3, None)
    ]
    assert {fill.batch_id for fill in fills} == {batches[0].id}
    receipt = net.w3.eth.get_transaction_receipt(HexBytes(batches[0].tx_hash or ""))
    assert receipt["status"] == 1
    carol_hash = "0x" + order_hash(net.deployment.chain_id, net.pool.vault.address, withdrawn).hex()
    assert (failure.error_name, failure.batch_id) == ("FillSkipped", batches[0].id)
    assert failure.error_args == {"orderHash": carol_hash, "skipReason": skip_reason, "reason": why}
    assert len(skipped_events) == 1
    assert voids == 1
    # The Vault recorded nothing for Carol's order; the ledger gave Carol her BPC back.
    assert net.pool.vault.call("orderState", HexBytes(carol_hash))[0] == 0
    assert (
        after[(carol.address, net.base_token)]
        == before[(carol.address, net.base_token)] + fills[1].amount_base
    )
    assert (
        after[(bob.address, net.base_token)] == before[(bob.address, net.base_token)] - fills[1].amount_base
    )
    report = await parts.audit()
    assert report.clean, "\n".join(report.lines())


async def test_a_cancellation_that_front_runs_a_batch_no_longer_reverts_it(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Carol cancels her order after the settler simulated and sent the batch, with a higher tip
    so that the block runs her cancellation first: the batch is mined all the same, her fill
    skipped and failed, Alice's settled. Before, each such cancellation cost a reverted batch."""
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol])
    net.rpc("evm_setAutomine", False)
    assert await parts.settler.step() is StepOutcome.OPENED  # simulated fine, now waiting in the pool
    vault = net.pool.vault
    cancel = vault.contract.functions.cancelOrder(carol.orders[-1].as_abi_tuple()).build_transaction(
        {"from": carol.address, "maxPriorityFeePerGas": Wei(50 * 10**9), "maxFeePerGas": Wei(100 * 10**9)}
    )
    cancelled = net.w3.eth.send_transaction(cancel)
    net.rpc("evm_mine")
    net.rpc("evm_setAutomine", True)
    assert await parts.settler.step() is StepOutcome.SETTLED

    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
        failure = (await session.scalars(select(SettlementFailure))).one()
    receipt = net.w3.eth.get_transaction_receipt(HexBytes(batch.tx_hash or ""))
    assert receipt["status"] == 1
    assert receipt["blockNumber"] == net.w3.eth.get_transaction_receipt(cancelled)["blockNumber"]
    assert (batch.state, batch.fill_count) == (BatchState.SETTLED, 2)
    fills = await _fills(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED, SettlementState.FAILED]
    assert (failure.fill_id, failure.error_name) == (fills[1].id, "FillSkipped")
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


async def test_wallets_that_burn_their_gas_cost_their_cap_and_a_batch_holds_a_bounded_number(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wallet that burns whatever gas it is given before it approves (ERC1271GasHoggingWallet)
    would take 63/64 of a batch's gas if the Vault forwarded it all. The Vault gives it its cap,
    and the settler puts at most WALLET_ORDERS_PER_BATCH wallet orders in a batch (two here), so
    such orders settle at a bounded cost and never make a batch too big for a block."""
    monkeypatch.setattr(settlement, "WALLET_ORDERS_PER_BATCH", 2)
    owner, deposit = MEMBERS[2], 10**18
    wallet = deploy_wallet(net.w3, "ERC1271GasHoggingWallet", owner.address)
    net.pool.admit(wallet.address, Tier.SMALL)
    net.pool.mint_bpc(wallet.address, deposit)
    act_as(wallet, owner.address, net.pool.bpc.contract, "approve", net.pool.vault.address, deposit)
    act_as(wallet, owner.address, net.pool.vault.contract, "deposit", net.base_token, deposit)
    parts = await _parts(net, chain_settings, sessionmaker)
    # Three sells of the wallet (accepted at intake: the service asks with the same cap) taken
    # by one buy: three fills, three wallet orders and one key's order.
    await buys(
        net, chain_settings, sessionmaker, Trader(MEMBERS[0]), [Trader(owner, wallet=wallet.address)] * 3
    )

    await parts.settler.drain(poll_s=0.02, timeout_s=60)
    await _settled_once_and_audited(net, sessionmaker, parts)
    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch).order_by(SettlementBatch.id))).all()
    assert [(batch.state, batch.fill_count) for batch in batches] == [
        (BatchState.SETTLED, 2),
        (BatchState.SETTLED, 1),
    ]
    cap = net.pool.vault.call("WALLET_CHECK_GAS")
    assert cap == ERC1271_GAS_CAP  # the Vault gives a wallet what intake gave it
    for batch in batches:
        assert batch.gas_used is not None
        assert batch.gas_used < batch.fill_count * cap + 400_000


async def test_a_void_waits_for_balances_the_market_writer_holds_then_gives_way_and_retries(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """While a transaction that does not yield (as the market writer's cycle) holds every balance
    row, a settlement step that would fail and void a fill waits a moment, writes nothing and
    says WAITING (the writer is never the one to give way); once the rows are free, the next
    steps fail the fill and void it, and the audit is clean."""
    if chain_settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite runs one writing transaction at a time: a step waits for the writer's")
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol])
    net.pool.vault.transact("cancelOrder", carol.orders[-1].as_abi_tuple(), sender=carol.address)
    async with sessionmaker() as holder, holder.begin():
        keys = [(row.account, row.token) for row in (await holder.scalars(select(LedgerBalance))).all()]
        await repository.load_balances(holder, keys, yielding=False)
        for _ in range(4):
            outcome = await asyncio.wait_for(parts.settler.step(), timeout=10)
            assert outcome is not StepOutcome.FILL_FAILED
        async with sessionmaker() as session:
            assert await session.scalar(select(SettlementFailure.fill_id)) is None
            states = (await session.scalars(select(TradingFill.settlement_state))).all()
        assert SettlementState.FAILED not in states
    await parts.settler.drain(poll_s=0.02, timeout_s=60)
    await parts.indexer.catch_up()
    fills = await _fills(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED, SettlementState.FAILED]
    report = await parts.audit()
    assert report.clean, "\n".join(report.lines())


async def test_a_batch_close_locks_every_balance_its_voids_and_sweep_move_in_one_read(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of several balances may not wait for them (the market writer's rows): the close of
    a batch with a skipped fill asks for all it will move at once, so that one moment with them
    free is enough, rather than one per void and another for the fee sweep."""
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol, dave = (Trader(member) for member in MEMBERS[:4])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol, dave])
    for seller in (carol, dave):  # two skipped fills: two voids
        net.pool.vault.transact("cancelOrder", seller.orders[-1].as_abi_tuple(), sender=seller.address)
    reads: list[set[tuple[str, str]]] = []
    load = repository.load_balances

    async def recorded(session: Any, keys: Any, **options: Any) -> Any:
        keys = list(keys)
        reads.append(set(keys))
        return await load(session, keys, **options)

    monkeypatch.setattr(repository, "load_balances", recorded)
    await parts.settler.drain(poll_s=0.02, timeout_s=60)
    tokens = (net.base_token, net.quote_token)
    sellers = {(seller.address, token) for seller in (carol, dave) for token in tokens}
    first = next(keys for keys in reads if keys & sellers)
    assert first >= sellers | {(bob.address, net.base_token), (FEES_ACCOUNT, net.quote_token)}
    fills = await _fills(sessionmaker)
    failed = SettlementState.FAILED
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED, failed, failed]


async def test_an_indexer_pass_keeps_the_blocks_before_one_whose_balances_trading_holds(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A pass credits its blocks in one transaction: once it holds a balance, it waits for no
    other. The block whose account trading holds (as the writer's cycle does) gives way, the
    blocks before it are kept, and the next pass starts at it."""
    if chain_settings.database_url.startswith("sqlite"):
        pytest.skip("SQLite runs one writing transaction at a time: the pass waits for the writer's")
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob = (member.address for member in MEMBERS[:2])
    deposit = 10**15
    for member in (alice, bob):
        net.pool.mint_bpc(member, deposit)
    net.pool.vault.transact("deposit", net.base_token, deposit, sender=alice)  # a block of its own
    net.pool.vault.transact("deposit", net.base_token, deposit, sender=bob)  # and the next

    async def base_of(account: str) -> int:
        async with sessionmaker() as session:
            return (await repository.balances_of(session, account))[net.base_token].total

    before = {account: await base_of(account) for account in (alice, bob)}
    async with sessionmaker() as holder, holder.begin():
        await repository.load_balances(holder, [(bob, net.base_token)], yielding=False)
        await asyncio.wait_for(parts.indexer.catch_up(), timeout=30)
        assert await base_of(alice) == before[alice] + deposit  # its block was kept
        assert await base_of(bob) == before[bob]
    await parts.indexer.catch_up()
    assert await base_of(bob) == before[bob] + deposit
    await assert_audit_clean(parts)


async def test_a_vault_that_refuses_the_operator_blocks_settlement_and_fails_no_fill(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol])
    # The council pauses its operator: every batch reverts, for a reason that is no fill's.
    vault, operator = net.pool.vault, parts.settler.operator.address
    vault.transact("revokeRole", vault.call("OPERATOR_ROLE"), operator)

    assert [await parts.settler.step() for _ in range(3)] == [StepOutcome.BLOCKED] * 3
    with pytest.raises(SettlementBlocked, match="AccessControlUnauthorizedAccount"):
        await parts.settler.drain(poll_s=0.02, timeout_s=60)
    assert [fill.settlement_state for fill in await _fills(sessionmaker)] == [SettlementState.PENDING] * 2
    async with sessionmaker() as session:
        assert (await session.scalars(select(SettlementFailure))).all() == []

    vault.transact("grantRole", vault.call("OPERATOR_ROLE"), operator)
    await parts.settler.drain(poll_s=0.02, timeout_s=60)
    await _settled_once_and_audited(net, sessionmaker, parts)


async def test_a_fill_that_reverts_only_after_the_fills_before_it_waits_for_them_instead_of_failing(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol])
    first, second = (fill.id for fill in await _fills(sessionmaker))
    simulate = parts.settler._simulate

    async def the_second_spends_what_the_first_left(arguments: SettleArguments) -> int:
        # As when the buyer's Vault balance, lowered on chain, pays for one of the two fills only.
        if {first, second} <= set(arguments.fill_ids):
            raise ContractReverted("VaultInsufficientBalance", {}, "Vault", "0x")
        return await simulate(arguments)

    monkeypatch.setattr(parts.settler, "_simulate", the_second_spends_what_the_first_left)
    await parts.settler.drain(poll_s=0.02, timeout_s=60)

    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch).order_by(SettlementBatch.id))).all()
    assert [(batch.state, batch.fill_count) for batch in batches] == [(BatchState.SETTLED, 1)] * 2
    await _settled_once_and_audited(net, sessionmaker, parts)


async def test_orders_signed_with_a_bare_recovery_id_settle(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Signers that give ``v`` as 0 or 1 are accepted, and their orders settle: the Vault's
    ECDSA only recovers ``v`` 27 or 28, so the order is kept in that form."""
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob = (Trader(member) for member in MEMBERS[:2])
    async with trading(net, chain_settings, sessionmaker) as service:
        market = next(iter(service.markets.values())).spec
        for trader, side, tif in ((alice, OrderSide.SELL, "GTC"), (bob, OrderSide.BUY, "IOC")):
            signed = trader.order(market, side, PRICE_QUOTE, 10**17, tif=tif)
            bare = signed.signature[:64] + bytes((signed.signature[64] - 27,))
            await service.place_order(trader.address, dataclasses.replace(signed, signature=bare))
    async with sessionmaker() as session:
        kept = (await session.scalars(select(TradingOrder.signature).order_by(TradingOrder.id))).all()
    assert len(kept) == 2
    assert all(HexBytes(signature)[64] in (27, 28) for signature in kept)

    await parts.settler.drain(poll_s=0.02, timeout_s=60)
    await parts.indexer.catch_up()
    assert [fill.settlement_state for fill in await _fills(sessionmaker)] == [SettlementState.SETTLED]
    report = await parts.audit()
    assert report.clean, "\n".join(report.lines())


async def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_a_higher_fee(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # Never stuck by the clock alone, on however loaded a machine: the test ages the attempt.
    settings = chain_settings.model_copy(update={"settlement_stuck_after_s": 3600.0})
    parts = await _parts(net, settings, sessionmaker)
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    await buys(net, settings, sessionmaker, bob, [alice])
    net.rpc("evm_setAutomine", False)
    assert await parts.settler.step() is StepOutcome.OPENED
    assert await parts.settler.step() is StepOutcome.WAITING  # in the node's pool, not stuck yet
    async with sessionmaker() as session, session.begin():
        await session.execute(update(SettlementAttempt).values(created_at=utc_now() - timedelta(hours=1)))
    assert await parts.settler.step() is StepOutcome.WAITING  # replaced
    net.rpc("evm_mine")
    net.rpc("evm_setAutomine", True)
    assert await parts.settler.step() is StepOutcome.SETTLED

    async with sessionmaker() as session:
        attempts = (await session.scalars(select(SettlementAttempt).order_by(SettlementAttempt.id))).all()
        batch = (await session.scalars(select(SettlementBatch))).one()
    assert len(attempts) == 2
    assert attempts[1].max_fee_per_gas_wei >= attempts[0].max_fee_per_gas_wei * 120 // 100
    assert batch.tx_hash == attempts[1].tx_hash
    assert net.w3.eth.get_transaction(HexBytes(attempts[1].tx_hash or ""))["nonce"] == batch.nonce
    assert [fill.tx_hash for fill in await _fills(sessionmaker)] == [attempts[1].tx_hash]
    await assert_settled_exactly_once(net, sessionmaker)


async def _reverted_by_a_suspension(net: VaultNet, parts: Settlement, culprit: Trader) -> None:
    """The settler opens a batch; the registrar suspends `culprit` before it is mined. (What a
    maker does to its own orders no longer reverts a batch: the Vault skips their fills.)"""
    registry = net.pool.registry
    registrar = net.w3.eth.accounts[1]  # not the operator, whose nonce comes after the batch's
    registry.transact("grantRole", registry.call("REGISTRAR_ROLE"), registrar)
    net.rpc("evm_setAutomine", False)
    assert await parts.settler.step() is StepOutcome.OPENED  # simulated fine, now waiting in the pool
    # The suspension pays a higher tip, so the block runs it before the batch, which then reverts.
    suspend = registry.contract.functions.suspend(culprit.address).build_transaction(
        {"from": registrar, "maxPriorityFeePerGas": Wei(50 * 10**9), "maxFeePerGas": Wei(100 * 10**9)}
    )
    net.w3.eth.send_transaction(suspend)
    net.rpc("evm_mine")
    net.rpc("evm_setAutomine", True)
    assert await parts.settler.step() is StepOutcome.RETURNED


async def test_a_batch_that_reverts_on_chain_goes_back_and_its_bad_fill_is_isolated(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol])
    await _reverted_by_a_suspension(net, parts, carol)
    await parts.settler.drain(poll_s=0.02, timeout_s=60)

    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch).order_by(SettlementBatch.id))).all()
    assert [batch.state for batch in batches] == [BatchState.REVERTED, BatchState.SETTLED]
    assert batches[0].error_name == "VaultNotActiveMember"
    assert batches[1].fill_count == 1
    fills = await _fills(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED, SettlementState.FAILED]
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


@contextlib.contextmanager
def _no_state_of_past_blocks(w3: Web3) -> Iterator[None]:
    """The node refuses a call at a block number as a geth node that keeps no state that old
    does: an error of its own, not a revert."""

    class Pruned(Web3Middleware):
        def wrap_make_request(self, make_request: Callable[..., RPCResponse]) -> Callable[..., RPCResponse]:
            def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
                if method == "eth_call" and str(params[1]).startswith("0x"):
                    raise Web3RPCError("{'code': -32000, 'message': 'missing trie node 5a1b2c (path )'}")
                return make_request(method, params)

            return middleware

    w3.middleware_onion.add(Pruned, name="pruned")
    try:
        yield
    finally:
        w3.middleware_onion.remove("pruned")


async def test_a_reverted_batch_whose_replay_the_node_refuses_is_closed_without_a_reason(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol])
    with _no_state_of_past_blocks(net.w3):
        await _reverted_by_a_suspension(net, parts, carol)  # closed, not asked again at every step
    await parts.settler.drain(poll_s=0.02, timeout_s=60)

    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch).order_by(SettlementBatch.id))).all()
    assert [(batch.state, batch.error_name) for batch in batches] == [
        (BatchState.REVERTED, "SettlementReverted"),
        (BatchState.SETTLED, None),
    ]
    fills = await _fills(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED, SettlementState.FAILED]
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


async def test_batches_reverted_by_two_different_suspensions_fail_only_the_suspended_members_fills(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    settings = chain_settings.model_copy(update={"settlement_max_reverts": 2})
    parts = await _parts(net, settings, sessionmaker)
    alice, bob, carol, dave = (Trader(member) for member in MEMBERS[:4])
    await buys(net, chain_settings, sessionmaker, bob, [alice, carol, dave])
    # Each batch is front-run by the suspension of another of its makers; the first fill is in both,
    # and then goes alone.
    await _reverted_by_a_suspension(net, parts, carol)
    assert await parts.settler.step() is StepOutcome.FILL_FAILED  # the simulation finds Carol's fill
    await _reverted_by_a_suspension(net, parts, dave)  # Alice's fill goes alone next
    await parts.settler.drain(poll_s=0.02, timeout_s=60)

    fills = await _fills(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED] + [
        SettlementState.FAILED
    ] * 2
    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch).order_by(SettlementBatch.id))).all()
        failures = (
            await session.scalars(select(SettlementFailure).order_by(SettlementFailure.fill_id))
        ).all()
    assert [(batch.state, batch.fill_count) for batch in batches] == [
        (BatchState.REVERTED, 3),
        (BatchState.REVERTED, 2),
        (BatchState.SETTLED, 1),
    ]
    assert [failure.fill_id for failure in failures] == [fill.id for fill in fills[1:]]
    assert {failure.error_name for failure in failures} == {"VaultNotActiveMember"}
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


async def _batch_nonce_taken(
    net: VaultNet, parts: Settlement, sessionmaker: async_sessionmaker[AsyncSession]
) -> tuple[bytes, object]:
    """The settler opens a batch; another transaction of the operator takes its nonce and is mined
    in one block. The batch's own signed transaction (a reorganisation may bring it back), and a
    snapshot of the chain from before both."""
    fork = net.rpc("evm_snapshot")
    net.rpc("evm_setAutomine", False)
    assert await parts.settler.step() is StepOutcome.OPENED
    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
        attempt = (await session.scalars(select(SettlementAttempt))).one()
    operator = parts.settler.operator
    fees = Fees(attempt.max_fee_per_gas_wei, attempt.max_priority_fee_per_gas_wei)
    tx = operator.transaction(
        net.pool.vault.address, batch.calldata, nonce=batch.nonce, gas=batch.gas_limit, fees=fees
    )
    signed = operator.sign(tx)
    assert signed is not None
    assert signed.tx_hash == attempt.tx_hash
    replacement = OPERATOR.sign_transaction(
        {
            "to": OPERATOR.address,
            "value": 0,
            "nonce": batch.nonce,
            "gas": 21_000,
            "maxFeePerGas": attempt.max_fee_per_gas_wei * 3,
            "maxPriorityFeePerGas": attempt.max_fee_per_gas_wei * 2,
            "chainId": net.deployment.chain_id,
            "type": 2,
        }
    )
    net.w3.eth.send_raw_transaction(replacement.raw_transaction)  # replaces the batch in the node's pool
    net.rpc("evm_mine")
    net.rpc("evm_setAutomine", True)
    return signed.raw, fork


async def test_a_batch_whose_nonce_another_transaction_took_waits_for_the_confirmations(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    settings = chain_settings.model_copy(update={"settlement_confirmations": 3})
    parts = await _parts(net, settings, sessionmaker)
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    await buys(net, settings, sessionmaker, bob, [alice])
    batch_tx, fork = await _batch_nonce_taken(net, parts, sessionmaker)
    assert await parts.settler.step() is StepOutcome.WAITING  # one block deep: not decided yet
    # A reorganisation within the confirmations: the batch's own transaction is mined instead.
    net.rpc("evm_revert", fork)
    net.w3.eth.send_raw_transaction(batch_tx)
    net.mine(3)
    assert await parts.settler.step() is StepOutcome.SETTLED
    await _settled_once_and_audited(net, sessionmaker, parts)


async def test_a_batch_whose_nonce_another_transaction_took_is_dropped_once_that_is_deep(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    settings = chain_settings.model_copy(update={"settlement_confirmations": 3})
    parts = await _parts(net, settings, sessionmaker)
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    await buys(net, settings, sessionmaker, bob, [alice])
    await _batch_nonce_taken(net, parts, sessionmaker)
    net.mine(3)
    assert await parts.settler.step() is StepOutcome.RETURNED
    async with sessionmaker() as session:
        dropped = (await session.scalars(select(SettlementBatch))).one()
    assert dropped.state == BatchState.DROPPED
    for _ in range(20):  # the fill again, in a batch of its own, confirmed as blocks are mined
        if await parts.settler.step() is StepOutcome.IDLE:
            break
        net.mine()
    await _settled_once_and_audited(net, sessionmaker, parts)


async def test_an_audit_while_a_mined_batch_waits_for_its_confirmations_is_clean(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    settings = chain_settings.model_copy(update={"settlement_confirmations": 3})
    parts = await _parts(net, settings, sessionmaker)
    await buys(net, settings, sessionmaker, Trader(MEMBERS[1]), [Trader(MEMBERS[0])])
    net.rpc("evm_setAutomine", False)
    assert await parts.settler.step() is StepOutcome.OPENED
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)  # sent, not mined: the fill is not settled at the audit block
    net.rpc("evm_mine")
    net.rpc("evm_setAutomine", True)
    assert await parts.settler.step() is StepOutcome.WAITING  # mined, not yet 3 deep
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)  # mined by the audit block: settled there, its fees with the Fund
    net.mine(3)
    assert await parts.settler.step() is StepOutcome.SETTLED
    await _settled_once_and_audited(net, sessionmaker, parts)


async def test_an_audit_while_a_mined_batch_with_a_skipped_fill_waits_for_its_confirmations_is_clean(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Carol cancels her order on chain before its batch: the batch is mined, her fill skipped,
    and the batch waits for its confirmations. Her fill moved nothing on chain, so the audit at
    that block counts it unsettled (its ledger postings out, no fees sent), Alice's settled."""
    settings = chain_settings.model_copy(update={"settlement_confirmations": 3})
    parts = await _parts(net, settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, settings, sessionmaker, bob, [alice, carol])
    net.pool.vault.transact("cancelOrder", carol.orders[-1].as_abi_tuple(), sender=carol.address)
    assert await parts.settler.step() is StepOutcome.OPENED
    assert await parts.settler.step() is StepOutcome.WAITING  # mined, not yet 3 deep
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)
    net.mine(3)
    await parts.settler.drain(poll_s=0.02, timeout_s=60)
    fills = await _fills(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED, SettlementState.FAILED]
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


async def test_a_node_signed_batch_whose_hash_was_lost_is_decided_by_the_order_states(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # A Hardhat dev account that the node signs for: the hash is known only from the node's answer.
    runtime, settings = net.node_signing(chain_settings)
    parts = build_settlement(runtime, settings, sessionmaker)
    await parts.indexer.catch_up()
    assert not parts.settler.operator.signs_locally
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    await buys(net, chain_settings, sessionmaker, bob, [alice])
    assert await parts.settler.step() is StepOutcome.OPENED
    ran_in = net.w3.eth.block_number  # automine: the batch's own block
    net.mine(3)  # later blocks: the batch is found in its own, not at the head
    # As if the process died before it stored the node's answer: the batch is open, its hash unknown.
    async with sessionmaker() as session, session.begin():
        await session.execute(update(SettlementAttempt).values(tx_hash=None, sent_at=None))
        await session.execute(update(TradingFill).values(tx_hash=None))
    assert await parts.settler.step() is StepOutcome.SETTLED

    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
    assert (batch.state, batch.tx_hash, batch.block_number) == (BatchState.SETTLED, None, ran_in)
    await _settled_once_and_audited(net, sessionmaker, parts)


@pytest.mark.parametrize("all_skipped", [False, True], ids=["one-skipped", "all-skipped"])
async def test_a_node_signed_batch_whose_hash_was_lost_and_that_skipped_a_fill_is_settled_by_its_receipt(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], all_skipped: bool
) -> None:
    """The order states of a batch that skipped a fill match neither outcome, or, when it skipped
    all, match its not having run: the operator's transaction that took the batch's nonce is found
    in its block, and, being the batch's own call, its receipt says which fills were skipped. The
    batch is settled by it, not dropped and sent again."""
    runtime, settings = net.node_signing(chain_settings)
    parts = build_settlement(runtime, settings, sessionmaker)
    await parts.indexer.catch_up()
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, chain_settings, sessionmaker, bob, [carol] if all_skipped else [alice, carol])
    net.rpc("evm_setAutomine", False)
    assert await parts.settler.step() is StepOutcome.OPENED
    # Carol cancels her order with a higher tip: the block runs it first, and the batch skips her fill.
    cancel = net.pool.vault.contract.functions.cancelOrder(carol.orders[-1].as_abi_tuple()).build_transaction(
        {"from": carol.address, "maxPriorityFeePerGas": Wei(50 * 10**9), "maxFeePerGas": Wei(100 * 10**9)}
    )
    net.w3.eth.send_transaction(cancel)
    net.rpc("evm_mine")
    net.rpc("evm_setAutomine", True)
    ran_in = net.w3.eth.block_number
    async with sessionmaker() as session, session.begin():  # as if the node's answer was never stored
        await session.execute(update(SettlementAttempt).values(tx_hash=None, sent_at=None))
        await session.execute(update(TradingFill).values(tx_hash=None))
    assert await parts.settler.step() is StepOutcome.SETTLED

    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
    assert (batch.state, batch.block_number) == (BatchState.SETTLED, ran_in)
    assert batch.tx_hash is not None
    assert net.w3.eth.get_transaction_receipt(HexBytes(batch.tx_hash))["blockNumber"] == ran_in
    fills = await _fills(sessionmaker)
    expected = [] if all_skipped else [SettlementState.SETTLED]
    assert [fill.settlement_state for fill in fills] == [*expected, SettlementState.FAILED]
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


async def test_an_audit_at_a_block_before_settlement_takes_the_later_fills_out_of_the_ledger(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    settings = chain_settings.model_copy(update={"settlement_batch_size": 1})
    parts = await _parts(net, settings, sessionmaker)  # the indexer's credited block: before any trade
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    for amount in (10**17, 3 * 10**17):
        await buys(net, settings, sessionmaker, bob, [alice], amount)
    assert await parts.settler.step() is StepOutcome.OPENED
    assert (
        await parts.settler.step() is StepOutcome.SETTLED
    )  # one settled, one pending, both after the audit block
    early = await parts.audit()
    await parts.settler.drain(poll_s=0.02, timeout_s=60)
    await parts.indexer.catch_up()
    late = await parts.audit()
    assert early.clean, "\n".join(early.lines())
    assert late.clean, "\n".join(late.lines())
    assert late.block > early.block


async def test_a_batch_written_down_but_lost_by_the_node_is_sent_again_with_the_same_hash(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    parts = await _parts(net, chain_settings, sessionmaker)
    await buys(net, chain_settings, sessionmaker, Trader(MEMBERS[1]), [Trader(MEMBERS[0])])
    net.rpc("evm_setAutomine", False)
    assert await parts.settler.step() is StepOutcome.OPENED
    async with sessionmaker() as session:
        attempt = (await session.scalars(select(SettlementAttempt))).one()
    assert attempt.tx_hash is not None
    # The state a crash between writing the batch and broadcasting it leaves: no node has it.
    assert net.rpc("hardhat_dropTransaction", attempt.tx_hash) is True
    assert await parts.settler.step() is StepOutcome.WAITING  # sent again
    assert net.w3.eth.get_transaction(HexBytes(attempt.tx_hash))["blockNumber"] is None
    net.rpc("evm_mine")
    net.rpc("evm_setAutomine", True)
    assert await parts.settler.step() is StepOutcome.SETTLED
    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
        attempts = (await session.scalars(select(SettlementAttempt))).all()
    assert (batch.tx_hash, len(attempts)) == (attempt.tx_hash, 1)
    await assert_settled_exactly_once(net, sessionmaker)


async def _a_mined_batch_and_two_settlers(
    net: VaultNet, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> tuple[Settlement, Settlement]:
    """Two settlers on one database (``serve``'s and ``exchange settle``); the first's batch is mined.

    A later fill waits: its fees in ``vault:fees`` would let a second sweep of the batch through.
    """
    first, second = await _parts(net, settings, sessionmaker), await _parts(net, settings, sessionmaker)
    alice, bob, carol = (Trader(member) for member in MEMBERS[:3])
    await buys(net, settings, sessionmaker, bob, [alice, carol])
    assert await first.settler.step() is StepOutcome.OPENED  # automine: mined at once
    await buys(net, settings, sessionmaker, bob, [alice], 3 * 10**17)
    return first, second


async def _assert_closed_once(
    net: VaultNet, sessionmaker: async_sessionmaker[AsyncSession], parts: Settlement
) -> None:
    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
        sweeps = (
            await session.scalars(
                select(LedgerEntry.reference).where(
                    LedgerEntry.cause == "fees.collected", LedgerEntry.account == FEES_ACCOUNT
                )
            )
        ).all()
    assert sweeps == [f"batch:{batch.id}"]
    assert batch.state == BatchState.SETTLED
    await parts.settler.drain(poll_s=0.02, timeout_s=60)  # the later fill, in a batch of its own
    await _settled_once_and_audited(net, sessionmaker, parts)


async def test_of_two_settlers_closing_the_same_batch_one_closes_it_and_sweeps_its_fees(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = await _a_mined_batch_and_two_settlers(net, chain_settings, sessionmaker)
    close_settled = store.close_settled

    async def first_closes_meanwhile(*args: Any, **kwargs: Any) -> bool:
        # The second settler checked the batch's fate and began its closing transaction: the
        # first settler closes the batch and sweeps its fees before the second writes anything.
        monkeypatch.setattr(store, "close_settled", close_settled)
        assert await first.settler.step() is StepOutcome.SETTLED
        return await close_settled(*args, **kwargs)

    monkeypatch.setattr(store, "close_settled", first_closes_meanwhile)
    outcome = await second.settler.step()

    await _assert_closed_once(net, sessionmaker, second)
    assert outcome is StepOutcome.WAITING


async def test_a_settler_following_a_batch_another_settler_closed_since_leaves_it_alone(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = await _a_mined_batch_and_two_settlers(net, chain_settings, sessionmaker)
    async with sessionmaker() as session, session.begin():
        read_before_the_close = await store.open_batch(session, second.settler.vault.address)
    assert read_before_the_close is not None
    assert await first.settler.step() is StepOutcome.SETTLED

    async def open_batch(session: AsyncSession, vault: str) -> store.BatchRecord:
        return read_before_the_close

    monkeypatch.setattr(store, "open_batch", open_batch)
    assert await second.settler.step() is StepOutcome.WAITING  # not SettlementInconsistent
    monkeypatch.undo()
    await _assert_closed_once(net, sessionmaker, second)


async def _quote_total(sessionmaker: async_sessionmaker[AsyncSession], account: str, token: str) -> int:
    async with sessionmaker() as session:
        row = await session.get(LedgerBalance, (account, token))
    return row.total if row is not None else 0


async def test_an_exit_that_waits_for_its_fills_holds_back_its_whole_block(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A deposit earlier in the exit's block is not credited before the exit: the credited block,
    which the audit compares the Vault at, always holds whole blocks."""
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    alice_start = await _quote_total(sessionmaker, alice.address, net.quote_token)
    await buys(net, chain_settings, sessionmaker, bob, [alice])  # a fill, pending
    vault, quote = net.pool.vault, net.pool.quote
    assert quote is not None
    vault.transact("setExitDelay", 0)
    vault.transact("requestExit", sender=bob.address)
    quote.transact("mint", alice.address, 7 * 10**6)
    alice_before = await _quote_total(sessionmaker, alice.address, net.quote_token)

    fees = {"maxFeePerGas": Wei(100 * 10**9)}
    net.rpc("evm_setAutomine", False)
    try:
        deposit = vault.contract.functions.deposit(net.quote_token, 7 * 10**6).transact(
            {"from": alice.address, "maxPriorityFeePerGas": Wei(3 * 10**9), **fees}
        )
        leave = vault.contract.functions.exit().transact(
            {"from": bob.address, "maxPriorityFeePerGas": Wei(2 * 10**9), **fees}
        )
        net.rpc("evm_mine")
    finally:
        net.rpc("evm_setAutomine", True)
    receipts = [net.w3.eth.get_transaction_receipt(tx) for tx in (deposit, leave)]
    assert [receipt["status"] for receipt in receipts] == [1, 1]
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"]
    assert receipts[0]["transactionIndex"] < receipts[1]["transactionIndex"]

    position = await parts.indexer.catch_up()
    assert position.credited_block == receipts[0]["blockNumber"] - 1
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):  # every pass takes the deposit back again, and logs nothing of it
            assert (await parts.indexer.catch_up()).credited_block == position.credited_block
    assert [entry for entry in logs if entry["log_level"] != "debug"] == []
    assert await _quote_total(sessionmaker, alice.address, net.quote_token) == alice_before
    async with sessionmaker() as session:
        rows = await session.execute(
            select(ChainEvent.name, ChainEvent.state).where(
                ChainEvent.block_number == receipts[0]["blockNumber"]
            )
        )
        states = {name: state for name, state in rows}
    assert states == {"Deposited": "seen", "Exited": "seen"}
    await assert_audit_clean(parts)

    await parts.settler.drain(poll_s=0.02, timeout_s=60)  # the Vault skips the fill: failed, voided
    with structlog.testing.capture_logs() as logs:
        position = await parts.indexer.catch_up()
    assert position.credited_block >= receipts[0]["blockNumber"]
    credits = [
        (entry["event_name"], entry["reference"].split(":")[0])
        for entry in logs
        if entry["event"] == "indexer.event_credited"
    ]
    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
    assert credits == [
        ("Deposited", deposit.to_0x_hex()),
        ("Exited", leave.to_0x_hex()),
        ("FillSkipped", batch.tx_hash),  # bob is exiting: his fill was skipped, not traded
    ]
    assert await _quote_total(sessionmaker, alice.address, net.quote_token) == alice_start + 7 * 10**6
    async with sessionmaker() as session:
        assert await session.scalar(select(TradingFill.settlement_state)) == SettlementState.FAILED
    await assert_audit_clean(parts)


async def test_a_foundation_transaction_sent_while_a_batch_is_opened_takes_the_next_nonce(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = await _parts(net, chain_settings, sessionmaker)
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    await buys(net, chain_settings, sessionmaker, bob, [alice])
    assert net.pool.quote is not None
    quote = net.pool.quote
    mints: list[TxReceipt] = []
    mint = threading.Thread(target=lambda: mints.append(quote.transact("mint", alice.address, 1)))
    minted_while_opening: list[bool] = []
    write_down = store.open_new_batch

    async def open_new_batch(*args: Any, **kwargs: Any) -> Any:
        # The settler has read the operator's pending count; the operator mints meanwhile.
        mint.start()
        await asyncio.to_thread(mint.join, 1.0)
        minted_while_opening.append(not mint.is_alive())
        return await write_down(*args, **kwargs)

    monkeypatch.setattr(store, "open_new_batch", open_new_batch)
    assert await parts.settler.step() is StepOutcome.OPENED
    await asyncio.to_thread(mint.join, 60)
    assert await parts.settler.step() is StepOutcome.SETTLED

    async with sessionmaker() as session:
        batch = (await session.scalars(select(SettlementBatch))).one()
    assert net.w3.eth.get_transaction(mints[0]["transactionHash"])["nonce"] == batch.nonce + 1
    assert minted_while_opening == [False]  # the mint waited until the node had the batch
    await _settled_once_and_audited(net, sessionmaker, parts)


async def test_an_exit_that_one_token_refuses_debits_only_what_left(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The quote token refuses every transfer while the account exits (paused, say): its BPC
    leaves, the ledger debits that alone and the audit agrees; a later exit pays the quote."""
    parts = await _parts(net, chain_settings, sessionmaker)
    member, vault = MEMBERS[2], net.pool.vault
    on_chain = {
        token: int(vault.call("balanceOf", member.address, token))
        for token in (net.base_token, net.quote_token)
    }
    assert all(on_chain.values())
    vault.transact("setExitDelay", 0)
    vault.transact("requestExit", sender=member.address)
    quote_code = net.w3.eth.get_code(Web3.to_checksum_address(net.quote_token))
    net.rpc("hardhat_setCode", net.quote_token, "0xfe")  # every call to the token fails
    try:
        first = net.w3.eth.wait_for_transaction_receipt(
            vault.contract.functions.exit().transact({"from": member.address})
        )
    finally:
        net.rpc("hardhat_setCode", net.quote_token, "0x" + bytes(quote_code).hex())
    [exited] = vault.contract.events.Exited().process_receipt(first, errors=EventLogErrorFlags.Discard)
    assert (exited.args.baseAmount, exited.args.quoteAmount) == (on_chain[net.base_token], 0)
    await parts.indexer.catch_up()
    assert await _quote_total(sessionmaker, member.address, net.base_token) == 0
    assert await _quote_total(sessionmaker, member.address, net.quote_token) == on_chain[net.quote_token]
    await assert_audit_clean(parts)

    vault.transact("exit", sender=member.address)  # the token transfers again
    await parts.indexer.catch_up()
    assert await _quote_total(sessionmaker, member.address, net.quote_token) == 0
    await assert_audit_clean(parts)
