"""Royalty runs of a token that takes a fee on every transfer: a run distributes what reached the Fund.

The module's chain is a pool of its own whose Vault trades BPC against such a token
(``FeeOnTransferToken``, which burns its share of each transfer): both ways money
reaches the Fund, ``Fund.deposit`` and the fees of a Vault settlement, lose 1 % on
the way, and the run must promise only what arrived, or its payout is refused for
good (``FundInsufficientFree``) and the run stays ``paying``. The Vault's
``FeesCollected`` states both what it sent (the settlement checks the fills'
fees against that) and what the Fund received (what the pool indexer records).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import deploy_pool
from exchange.chain.pool import PoolChain, Tier
from exchange.chain.provider import make_web3
from exchange.chain.runtime import ChainRuntime
from exchange.trading.settlement import receipt_trades_and_fees
from tests.pool_service.conftest import Foundation
from tests.pool_service.flows import admit_patent, new_member
from tests.pool_service.test_royalties import (
    BPC,
    DEPOSITOR,
    next_chain_day,
    pay,
    payouts_of,
    settle_a_trade,
    travel_to,
)
from tests.support.auth import embedded_account

FEE_BPS = 100  # the token burns 1 % of every transfer between accounts
MAX_UINT256 = 2**256 - 1


@pytest.fixture(scope="module")
def embedded_runtime() -> ChainRuntime:
    """An embedded chain of this module's own, its pool's quote token taking a fee on transfer."""
    artifacts = compile_contracts()
    w3 = make_web3()
    token = artifacts["FeeOnTransferToken"]
    sent = w3.eth.contract(abi=token.abi, bytecode=token.bytecode).constructor("Taxed USD", "TAX").transact()
    quote = Web3.to_checksum_address(str(w3.eth.wait_for_transaction_receipt(sent)["contractAddress"]))
    deployment = deploy_pool(w3, with_quote_token=False, quote_token=quote, artifacts=artifacts)
    return ChainRuntime(
        w3=w3, deployment=deployment, pool=PoolChain(w3, deployment, artifacts), embedded=True
    )


def taxed_token(chain: ChainRuntime) -> Contract:
    """The Vault's quote token; it takes no fee until a test sets one."""
    address = Web3.to_checksum_address(str(chain.pool.vault.call("quoteToken")))
    return chain.w3.eth.contract(address=address, abi=compile_contracts()["FeeOnTransferToken"].abi)


def mined(chain: ChainRuntime, sent: bytes) -> None:
    assert chain.w3.eth.wait_for_transaction_receipt(sent)["status"] == 1


async def create_run(foundation: Foundation, period_id: str, day: date, token: str) -> dict[str, Any]:
    """The run of ``day`` for ``token``, created the day after."""
    travel_to(foundation.chain, day + timedelta(days=1))
    reply = await foundation.client.post(
        "/v1/admin/royalties/runs",
        json={
            "period_id": period_id,
            "starts_on": day.isoformat(),
            "ends_on": day.isoformat(),
            "token": token,
        },
        headers=foundation.council,
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_a_deposit_of_a_fee_taking_token_is_distributed_as_it_arrived_and_paid_in_full(
    foundation: Foundation,
) -> None:
    chain, pool = foundation.chain, foundation.chain.pool
    taxed = taxed_token(chain)
    contributor = await new_member(foundation)
    await admit_patent(foundation, "US 12,900,001 B2", source="contributed", contributor=contributor.address)
    day, sender = next_chain_day(chain), DEPOSITOR.address
    mined(chain, taxed.functions.mint(sender, 1_000_000).transact())
    mined(chain, taxed.functions.approve(pool.fund.address, 1_000_000).transact({"from": sender}))
    mined(chain, taxed.functions.setFee(FEE_BPS).transact())

    pool.fund.transact("deposit", taxed.address, 1_000_000, keccak(b"licence-fee"), sender=sender)
    assert taxed.functions.balanceOf(pool.fund.address).call() == 990_000

    run = await create_run(foundation, "FOT1", day, taxed.address)
    assert run["received_wei"] == "990000"  # what reached the Fund, not the 1,000,000 sent
    assert payouts_of(run) == {contributor.address: 990_000}
    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid", paid
    assert taxed.functions.balanceOf(pool.fund.address).call() == 0
    # The token takes its share of the payout too: the Fund paid all it had.
    assert taxed.functions.balanceOf(contributor.address).call() == 990_000 - 9_900


async def test_trading_fees_in_a_fee_taking_quote_token_are_distributed_as_they_reached_the_fund(
    foundation: Foundation,
) -> None:
    chain, pool = foundation.chain, foundation.chain.pool
    taxed, vault = taxed_token(chain), pool.vault
    contributor = await new_member(foundation)
    await admit_patent(foundation, "US 12,900,002 B2", source="contributed", contributor=contributor.address)

    # Two members deposit while the token takes nothing, then it takes 1 % of each transfer.
    day = next_chain_day(chain)
    seller, buyer = embedded_account(7), embedded_account(8)
    for trader in (seller, buyer):
        pool.admit(trader.address, Tier.SMALL)
    pool.mint_bpc(seller.address, 10 * BPC)
    pool.approve_bpc(vault.address, MAX_UINT256, sender=seller.address)
    vault.transact("deposit", pool.bpc.address, 10 * BPC, sender=seller.address)
    mined(chain, taxed.functions.mint(buyer.address, 10_000_000).transact())
    mined(chain, taxed.functions.approve(vault.address, MAX_UINT256).transact({"from": buyer.address}))
    vault.transact("deposit", taxed.address, 10_000_000, sender=buyer.address)
    mined(chain, taxed.functions.setFee(FEE_BPS).transact())

    receipt = settle_a_trade(chain, vault, taxed.address, seller, buyer, taker_fee_bps=20)
    (collected,) = vault.contract.events.FeesCollected().process_receipt(receipt, errors=DISCARD)
    fees, received = int(collected["args"]["amount"]), int(collected["args"]["received"])
    assert (fees, received) == (15_000, 14_850)  # 10 + 20 bps of 5,000,000; 1 % of it burnt
    # The settlement checks its receipt against the fees that left the Vault, the fills' own.
    assert receipt_trades_and_fees(vault, receipt) == (1, fees)
    assert taxed.functions.balanceOf(pool.fund.address).call() == received

    run = await create_run(foundation, "FOT2", day, taxed.address)
    assert run["received_wei"] == str(received)
    assert payouts_of(run) == {contributor.address: received}
    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid", paid
    assert taxed.functions.balanceOf(pool.fund.address).call() == 0
