"""A royalty run whose token refuses a recipient, or the Fund, on a Hardhat node: held or pending, not stuck.

The module's chain is a Hardhat node with the pool deployed and a ``BlockingToken``
(a stablecoin with a block list) as the token a run distributes. The token blocks
one contributor of a batch of two: the batch's ``Fund.payout`` is mined all the
same, the other contributor is paid, and the Fund holds the blocked one's payout
for it (``owed``, ``totalOwed``); the run is ``paid``. The contributor claims it
with ``Fund.claim``, to another address while it is still blocked or to itself once
unblocked, and the service's background indexer marks its payout ``claimed``. At
every step the Fund's balance is what it holds for recipients plus what no run has
paid yet (the run's carry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from sqlalchemy import select, update
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt, Wei

from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import deploy_pool
from exchange.chain.errors import ContractReverted
from exchange.chain.pool import PoolChain
from exchange.chain.provider import make_web3
from exchange.chain.runtime import ChainRuntime
from exchange.db.base import utc_now
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.pool import repository
from exchange.pool.indexer import FUND_CURSOR, hex32
from exchange.pool.models import FundClaim, RoyaltyPayout, RoyaltyPayoutBatch, RoyaltyRun
from exchange.settings import Settings
from tests.chain.nodes import hardhat_node
from tests.pool_service.conftest import Foundation, pool_settings
from tests.pool_service.flows import admit_patent, new_member
from tests.pool_service.test_royalties import pay, payouts_of, run_of
from tests.support.auth import bearer_headers

RECEIVED = 3_000_000  # three equal stakes: 1,000,000 each, nothing carried
LICENCE_FEE = keccak(b"licence-fee")


@dataclass(frozen=True)
class HardhatPool:
    runtime: ChainRuntime
    token: Contract  # a BlockingToken


@pytest.fixture(scope="module")
def hardhat_pool() -> Iterator[HardhatPool]:
    with hardhat_node() as url:
        w3 = make_web3(url)
        artifacts = compile_contracts()
        blocking = artifacts["BlockingToken"]
        sent = w3.eth.contract(abi=blocking.abi, bytecode=blocking.bytecode).constructor(
            "Blocking USD", "BUSD"
        )
        address = w3.eth.wait_for_transaction_receipt(sent.transact())["contractAddress"]
        deployment = deploy_pool(w3, artifacts=artifacts)
        runtime = ChainRuntime(
            w3=w3, deployment=deployment, pool=PoolChain(w3, deployment, artifacts), embedded=False
        )
        yield HardhatPool(runtime, w3.eth.contract(address=address, abi=blocking.abi))


@pytest.fixture
def chain_runtime(hardhat_pool: HardhatPool) -> Iterator[ChainRuntime]:
    """The module's Hardhat node, with every test's transactions reverted afterwards."""
    provider = hardhat_pool.runtime.w3.provider
    snapshot = provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield hardhat_pool.runtime
    finally:
        provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Batches of two; the indexer's background loop polls often, so that it sees the claim.
    return pool_settings(database_url, pool_payout_batch_size=2, pool_indexer_interval_s=0.2)


def mined(w3: Web3, tx_hash: bytes) -> TxReceipt:
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def next_block_at(w3: Web3, moment: datetime) -> None:
    w3.provider.make_request("evm_setNextBlockTimestamp", [int(moment.timestamp())])  # type: ignore[arg-type]


def send_as(w3: Web3, account: LocalAccount, call: ContractFunction) -> TxReceipt:
    """Sign and send ``call`` with ``account``'s own key, as a contributor's wallet does."""
    transaction = call.build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
    )
    signed = account.sign_transaction(transaction)  # type: ignore[arg-type]
    return mined(w3, w3.eth.send_raw_transaction(signed.raw_transaction))


async def statement_of(foundation: Foundation, run_id: int, contributor: LocalAccount) -> dict[str, Any]:
    """The contributor's own statement, read signed in as itself."""
    reply = await foundation.client.get(
        f"/v1/royalties/runs/{run_id}/statement", headers=await bearer_headers(foundation.client, contributor)
    )
    assert reply.status_code == 200, reply.text
    (mine,) = reply.json()["statements"]
    assert mine["contributor"] == contributor.address
    statement: dict[str, Any] = mine
    return statement


def payout_of(run: dict[str, Any], contributor: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The contributor's payout in the run, and its batch."""
    return next(
        (p, batch) for batch in run["batches"] for p in batch["payouts"] if p["contributor"] == contributor
    )


async def claimed_in_the_service(foundation: Foundation, run_id: int, contributor: str) -> dict[str, Any]:
    for _ in range(300):
        run = await run_of(foundation, run_id)
        payout, _ = payout_of(run, contributor)
        if payout["status"] == "claimed":
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(f"the indexer never recorded {contributor}'s claim")


async def a_run_with_a_blocked_contributor(
    foundation: Foundation, token: Contract
) -> tuple[dict[str, Any], list[LocalAccount], LocalAccount]:
    """A run of three (:func:`a_run_of_three`) whose token blocks the first contributor of the first
    batch, which pays another one too. The run, the contributors and the blocked one."""
    run, contributors = await a_run_of_three(foundation, token)
    first_batch = run["batches"][0]["payouts"]
    blocked = next(c for c in contributors if c.address == first_batch[0]["contributor"])
    mined(foundation.chain.w3, token.functions.setBlocked(blocked.address, True).transact())
    return run, contributors, blocked


async def a_run_of_three(
    foundation: Foundation, token: Contract
) -> tuple[dict[str, Any], list[LocalAccount]]:
    """Three contributors with equal stakes and a run of ``RECEIVED`` of ``token`` for them, in two
    batches, the first of two payouts. The run and the contributors."""
    chain = foundation.chain
    w3, fund = chain.w3, chain.pool.fund
    contributors = [await new_member(foundation) for _ in range(3)]
    for index, contributor in enumerate(contributors):
        await admit_patent(
            foundation, f"US 12,700,00{index} B2", source="contributed", contributor=contributor.address
        )

    # A licence fee of 3,000,000 in the token reaches the Fund on a day of its own.
    latest = datetime.fromtimestamp(w3.eth.get_block("latest")["timestamp"], UTC)
    day: date = latest.date() + timedelta(days=1)
    next_block_at(w3, datetime.combine(day, time(12), UTC))
    payer = w3.eth.accounts[5]
    mined(w3, token.functions.mint(payer, RECEIVED).transact())
    mined(w3, token.functions.approve(fund.address, RECEIVED).transact({"from": payer}))
    fund.transact("deposit", token.address, RECEIVED, LICENCE_FEE, sender=payer)
    next_block_at(w3, datetime.combine(day + timedelta(days=1), time(0, 0, 5), UTC))
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    reply = await foundation.client.post(
        "/v1/admin/royalties/runs",
        json={
            "period_id": "H1",
            "starts_on": day.isoformat(),
            "ends_on": day.isoformat(),
            "token": token.address,
        },
        headers=foundation.council,
    )
    assert reply.status_code == 201, reply.text
    run: dict[str, Any] = reply.json()
    assert sum(payouts_of(run).values()) == RECEIVED
    assert [len(batch["payouts"]) for batch in run["batches"]] == [2, 1]
    return run, contributors


@pytest.mark.parametrize("claim", ["to another address while blocked", "to itself once unblocked"])
async def test_a_refused_recipient_is_held_the_run_completes_and_the_claim_is_indexed(
    foundation: Foundation, hardhat_pool: HardhatPool, claim: str
) -> None:
    chain, token = foundation.chain, hardhat_pool.token
    w3, fund = chain.w3, chain.pool.fund
    run, contributors, blocked = await a_run_with_a_blocked_contributor(foundation, token)
    expected = payouts_of(run)
    held_wei = expected[blocked.address]

    def balance(address: str) -> int:
        return int(token.functions.balanceOf(address).call())

    def assert_conserved(carry_wei: int) -> None:
        # What the Fund has = what it holds for recipients + what no payout has spent.
        assert balance(fund.address) == int(fund.call("totalOwed", token.address)) + carry_wei

    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid", paid
    assert [(batch["status"], batch["last_error"]) for batch in paid["batches"]] == [("paid", None)] * 2
    for contributor in contributors:
        payout, batch = payout_of(paid, contributor.address)
        assert payout["tx_hash"] == batch["tx_hash"]
        if contributor is blocked:
            assert (payout["status"], payout["claim_tx_hash"]) == ("held", None)
            assert balance(contributor.address) == 0
        else:
            assert payout["status"] == "paid"
            assert balance(contributor.address) == expected[contributor.address]
    assert int(fund.call("owed", token.address, blocked.address)) == held_wei
    assert int(fund.call("totalOwed", token.address)) == held_wei
    assert_conserved(int(paid["carry_out_wei"]))
    # The batch's transaction says so on chain: FundPayoutHeld for the blocked one.
    held_tx = payout_of(paid, blocked.address)[1]["tx_hash"]
    held_events = fund.contract.events.FundPayoutHeld().process_receipt(
        w3.eth.get_transaction_receipt(held_tx), errors=DISCARD
    )
    assert [(e["args"]["to"], e["args"]["amount"]) for e in held_events] == [(blocked.address, held_wei)]

    statement = await statement_of(foundation, run["id"], blocked)
    assert (statement["payout_status"], statement["held_wei"], statement["payout_wei"]) == (
        "held",
        str(held_wei),
        str(held_wei),
    )
    other = next(c for c in contributors if c is not blocked)
    assert (await statement_of(foundation, run["id"], other))["payout_status"] == "paid"

    head = w3.eth.block_number
    assert (await pay(foundation, run["id"]))["batches"] == paid["batches"]  # nothing is sent again
    assert w3.eth.block_number == head

    # The contributor claims: to an address of its own choosing while the token still blocks it,
    # or to itself once the token lets it receive again.
    mined(w3, w3.eth.send_transaction({"to": blocked.address, "value": Wei(10**18)}))
    if claim == "to another address while blocked":
        to = Account.create().address
    else:
        mined(w3, token.functions.setBlocked(blocked.address, False).transact())
        to = blocked.address
    receipt = fund.guarded(lambda: send_as(w3, blocked, fund.contract.functions.claim(token.address, to)))
    assert balance(to) == held_wei
    assert int(fund.call("owed", token.address, blocked.address)) == 0
    assert int(fund.call("totalOwed", token.address)) == 0
    assert_conserved(int(paid["carry_out_wei"]))
    with pytest.raises(ContractReverted) as again:
        fund.guarded(lambda: send_as(w3, blocked, fund.contract.functions.claim(token.address, to)))
    assert again.value.error_name == "FundNothingOwed"

    claimed = await claimed_in_the_service(foundation, run["id"], blocked.address)
    payout, _ = payout_of(claimed, blocked.address)
    assert (payout["claim_tx_hash"], payout["claimed_to"]) == (hex32(receipt["transactionHash"]), to)
    assert {payout_of(claimed, c.address)[0]["status"] for c in contributors if c is not blocked} == {"paid"}
    assert claimed["status"] == "paid"
    statement = await statement_of(foundation, run["id"], blocked)
    assert (statement["payout_status"], statement["held_wei"], statement["claim_tx_hash"]) == (
        "claimed",
        "0",
        hex32(receipt["transactionHash"]),
    )


async def test_a_batch_with_a_held_payout_found_on_chain_after_a_lost_receipt_is_recorded_held(
    foundation: Foundation, hardhat_pool: HardhatPool, database_url: str
) -> None:
    """Batch 0's payout was mined but its record lost (the service stopped before writing it): the
    next pay request finds it among the Fund's FundPayout and FundPayoutHeld events of its tag,
    sends nothing, and records each payout as that transaction settled it."""
    chain, token = foundation.chain, hardhat_pool.token
    w3 = chain.w3
    run, _, blocked = await a_run_with_a_blocked_contributor(foundation, token)
    paid = await pay(foundation, run["id"])
    first = paid["batches"][0]
    mined_in = w3.eth.get_transaction_receipt(first["tx_hash"])["blockNumber"]

    engine = create_engine_for_url(database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            batch_id = await session.scalar(
                select(RoyaltyPayoutBatch.id).where(
                    RoyaltyPayoutBatch.run_id == run["id"], RoyaltyPayoutBatch.batch_index == 0
                )
            )
            await session.execute(
                update(RoyaltyPayoutBatch)
                .where(RoyaltyPayoutBatch.id == batch_id)
                .values(
                    status="sending", tx_hash=None, paid_at=None, from_block=mined_in, sending_at=utc_now()
                )
            )
            await session.execute(
                update(RoyaltyPayout)
                .where(RoyaltyPayout.batch_id == batch_id)
                .values(status="pending", tx_hash=None, block_number=None, log_index=None)
            )
            await session.execute(
                update(RoyaltyRun).where(RoyaltyRun.id == run["id"]).values(status="paying", paid_at=None)
            )
    finally:
        await engine.dispose()
    lost = await run_of(foundation, run["id"])
    assert {p["status"] for p in lost["batches"][0]["payouts"]} == {"pending"}

    head = w3.eth.block_number
    again = await pay(foundation, run["id"])
    assert w3.eth.block_number == head  # found, not sent again
    assert again["status"] == "paid"
    assert again["batches"] == paid["batches"]
    payout, _ = payout_of(again, blocked.address)
    assert (payout["status"], payout["tx_hash"]) == ("held", first["tx_hash"])


async def test_a_batch_the_token_refuses_the_fund_for_stays_pending_and_is_paid_once_the_fund_is_unblocked(
    foundation: Foundation, hardhat_pool: HardhatPool
) -> None:
    """The token blocks the Fund itself (as a global pause would): the batch of two delivers nothing,
    so ``Fund.payout`` reverts ``FundNothingDelivered`` and the batch stays pending with the error,
    nobody's payout held. The batch of one cannot tell the Fund from its recipient and is held.
    Once the token lets the Fund send again, paying the run again pays the pending batch."""
    chain, token = foundation.chain, hardhat_pool.token
    w3, fund = chain.w3, chain.pool.fund
    run, _ = await a_run_of_three(foundation, token)
    mined(w3, token.functions.setBlocked(fund.address, True).transact())

    refused = await pay(foundation, run["id"])
    assert refused["status"] == "paying"
    first, second = refused["batches"]
    assert first["status"] == "pending"
    assert first["last_error"].startswith("FundNothingDelivered("), first["last_error"]
    assert {p["status"] for p in first["payouts"]} == {"pending"}
    assert second["status"] == "paid"
    assert [p["status"] for p in second["payouts"]] == ["held"]
    held_wei = int(second["payouts"][0]["amount_wei"])
    assert int(fund.call("totalOwed", token.address)) == held_wei

    mined(w3, token.functions.setBlocked(fund.address, False).transact())
    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid"
    first, second = paid["batches"]
    assert (first["status"], first["last_error"]) == ("paid", None)
    assert {p["status"] for p in first["payouts"]} == {"paid"}
    for payout in first["payouts"]:
        assert int(token.functions.balanceOf(payout["contributor"]).call()) == int(payout["amount_wei"])
    assert int(fund.call("totalOwed", token.address)) == held_wei


async def test_a_claim_indexed_while_its_payout_is_recorded_held_marks_it_claimed(
    foundation: Foundation, hardhat_pool: HardhatPool, database_url: str, database_backend: str
) -> None:
    """The pay worker records a payout held while the indexer, in a transaction still open, records
    the claim that took it. Neither sees the other's uncommitted row (READ COMMITTED), so unless the
    two are serialised the payout stays ``held`` for ever. The pay worker takes the ``fund`` cursor's
    lock first, as the indexer does: it waits for the claim's pass to commit, then sees the claim.

    The indexer's pass is played here by a transaction that locks the cursor, adds the claim and
    looks for the held payouts it took (none yet), then commits once the batch is mined."""
    if database_backend != "postgresql":
        pytest.skip("SQLite serialises writers: the two transactions never overlap")
    chain, token = foundation.chain, hardhat_pool.token
    fund = chain.pool.fund
    run, _, blocked = await a_run_with_a_blocked_contributor(foundation, token)
    claim_tx = "0x" + "c1" * 32

    engine = create_engine_for_url(database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await repository.locked_cursor(session, FUND_CURSOR)
            session.add(
                FundClaim(
                    token=token.address,
                    recipient=blocked.address,
                    paid_to=blocked.address,
                    amount_wei=payouts_of(run)[blocked.address],
                    block_number=10**9,  # after any payout of this test
                    block_time=utc_now(),
                    tx_hash=claim_tx,
                    log_index=0,
                )
            )
            await session.flush()
            assert await repository.mark_held_payouts_claimed(session, token.address, blocked.address) == 0

            paying = asyncio.create_task(pay(foundation, run["id"]))
            for _ in range(300):
                if int(fund.call("owed", token.address, blocked.address)):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the batch holding the blocked contributor's payout was never mined")
            await asyncio.sleep(1.0)  # time enough to record it, were the pay worker not waiting
            assert not paying.done(), "the pay worker recorded the payout while the claim's pass was open"
        paid = await paying
    finally:
        await engine.dispose()

    assert paid["status"] == "paid"
    payout, _ = payout_of(paid, blocked.address)
    assert (payout["status"], payout["claim_tx_hash"]) == ("claimed", claim_tx)
