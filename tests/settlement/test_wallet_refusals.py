"""A contract-wallet member (ERC-1271) that stops accepting an order of its own after the match.

The wallet is asked when the order is placed and again by the Vault at settlement. Withdrawing
its approval in between is the member's act, as a cancellation on chain is: the Vault skips the
order's fills (``FillSkipped``, ``WALLET_REFUSED``) and settles the rest of the batch in the same
transaction, whether the wallet refused before the settler simulated the batch or after it was
sent. The settler fails and voids the skipped fill; the service cancels what rests of the order.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3.contract import Contract
from web3.types import Wei

from exchange.chain.pool import Tier
from exchange.settings import Settings
from exchange.trading.batching import WALLET_CALL_GAS, WALLET_FILL_GAS
from exchange.trading.eip712 import OrderSide, VaultOrder, order_hash
from exchange.trading.intake import InvalidSignature
from exchange.trading.models import CancelCause, OrderStatus, SettlementState, TradingFill, TradingOrder
from exchange.trading.settlement import StepOutcome
from exchange.trading.settlement_models import BatchState, SettlementBatch, SettlementFailure
from exchange.trading.settlement_service import Settlement, build_settlement
from tests.settlement.conftest import MEMBERS, VaultNet
from tests.settlement.flows import Trader, assert_audit_clean, trading
from tests.support.wallets import act_as, deploy_wallet

pytestmark = [pytest.mark.hardhat]

PRICE_QUOTE = 2 * 10**6
DEPOSIT_BASE = 10 * 10**18
# What the settler records for the fill of an order whose wallet refused it at settlement.
REFUSED = {"skipReason": "WALLET_REFUSED", "reason": "maker's wallet no longer approves the order"}


def approving_wallet(net: VaultNet) -> tuple[Contract, Trader, Callable[[VaultOrder, bool], None]]:
    """An ``ERC1271ApprovingWallet`` member with DEPOSIT_BASE in the Vault, its trader (its owner's
    key signs), and how the owner approves an order's digest on chain or withdraws the approval."""
    owner = MEMBERS[2]
    wallet = deploy_wallet(net.w3, "ERC1271ApprovingWallet", owner.address)
    net.pool.admit(wallet.address, Tier.SMALL)
    net.pool.mint_bpc(wallet.address, DEPOSIT_BASE)
    act_as(wallet, owner.address, net.pool.bpc.contract, "approve", net.pool.vault.address, DEPOSIT_BASE)
    act_as(wallet, owner.address, net.pool.vault.contract, "deposit", net.base_token, DEPOSIT_BASE)

    def approve(order: VaultOrder, approval: bool) -> None:
        digest = order_hash(net.deployment.chain_id, net.pool.vault.address, order)
        sent = wallet.functions.setApproval(digest, approval).transact({"from": owner.address})
        assert net.w3.eth.wait_for_transaction_receipt(sent)["status"] == 1

    return wallet, Trader(owner, wallet=wallet.address), approve


async def settlement_parts(
    net: VaultNet, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> Settlement:
    parts = build_settlement(net.runtime, settings, sessionmaker)
    await parts.indexer.catch_up()  # credits the deposits, the wallet's too, into this test's ledger
    return parts


async def fills_and_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> tuple[list[TradingFill], list[SettlementBatch], dict[int, SettlementFailure]]:
    async with sessionmaker() as session:
        fills = (await session.scalars(select(TradingFill).order_by(TradingFill.id))).all()
        batches = (await session.scalars(select(SettlementBatch).order_by(SettlementBatch.id))).all()
        failures = (await session.scalars(select(SettlementFailure))).all()
    return list(fills), list(batches), {failure.fill_id: failure for failure in failures}


@pytest.mark.parametrize("heard", [True, False], ids=["heard", "restarted"])
async def test_a_wallet_that_withdrew_its_approval_has_its_fill_skipped_and_the_batch_settles_at_once(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    heard: bool,
) -> None:
    """Bob buys from Alice and twice from the wallet; the wallet withdraws its approval of one of
    its orders after the match. One transaction, mined successfully, settles Alice's fill and the
    wallet's other one and skips the refused order's: its fill fails for good and is voided, and
    the rest of that order leaves the book, since nothing on chain would stop it matching again.
    A service that did not hear of the failed fill (stopped in between) cancels it when it starts."""
    wallet, seller, approve = approving_wallet(net)
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    parts = await settlement_parts(net, chain_settings, sessionmaker)
    async with trading(net, chain_settings, sessionmaker) as service:
        if heard:
            parts.settler.fill_failed = service.fill_failed  # as the service wires them
        feed = next(iter(service.markets.values())).feed
        market = next(iter(service.markets.values())).spec
        await service.place_order(alice.address, alice.order(market, OrderSide.SELL, PRICE_QUOTE, 10**17))
        kept = seller.order(market, OrderSide.SELL, PRICE_QUOTE, 10**17)
        refused = seller.order(market, OrderSide.SELL, PRICE_QUOTE, 3 * 10**17)
        with pytest.raises(InvalidSignature, match="ERC-1271"):  # the wallet has not approved it yet
            await service.place_order(wallet.address, kept)
        for order in seller.orders:
            approve(order, True)
        placed = [await service.place_order(wallet.address, signed) for signed in (kept, refused)]
        await service.place_order(
            bob.address, bob.order(market, OrderSide.BUY, PRICE_QUOTE, 3 * 10**17, tif="IOC")
        )
        approve(seller.orders[1], False)

        await parts.settler.drain(poll_s=0.02, timeout_s=60)
        voids = feed.voids
        await parts.indexer.catch_up()
        async with sessionmaker() as session:
            rest = await session.get_one(TradingOrder, placed[1].order.id)
    if not heard:
        assert (rest.status, rest.reserved_amount) == (OrderStatus.OPEN, 2 * 10**17)
        # The service starting again: its market's recovery finds the order.
        async with trading(net, chain_settings, sessionmaker), sessionmaker() as session:
            rest = await session.get_one(TradingOrder, placed[1].order.id)
    assert (rest.status, rest.cancel_cause) == (OrderStatus.CANCELED, CancelCause.WALLET_REFUSED)
    assert rest.reserved_amount == 0

    fills, batches, failures = await fills_and_batches(sessionmaker)
    assert [fill.settlement_state for fill in fills] == [
        SettlementState.SETTLED,
        SettlementState.SETTLED,
        SettlementState.FAILED,
    ]
    # One transaction for the three fills, mined successfully: nothing reverted on chain.
    assert [(batch.state, batch.fill_count, batch.error_name) for batch in batches] == [
        (BatchState.SETTLED, 3, None)
    ]
    assert net.w3.eth.get_transaction_receipt(HexBytes(batches[0].tx_hash or ""))["status"] == 1
    refused_hash = "0x" + order_hash(net.deployment.chain_id, net.pool.vault.address, seller.orders[1]).hex()
    assert list(failures) == [fills[2].id]
    failure = failures[fills[2].id]
    assert (failure.error_name, failure.batch_id) == ("FillSkipped", batches[0].id)
    assert failure.error_args == {"orderHash": refused_hash, **REFUSED}
    if heard:
        assert voids == 1
    assert net.pool.vault.call("orderState", HexBytes(refused_hash))[0] == 0
    assert net.pool.vault.call("balanceOf", wallet.address, net.base_token) == DEPOSIT_BASE - 10**17
    await assert_audit_clean(parts)


async def test_a_wallet_that_withdraws_its_approval_while_the_batch_is_in_flight_does_not_revert_it(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The wallet accepted its order when the settler simulated the batch (a cheap check), and
    withdraws its approval with a higher tip so that the block runs that first. The batch is mined
    all the same, the wallet's fill skipped and failed, Alice's settled: the settler's gas limit
    leaves room for the wallet's whole cap, which the Vault needs before it takes a refusal as the
    wallet's own. Before, each such withdrawal cost a reverted batch."""
    wallet, seller, approve = approving_wallet(net)
    alice, bob = Trader(MEMBERS[0]), Trader(MEMBERS[1])
    parts = await settlement_parts(net, chain_settings, sessionmaker)
    async with trading(net, chain_settings, sessionmaker) as service:
        market = next(iter(service.markets.values())).spec
        await service.place_order(alice.address, alice.order(market, OrderSide.SELL, PRICE_QUOTE, 10**17))
        signed = seller.order(market, OrderSide.SELL, PRICE_QUOTE, 10**17)
        approve(seller.orders[-1], True)
        await service.place_order(wallet.address, signed)
        await service.place_order(
            bob.address, bob.order(market, OrderSide.BUY, PRICE_QUOTE, 2 * 10**17, tif="IOC")
        )
    net.rpc("evm_setAutomine", False)
    try:
        assert await parts.settler.step() is StepOutcome.OPENED  # simulated fine, now in the pool
        digest = order_hash(net.deployment.chain_id, net.pool.vault.address, seller.orders[-1])
        withdraw = wallet.functions.setApproval(digest, False).build_transaction(
            {
                "from": seller.key.address,
                "maxPriorityFeePerGas": Wei(50 * 10**9),
                "maxFeePerGas": Wei(100 * 10**9),
            }
        )
        withdrawn = net.w3.eth.send_transaction(withdraw)
        net.rpc("evm_mine")
    finally:
        net.rpc("evm_setAutomine", True)
    assert await parts.settler.step() is StepOutcome.SETTLED

    fills, batches, failures = await fills_and_batches(sessionmaker)
    assert [(batch.state, batch.fill_count) for batch in batches] == [(BatchState.SETTLED, 2)]
    receipt = net.w3.eth.get_transaction_receipt(HexBytes(batches[0].tx_hash or ""))
    assert receipt["status"] == 1
    assert receipt["blockNumber"] == net.w3.eth.get_transaction_receipt(withdrawn)["blockNumber"]
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED, SettlementState.FAILED]
    assert list(failures) == [fills[1].id]
    assert failures[fills[1].id].error_name == "FillSkipped"
    assert failures[fills[1].id].error_args == {"orderHash": "0x" + digest.hex(), **REFUSED}
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


async def test_a_wallet_that_refused_when_simulated_and_accepts_once_mined_does_not_run_the_batch_dry(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The wallet's sell takes 40 buy orders. Its approval is withdrawn when the settler simulates
    the batch, so the estimate skips all 40 fills and leaves out their storage writes and
    transfers; the owner approves again with a higher tip, so that the block runs that first and
    the Vault settles all 40. The gas limit holds them: it reserves each fill of a wallet order
    its settlement's gas, not only the wallet's cap. Before, this batch ran out of gas."""
    wallet, seller, approve = approving_wallet(net)
    buyers = [Trader(member) for member in (MEMBERS[0], MEMBERS[1], MEMBERS[3])]
    makers = 40
    parts = await settlement_parts(net, chain_settings, sessionmaker)
    async with trading(net, chain_settings, sessionmaker) as service:
        market = next(iter(service.markets.values())).spec
        for index in range(makers):
            buyer = buyers[index % len(buyers)]
            await service.place_order(buyer.address, buyer.order(market, OrderSide.BUY, PRICE_QUOTE, 10**16))
        sell = seller.order(market, OrderSide.SELL, PRICE_QUOTE, makers * 10**16, tif="IOC")
        approve(seller.orders[-1], True)
        await service.place_order(wallet.address, sell)
    approve(seller.orders[-1], False)
    net.rpc("evm_setAutomine", False)
    try:
        assert await parts.settler.step() is StepOutcome.OPENED  # simulated with the fills skipped
        digest = order_hash(net.deployment.chain_id, net.pool.vault.address, seller.orders[-1])
        again = wallet.functions.setApproval(digest, True).build_transaction(
            {
                "from": seller.key.address,
                "maxPriorityFeePerGas": Wei(50 * 10**9),
                "maxFeePerGas": Wei(100 * 10**9),
            }
        )
        net.w3.eth.send_transaction(again)
        net.rpc("evm_mine")
    finally:
        net.rpc("evm_setAutomine", True)
    assert await parts.settler.step() is StepOutcome.SETTLED

    fills, batches, failures = await fills_and_batches(sessionmaker)
    assert [(batch.state, batch.fill_count) for batch in batches] == [(BatchState.SETTLED, makers)]
    receipt = net.w3.eth.get_transaction_receipt(HexBytes(batches[0].tx_hash or ""))
    assert receipt["status"] == 1
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED] * makers
    assert failures == {}
    assert net.pool.vault.call("orderState", digest)[0] == makers * 10**16
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)


def test_the_gas_the_settler_reserves_for_a_wallet_is_what_the_vault_requires(net: VaultNet) -> None:
    """The Vault reverts a wallet's refusal given less than ``WALLET_CALL_GAS`` (which covers an
    EIP-7702 delegate's cold access too); the settler reserves that much per wallet order."""
    assert net.pool.vault.call("WALLET_CALL_GAS") == WALLET_CALL_GAS


async def test_a_batch_whose_gas_limit_would_not_fit_a_block_is_cut_shorter_not_clipped(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """Bob's buy takes six sell orders of the wallet: each is a wallet order, reserved its
    whole cap and its fill's settling, so the batch of six asks for more than a block of 3
    million gas holds. The settler sends the longest prefix whose limit fits, then the rest, never
    a limit clipped to the block (with which a wallet refusing once it is mined would revert the
    batch, short of gas)."""
    wallet, seller, approve = approving_wallet(net)
    bob = Trader(MEMBERS[1])
    orders = 6
    parts = await settlement_parts(net, chain_settings, sessionmaker)
    async with trading(net, chain_settings, sessionmaker) as service:
        market = next(iter(service.markets.values())).spec
        for _ in range(orders):
            signed = seller.order(market, OrderSide.SELL, PRICE_QUOTE, 10**16)
            approve(seller.orders[-1], True)
            await service.place_order(wallet.address, signed)
        await service.place_order(
            bob.address, bob.order(market, OrderSide.BUY, PRICE_QUOTE, orders * 10**16, tif="IOC")
        )
    block_gas = 3_000_000
    net.rpc("evm_setBlockGasLimit", hex(block_gas))
    net.mine()
    reserve = WALLET_CALL_GAS + WALLET_FILL_GAS  # each fill here holds one wallet order
    assert orders * reserve > block_gas

    await parts.settler.drain(poll_s=0.02, timeout_s=60)

    fills, batches, failures = await fills_and_batches(sessionmaker)
    assert failures == {}
    assert [fill.settlement_state for fill in fills] == [SettlementState.SETTLED] * orders
    assert [batch.state for batch in batches] == [BatchState.SETTLED] * len(batches)
    assert sum(batch.fill_count for batch in batches) == orders
    assert len(batches) > 1
    for batch in batches:  # each holds its whole reserve, and fits the block
        assert batch.fill_count * reserve < batch.gas_limit <= block_gas
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)
