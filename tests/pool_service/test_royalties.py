"""Royalty runs through the HTTP API: what the Fund received, split exactly, paid once, told to contributors.

Deposits are dated by their block; to make periods pass, the tests move the
embedded chain's clock forward (``time_travel``), which the per-test EVM
snapshot undoes afterwards. The tests of concurrent creations run on PostgreSQL
only (SQLite serialises whole transactions) and call the service directly, to
hold one creation's transaction open while the other waits for its lock.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import threading
import time as time_module
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from fastapi import FastAPI
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from web3.logs import DISCARD
from web3.middleware import Web3Middleware
from web3.types import TxReceipt

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import error_decoder
from exchange.chain.errors import ChainUnavailable, ContractReverted
from exchange.chain.pool import Tier
from exchange.chain.runtime import ChainRuntime
from exchange.db.base import utc_now
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.main import build_app
from exchange.pool import royalty_service
from exchange.pool.indexer import fetch_events, hex32
from exchange.pool.models import RoyaltyPayoutBatch, RoyaltyRun
from exchange.pool.royalties import RoyaltyPeriod, batch_payout_tag
from exchange.pool.service import PoolContext
from exchange.settings import Settings
from exchange.trading.eip712 import OrderSide, VaultOrder, sign_order
from tests.pool_service.conftest import COUNCIL, Foundation, pool_settings
from tests.pool_service.flows import admit_patent, new_member
from tests.support.auth import bearer_headers, embedded_account

DEPOSITOR = embedded_account(6)
BATCH_SIZE = 2
BPC = 10**18
USD = 10**6  # the dev quote token has 6 decimals


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Small batches, so that a run of a few contributors pays in several transactions.
    return pool_settings(database_url, pool_payout_batch_size=BATCH_SIZE)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine_for_url(database_url)
    yield engine
    await engine.dispose()


def chain_day(chain: ChainRuntime) -> date:
    """The UTC date of the chain's latest block: the day new deposits are dated."""
    return datetime.fromtimestamp(chain.w3.eth.get_block("latest")["timestamp"], UTC).date()


def travel_to(chain: ChainRuntime, day: date, at: time = time(12)) -> None:
    """Date the next blocks ``day`` at ``at`` UTC (only forward)."""
    tester: Any = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    tester.time_travel(int(datetime.combine(day, at, UTC).timestamp()))


def next_chain_day(chain: ChainRuntime) -> date:
    """The day after the chain's latest block, at whose noon the next blocks are dated: what a test
    deposits from now on falls on it, whenever the test starts and however slowly it runs."""
    day = chain_day(chain) + timedelta(days=1)
    travel_to(chain, day)
    return day


def deposit(chain: ChainRuntime, amount_wei: int, source: bytes = keccak(b"trading-fee")) -> None:
    """Someone pays ``amount_wei`` BPC into the Fund with ``Fund.deposit``."""
    pool = chain.pool
    pool.mint_bpc(DEPOSITOR.address, amount_wei)
    pool.approve_bpc(pool.fund.address, amount_wei, sender=DEPOSITOR.address)
    pool.fund.transact("deposit", pool.bpc.address, amount_wei, source, sender=DEPOSITOR.address)


async def create_run(
    foundation: Foundation, period_id: str, starts_on: date, ends_on: date
) -> dict[str, Any]:
    reply = await foundation.client.post(
        "/v1/admin/royalties/runs",
        json={"period_id": period_id, "starts_on": starts_on.isoformat(), "ends_on": ends_on.isoformat()},
        headers=foundation.council,
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def pay(foundation: Foundation, run_id: int) -> dict[str, Any]:
    reply = await foundation.client.post(f"/v1/admin/royalties/runs/{run_id}/pay", headers=foundation.council)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def payouts_of(run: dict[str, Any]) -> dict[str, int]:
    return {p["contributor"]: int(p["amount_wei"]) for batch in run["batches"] for p in batch["payouts"]}


def assert_conserves(run: dict[str, Any]) -> None:
    paid = sum(payouts_of(run).values())
    assert paid == int(run["paid_wei"])
    assert paid + int(run["carry_out_wei"]) == int(run["received_wei"]) + int(run["carry_in_wei"])


async def test_a_period_is_split_paid_once_and_stated(foundation: Foundation, engine: AsyncEngine) -> None:
    chain, client = foundation.chain, foundation.client
    ada, bob, carol = [await new_member(foundation) for _ in range(3)]
    await admit_patent(foundation, "US 12,000,001 B2", source="contributed", contributor=ada.address)  # 75
    await admit_patent(
        foundation, "US 12,000,002 B2", source="contributed", contributor=ada.address, scores=(61, 60)
    )  # 60
    await admit_patent(
        foundation, "EP 3300001 B1", source="contributed", contributor=bob.address, scores=(90, 90)
    )
    await admit_patent(
        foundation, "EP 3300002 B1", source="contributed", contributor=carol.address, scores=(60, 60)
    )
    await admit_patent(foundation, "EP 3300003 B1")  # purchased by the foundation: no royalties
    day = next_chain_day(chain)

    # A licence fee (through the LicenseGate) and a plain deposit reach the Fund that day.
    pool = chain.pool
    pool.set_fee_licence_terms(1_000, 30 * 86_400)
    buyer = embedded_account(7)
    pool.mint_bpc(buyer.address, 1_000)
    pool.buy_fee_licence(sender=buyer.address)
    deposit(chain, 2_001)
    received = 3_001
    balances = {who.address: pool.bpc_balance(who.address) for who in (ada, bob, carol)}

    not_over = await client.post(
        "/v1/admin/royalties/runs",
        json={"period_id": "D1", "starts_on": day.isoformat(), "ends_on": day.isoformat()},
        headers=foundation.council,
    )
    assert not_over.status_code == 409
    assert "not over on chain" in not_over.json()["detail"]

    travel_to(chain, day + timedelta(days=1), time(0, 0, 5))
    deposit(chain, 50)  # the next day's: not this period's
    run = await create_run(foundation, "D1", day, day)
    assert (run["received_wei"], run["carry_in_wei"], run["status"]) == (str(received), "0", "computed")
    assert run["total_weight"] == 75 + 60 + 90 + 60
    expected = {
        ada.address: received * 135 // 285,
        bob.address: received * 90 // 285,
        carol.address: received * 60 // 285,
    }
    assert payouts_of(run) == expected
    assert_conserves(run)
    assert int(run["carry_out_wei"]) == received - sum(expected.values()) > 0
    assert [len(batch["payouts"]) for batch in run["batches"]] == [2, 1]

    same = await client.post(
        "/v1/admin/royalties/runs",
        json={"period_id": "D1", "starts_on": day.isoformat(), "ends_on": day.isoformat()},
        headers=foundation.council,
    )
    assert (same.status_code, same.json()["id"]) == (200, run["id"])
    moved = await client.post(
        "/v1/admin/royalties/runs",
        json={
            "period_id": "D1",
            "starts_on": (day - timedelta(days=1)).isoformat(),
            "ends_on": day.isoformat(),
        },
        headers=foundation.council,
    )
    assert moved.status_code == 409

    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid"
    assert all(batch["status"] == "paid" and batch["tx_hash"] for batch in paid["batches"])
    assert all(
        (p["status"], p["tx_hash"], p["claim_tx_hash"]) == ("paid", batch["tx_hash"], None)
        for batch in paid["batches"]
        for p in batch["payouts"]
    )
    for address, amount in expected.items():
        assert pool.bpc_balance(address) == balances[address] + amount
    head = chain.w3.eth.block_number
    repeated = await pay(foundation, run["id"])
    assert repeated["batches"] == paid["batches"]
    assert chain.w3.eth.block_number == head
    assert pool.bpc_balance(pool.fund.address) == int(run["carry_out_wei"]) + 50

    # Statements: all of them (JSON, CSV), one contributor's, and a contributor's own.
    statements = (
        await client.get(f"/v1/admin/royalties/runs/{run['id']}/statements", headers=foundation.council)
    ).json()
    assert statements["paid_wei"] == str(sum(expected.values()))
    assert statements["token"] == pool.bpc.address
    # Each contributor's tag is the one its payout carries on chain: it can find its payout.
    on_chain = {(to, amount): tag for to, amount, tag in fund_payouts(chain)}
    for statement in statements["statements"]:
        key = (statement["contributor"], int(statement["payout_wei"]))
        assert statement["payout_batch_tag"] == on_chain[key], statement
    by_contributor = {s["contributor"]: s for s in statements["statements"]}
    assert by_contributor[ada.address]["patents"] == [
        {"patent_id": "US12000001B2", "weight": 75, "counted": True},
        {"patent_id": "US12000002B2", "weight": 60, "counted": True},
    ]
    csv_reply = await client.get(
        f"/v1/admin/royalties/runs/{run['id']}/statements",
        params={"format": "csv"},
        headers=foundation.council,
    )
    assert csv_reply.headers["content-type"].startswith("text/csv")
    assert f'filename="royalties-D1-{pool.bpc.address}.csv"' in csv_reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_reply.text)))
    assert {row["contributor"]: int(row["payout_wei"]) for row in rows} == expected
    assert {row["token"] for row in rows} == {pool.bpc.address}
    assert {row["contributor"]: row["payout_batch_tag"] for row in rows} == {
        s["contributor"]: s["payout_batch_tag"] for s in statements["statements"]
    }
    one = await client.get(
        f"/v1/admin/royalties/runs/{run['id']}/statements/{bob.address}", headers=foundation.council
    )
    assert [s["contributor"] for s in one.json()["statements"]] == [bob.address]
    own = await client.get(
        f"/v1/royalties/runs/{run['id']}/statement", headers=await bearer_headers(client, carol)
    )
    assert own.json()["statements"][0]["payout_wei"] == str(expected[carol.address])
    stranger = await client.get(f"/v1/royalties/runs/{run['id']}/statement", headers=foundation.outsider)
    assert stranger.status_code == 404

    # The next period carries what was left, and the 50 deposited meanwhile.
    overlap = await client.post(
        "/v1/admin/royalties/runs",
        json={
            "period_id": "D2",
            "starts_on": day.isoformat(),
            "ends_on": (day + timedelta(days=1)).isoformat(),
        },
        headers=foundation.council,
    )
    assert overlap.status_code == 409
    travel_to(chain, day + timedelta(days=2))
    deposit(chain, 1)
    second = await create_run(foundation, "D2", day + timedelta(days=1), day + timedelta(days=1))
    assert (second["carry_in_wei"], second["received_wei"]) == (run["carry_out_wei"], "50")
    assert_conserves(second)


async def _three_contributors_and_a_deposit(foundation: Foundation, numbers: str) -> tuple[list[Any], date]:
    """Three contributors, each with an admitted patent (`numbers` formatted with 0, 1, 2), and a
    Fund deposit on the chain's day, which is over: the chain is a day later."""
    contributors = [await new_member(foundation) for _ in range(3)]
    for index, contributor in enumerate(contributors):
        await admit_patent(
            foundation, numbers.format(index), source="contributed", contributor=contributor.address
        )
    day = next_chain_day(foundation.chain)
    deposit(foundation.chain, 3_000_000)
    travel_to(foundation.chain, day + timedelta(days=1))
    return contributors, day


async def test_an_interrupted_payout_batch_is_never_paid_twice(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    chain, pool = foundation.chain, foundation.chain.pool
    contributors, day = await _three_contributors_and_a_deposit(foundation, "US 12,100,00{} B2")
    run = await create_run(foundation, "R1", day, day)
    before = {c.address: pool.bpc_balance(c.address) for c in contributors}

    # Batch 0: intent committed, never sent. Then pay, then pretend batch 1's record was lost.
    async with create_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(RoyaltyPayoutBatch)
            .where(RoyaltyPayoutBatch.run_id == run["id"], RoyaltyPayoutBatch.batch_index == 0)
            .values(status="sending", from_block=chain.w3.eth.block_number + 1, sending_at=utc_now())
        )
    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid"
    lost = paid["batches"][1]
    receipt = chain.w3.eth.get_transaction_receipt(lost["tx_hash"])
    async with create_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(RoyaltyRun).where(RoyaltyRun.id == run["id"]).values(status="paying", paid_at=None)
        )
        await session.execute(
            update(RoyaltyPayoutBatch)
            .where(RoyaltyPayoutBatch.run_id == run["id"], RoyaltyPayoutBatch.batch_index == 1)
            .values(status="sending", tx_hash=None, from_block=receipt["blockNumber"], sending_at=utc_now())
        )
    head = chain.w3.eth.block_number
    again = await pay(foundation, run["id"])
    assert again["batches"][1]["tx_hash"] == lost["tx_hash"]
    # Found on chain, its payouts are recorded from the events of the transaction that paid them.
    assert {(p["status"], p["tx_hash"]) for p in again["batches"][1]["payouts"]} == {
        ("paid", lost["tx_hash"])
    }
    assert chain.w3.eth.block_number == head
    for contributor in contributors:
        assert (
            pool.bpc_balance(contributor.address)
            == before[contributor.address] + payouts_of(run)[contributor.address]
        )


def fund_payouts(chain: ChainRuntime) -> list[tuple[str, int, str]]:
    """Every ``FundPayout`` on chain: (recipient, amount, tag)."""
    events = fetch_events(chain.pool.fund, ("FundPayout",), 0, "latest")
    return [(event.args["to"], int(event.args["amount"]), hex32(event.args["tag"])) for event in events]


async def run_of(foundation: Foundation, run_id: int) -> dict[str, Any]:
    reply = await foundation.client.get(f"/v1/admin/royalties/runs/{run_id}", headers=foundation.council)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


@pytest.mark.parametrize("resend_revert", ["decoded", "undecoded"])
async def test_a_stuck_payout_mined_before_its_resend_pays_every_recipient_once(
    foundation: Foundation, monkeypatch: pytest.MonkeyPatch, resend_revert: str
) -> None:
    """Batch 0's transaction outlives its receipt wait (in a mempool); the batch is sent again and the
    stuck transaction is mined just before: the resend reverts, the batch is recorded with the stuck one.

    ``undecoded``: the resend reverts without a reason (mined in the same block as the first, its replay
    one block earlier does not revert), so only the Fund's ``paidTags`` tells it was paid.
    """
    chain, pool = foundation.chain, foundation.chain.pool
    contributors, day = await _three_contributors_and_a_deposit(foundation, "US 12,300,00{} B2")
    deposit(chain, 3_000_000)  # the next period's: the Fund could pay the batch twice
    run = await create_run(foundation, "R1", day, day)
    expected = payouts_of(run)
    before = {c.address: pool.bpc_balance(c.address) for c in contributors}

    fund = pool.fund
    send = fund.transact
    stuck: list[tuple[Any, ...]] = []
    mined: list[str] = []

    def transact(function: str, *args: Any, **kwargs: Any) -> Any:
        if function != "payout":
            return send(function, *args, **kwargs)
        if not stuck:
            stuck.append(args)  # the node has it; its receipt does not come in time
            raise ChainUnavailable("Fund: no receipt in time")
        if not mined:
            mined.append(hex32(send("payout", *stuck[0])["transactionHash"]))  # mined after all
            if resend_revert == "undecoded":
                raise ContractReverted("Unknown", {}, "Fund", "0x")
        return send(function, *args, **kwargs)

    monkeypatch.setattr(fund, "transact", transact)
    lost = await foundation.client.post(
        f"/v1/admin/royalties/runs/{run['id']}/pay", headers=foundation.council
    )
    assert lost.status_code == 503, lost.text
    assert [batch["status"] for batch in (await run_of(foundation, run["id"]))["batches"]] == [
        "sending",
        "pending",
    ]

    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid"
    assert [batch["status"] for batch in paid["batches"]] == ["paid", "paid"]
    for contributor in contributors:
        assert (
            pool.bpc_balance(contributor.address)
            == before[contributor.address] + expected[contributor.address]
        )
    assert paid["batches"][0]["tx_hash"] == mined[0]
    # One FundPayout per recipient, under its batch's own tag.
    tags = [batch_payout_tag(run["payout_tag"], run["token"], index) for index in range(2)]
    assert sorted(fund_payouts(chain)) == sorted(
        (p["contributor"], int(p["amount_wei"]), tags[batch["batch_index"]])
        for batch in paid["batches"]
        for p in batch["payouts"]
    )
    assert all(fund.call("paidTags", tag) for tag in tags)
    assert [batch["tag"] for batch in paid["batches"]] == [
        tags[batch["batch_index"]] for batch in paid["batches"]
    ]


def batch_totals(run: dict[str, Any]) -> list[int]:
    return [sum(int(p["amount_wei"]) for p in batch["payouts"]) for batch in run["batches"]]


def with_batch_tags(run: dict[str, Any], indexes: tuple[int, ...]) -> list[tuple[str, int, str]]:
    """The ``FundPayout`` (recipient, amount, tag) of each payout in the run's batches ``indexes``."""
    return [
        (p["contributor"], int(p["amount_wei"]), batch_payout_tag(run["payout_tag"], run["token"], index))
        for index in indexes
        for p in run["batches"][index]["payouts"]
    ]


async def test_a_refused_batch_holds_up_no_other_and_is_paid_once_it_can_be(foundation: Foundation) -> None:
    """The Fund holds too little for batch 0 (another payout drew on it after the run was computed):
    batch 0 is refused and left pending with the revert, batch 1 is paid all the same, and once the
    Fund holds enough again the next pay request pays batch 0, once."""
    chain, pool = foundation.chain, foundation.chain.pool
    contributors, day = await _three_contributors_and_a_deposit(foundation, "US 12,500,00{} B2")
    run = await create_run(foundation, "R1", day, day)
    expected = payouts_of(run)
    first_total, second_total = batch_totals(run)
    before = {c.address: pool.bpc_balance(c.address) for c in contributors}
    stranger = Account.create()
    drawn = pool.bpc_balance(pool.fund.address) - (first_total - 1)
    assert first_total - 1 >= second_total  # what is left pays batch 1, not batch 0
    pool.fund.transact(
        "payout", pool.bpc.address, [stranger.address], [drawn], "0x" + keccak(b"another payout").hex()
    )

    refused = await pay(foundation, run["id"])
    assert refused["status"] == "paying"
    first, second = refused["batches"]
    assert (first["status"], first["tx_hash"]) == ("pending", None)
    assert first["last_error"].startswith("FundInsufficientFree("), first["last_error"]
    assert (second["status"], second["last_error"]) == ("paid", None)
    assert second["tx_hash"]
    assert await run_of(foundation, run["id"]) == refused
    in_second = {p["contributor"] for p in second["payouts"]}
    for contributor in contributors:
        paid_now = expected[contributor.address] if contributor.address in in_second else 0
        assert pool.bpc_balance(contributor.address) == before[contributor.address] + paid_now

    deposit(chain, first_total)  # the Fund can pay batch 0 again
    paid = await pay(foundation, run["id"])
    assert paid["status"] == "paid"
    assert [(b["status"], b["last_error"]) for b in paid["batches"]] == [("paid", None), ("paid", None)]
    assert paid["batches"][1]["tx_hash"] == second["tx_hash"]
    for contributor in contributors:
        assert (
            pool.bpc_balance(contributor.address)
            == before[contributor.address] + expected[contributor.address]
        )
    assert sorted(p for p in fund_payouts(chain) if p[0] != stranger.address) == sorted(
        with_batch_tags(run, (0, 1))
    )
    head = chain.w3.eth.block_number
    assert await pay(foundation, run["id"]) == paid
    assert chain.w3.eth.block_number == head


async def test_a_batch_whose_tag_paid_something_else_is_refused_and_left_pending(
    foundation: Foundation,
) -> None:
    """The Fund already paid batch 0's tag to other recipients (say, a database restored from before a
    run was computed again): batch 0 cannot be paid under its tag and is left pending with the
    refusal, every time it is asked for; batch 1 is paid all the same."""
    chain, pool = foundation.chain, foundation.chain.pool
    contributors, day = await _three_contributors_and_a_deposit(foundation, "US 12,400,00{} B2")
    stranger = Account.create()
    run = await create_run(foundation, "R1", day, day)
    expected = payouts_of(run)
    tag = batch_payout_tag(run["payout_tag"], run["token"], 0)
    pool.fund.transact("payout", pool.bpc.address, [stranger.address], [1], tag)
    before = {c.address: pool.bpc_balance(c.address) for c in contributors}  # the BPC minted for the patents

    refused = await pay(foundation, run["id"])
    assert refused["status"] == "paying"
    first, second = refused["batches"]
    assert (first["status"], first["tx_hash"], first["last_error"]) == (
        "pending",
        None,
        f"FundTagAlreadyPaid(tag={tag}): the Fund paid this tag to other recipients or amounts",
    )
    assert (second["status"], second["last_error"]) == ("paid", None)
    assert sorted(fund_payouts(chain)) == sorted([(stranger.address, 1, tag), *with_batch_tags(run, (1,))])
    again = await pay(foundation, run["id"])
    assert again == refused
    in_second = {p["contributor"] for p in second["payouts"]}
    for contributor in contributors:
        paid = expected[contributor.address] if contributor.address in in_second else 0
        assert pool.bpc_balance(contributor.address) == before[contributor.address] + paid


# --------------------------------------------------------------------------- a slow node

NODE_HELD_S = 5.0


@dataclass
class SlowNode:
    """The node's first answer to `method` for the pool's chain gateway, held until released (or for
    NODE_HELD_S). The gateway asks the node from worker threads; calls made on the event loop's own
    thread (other areas' followers, which call the embedded EVM inline) are not held, as holding
    them would stop the loop itself."""

    method: str
    asked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)


@contextmanager
def slow_node(chain: ChainRuntime, method: str) -> Iterator[SlowNode]:
    """A node that is slow to answer `method` once, as one behind on its work or far away is."""
    node = SlowNode(method)

    class Holding(Web3Middleware):
        def request_processor(self, method: Any, params: Any) -> Any:
            off_the_loop = threading.current_thread() is not threading.main_thread()
            if method == node.method and off_the_loop and not node.asked.is_set():
                node.asked.set()
                node.release.wait(NODE_HELD_S)
                node.answered.set()
            return method, params

    chain.w3.middleware_onion.add(Holding, name="slow node")
    try:
        yield node
    finally:
        node.release.set()
        chain.w3.middleware_onion.remove("slow node")


@pytest.mark.parametrize(
    ("batch_zero", "method"),
    [
        ("pending", "eth_blockNumber"),  # its claim asks for the head: the block its search starts at
        ("sending", "eth_getLogs"),  # its claim looks for its payout before sending it again
        ("tag paid otherwise", "eth_getLogs"),  # the Fund refuses its tag: its payout is looked for
    ],
)
async def test_a_pay_request_waiting_on_the_node_holds_no_database_lock(
    foundation: Foundation, engine: AsyncEngine, batch_zero: str, method: str
) -> None:
    """While a pay request waits for the node to answer about batch 0, another writer writes batch 0's
    row at once: on SQLite a transaction left open would hold the whole database's write lock."""
    chain, pool = foundation.chain, foundation.chain.pool
    _, day = await _three_contributors_and_a_deposit(foundation, "US 12,600,00{} B2")
    run = await create_run(foundation, "R1", day, day)
    first_batch = (RoyaltyPayoutBatch.run_id == run["id"]) & (RoyaltyPayoutBatch.batch_index == 0)
    if batch_zero == "sending":
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.execute(
                update(RoyaltyPayoutBatch)
                .where(first_batch)
                .values(status="sending", from_block=chain.w3.eth.block_number, sending_at=utc_now())
            )
    elif batch_zero == "tag paid otherwise":
        tag = batch_payout_tag(run["payout_tag"], run["token"], 0)
        pool.fund.transact("payout", pool.bpc.address, [Account.create().address], [1], tag)

    with slow_node(chain, method) as node:
        paying = asyncio.create_task(
            foundation.client.post(f"/v1/admin/royalties/runs/{run['id']}/pay", headers=foundation.council)
        )
        assert await asyncio.to_thread(node.asked.wait, 30)
        async with create_sessionmaker(engine)() as session, session.begin():
            await session.execute(
                update(RoyaltyPayoutBatch).where(first_batch).values(from_block=RoyaltyPayoutBatch.from_block)
            )
        assert not node.answered.is_set(), "batch 0's row was locked until the node answered"
        node.release.set()
        reply = await paying
    assert reply.status_code == 200, reply.text
    paid = reply.json()
    if batch_zero == "tag paid otherwise":
        assert [batch["status"] for batch in paid["batches"]] == ["pending", "paid"]
        assert paid["batches"][0]["last_error"].startswith("FundTagAlreadyPaid(")
    else:
        assert paid["status"] == "paid"


# --------------------------------------------------------------------------- concurrent creations


@asynccontextmanager
async def pool_service(database_url: str, chain: ChainRuntime) -> AsyncIterator[FastAPI]:
    app = build_app(pool_settings(database_url), chain=chain)
    async with app.router.lifespan_context(app):
        yield app


async def create_directly(
    session: AsyncSession, context: PoolContext, period_id: str, day: date
) -> tuple[RoyaltyRun, bool]:
    """The run of `period_id` (`day`), stored in `session`'s transaction after the indexer caught up."""
    indexed_to, chain_time = await royalty_service.index_for_run(context)
    return await royalty_service.store_run(
        context,
        session,
        RoyaltyPeriod(period_id, day, day),
        context.chain.pool.bpc.address,
        indexed_to,
        chain_time,
        actor=COUNCIL.address,
        at=utc_now(),
    )


async def create_in_own_transaction(
    context: PoolContext, period_id: str, day: date
) -> tuple[RoyaltyRun, bool]:
    async with context.sessionmaker() as session, session.begin():
        return await create_directly(session, context, period_id, day)


async def until_a_transaction_waits_for_a_lock(context: PoolContext, in_statement: str = "") -> None:
    """Until a statement (one naming `in_statement`, if given) waits for a lock in this database."""
    for _ in range(400):
        async with context.sessionmaker() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "AND strpos(query, :named) > 0"
                ),
                {"named": in_statement},
            )
        if waiting:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the second creation never waited for the first one's lock")


def skip_unless_postgresql(database_backend: str) -> None:
    if database_backend != "postgresql":
        pytest.skip("SQLite transactions take the write lock when they begin: creations never overlap")


def three_days_of_deposits(chain: ChainRuntime) -> date:
    """Fund deposits of 1,000, 500 and 7 on three days from the chain's day, which it returns; no
    patent is in the pool, so each period's receipts carry."""
    day = next_chain_day(chain)
    deposit(chain, 1_000)
    travel_to(chain, day + timedelta(days=1))
    deposit(chain, 500)
    travel_to(chain, day + timedelta(days=2))
    deposit(chain, 7)
    return day


async def created_while_the_first_is_open(
    context: PoolContext, day: date, period_id: str, starts_on: date
) -> tuple[tuple[RoyaltyRun, bool], tuple[RoyaltyRun, bool]]:
    """Period Q1 (`day`) created in a transaction that stays open until a second creation, of
    `period_id` from `starts_on` in its own transaction, waits for its lock; both (run, created)."""
    async with context.sessionmaker() as session, session.begin():
        first = await create_directly(session, context, "Q1", day)
        second = asyncio.create_task(create_in_own_transaction(context, period_id, starts_on))
        await until_a_transaction_waits_for_a_lock(context)
    return first, await second


async def test_two_periods_created_at_once_chain_their_carries(
    database_backend: str, database_url: str, chain_runtime: ChainRuntime
) -> None:
    """Q2 is created while Q1's transaction is still open: Q2 carries in what Q1 carried out."""
    skip_unless_postgresql(database_backend)
    chain = chain_runtime
    day = three_days_of_deposits(chain)
    async with pool_service(database_url, chain) as app:
        context: PoolContext = app.state.pool
        (first, _), (second, created) = await created_while_the_first_is_open(
            context, day, "Q2", day + timedelta(days=1)
        )
    assert created
    assert (first.received_wei, first.carry_in_wei, first.carry_out_wei) == (1_000, 0, 1_000)
    assert (second.received_wei, second.carry_in_wei, second.carry_out_wei) == (500, 1_000, 1_500)


async def test_the_same_period_created_twice_at_once_is_one_run(
    database_backend: str, database_url: str, chain_runtime: ChainRuntime
) -> None:
    """A client's retry arriving while the first request is still running gets the same run, not a 500."""
    skip_unless_postgresql(database_backend)
    chain = chain_runtime
    day = three_days_of_deposits(chain)
    async with pool_service(database_url, chain) as app:
        context: PoolContext = app.state.pool
        (first, created_first), (retried, created_again) = await created_while_the_first_is_open(
            context, day, "Q1", day
        )
        assert (created_first, created_again, retried.id) == (True, False, first.id)

        # Through HTTP, both at once: one run, answered 201 and 200.
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            headers = await bearer_headers(client, COUNCIL)
            body = {
                "period_id": "Q2",
                "starts_on": (day + timedelta(days=1)).isoformat(),
                "ends_on": (day + timedelta(days=1)).isoformat(),
            }
            replies = await asyncio.gather(
                *(client.post("/v1/admin/royalties/runs", json=body, headers=headers) for _ in range(2))
            )
            runs = (await client.get("/v1/admin/royalties/runs", headers=headers)).json()
    assert sorted(reply.status_code for reply in replies) == [200, 201], [reply.text for reply in replies]
    assert replies[0].json() == replies[1].json()
    assert [(run["period_id"], run["carry_in_wei"]) for run in runs] == [("Q1", "0"), ("Q2", "1000")]


@pytest.mark.parametrize("seed", [11, 29])
async def test_distributions_conserve_the_amount_exactly(foundation: Foundation, seed: int) -> None:
    """Random contributors, weights and deposits over three periods: every wei is paid or carried."""
    rng = random.Random(seed)
    chain, pool = foundation.chain, foundation.chain.pool
    contributors: list[LocalAccount] = [await new_member(foundation) for _ in range(rng.randint(2, 4))]
    for index in range(rng.randint(3, 5)):
        owner = rng.choice(contributors)
        scores = (rng.randint(60, 100), rng.randint(60, 100))
        await admit_patent(
            foundation,
            f"US 13,{seed:03d},{index:03d} B2",
            source="contributed",
            contributor=owner.address,
            scores=scores,
        )
    start = next_chain_day(chain)
    before = {c.address: pool.bpc_balance(c.address) for c in contributors}
    deposits_by_day: list[int] = []
    for offset in range(3):
        if offset:
            travel_to(chain, start + timedelta(days=offset))
        amounts = [
            rng.choice([1, 7, rng.randint(1, 10**6), rng.randint(1, 10**24)])
            for _ in range(rng.randint(0, 3))
        ]
        for amount in amounts:
            deposit(chain, amount)
        deposits_by_day.append(sum(amounts))
    travel_to(chain, start + timedelta(days=3))

    carry = 0
    paid_to: dict[str, int] = {c.address: 0 for c in contributors}
    for offset, received in enumerate(deposits_by_day):
        day = start + timedelta(days=offset)
        run = await create_run(foundation, f"S{seed}-{offset}", day, day)
        assert (int(run["received_wei"]), int(run["carry_in_wei"])) == (received, carry)
        assert_conserves(run)
        for address, amount in payouts_of(run).items():
            paid_to[address] += amount
        await pay(foundation, run["id"])
        carry = int(run["carry_out_wei"])
    for contributor in contributors:
        assert (
            pool.bpc_balance(contributor.address)
            == before[contributor.address] + paid_to[contributor.address]
        )
    assert pool.bpc_balance(pool.fund.address) == carry
    assert sum(paid_to.values()) + carry == sum(deposits_by_day)


def settle_a_trade(
    chain: ChainRuntime,
    vault: BoundContract,
    quote_token: str,
    seller: LocalAccount,
    buyer: LocalAccount,
    *,
    taker_fee_bps: int,
) -> TxReceipt:
    """The operator settles one trade in the Vault: ``seller`` (maker, 10 bps) sells 2 BPC at 2.50 to
    ``buyer`` (taker), both with funds deposited; its receipt."""
    chain_id, expiry = chain.deployment.chain_id, int(time_module.time()) + 30 * 86_400

    def order(maker: str, side: OrderSide) -> VaultOrder:
        return VaultOrder(
            maker=maker,
            base_token=chain.pool.bpc.address,
            quote_token=quote_token,
            side=side,
            price_quote=2_500_000,
            amount_base=2 * BPC,
            max_fee_bps=30,
            nonce=1,
            expiry_unix=expiry,
        )

    sell, buy = order(seller.address, OrderSide.SELL), order(buyer.address, OrderSide.BUY)
    signatures = [
        sign_order(seller.key, chain_id, vault.address, sell),
        sign_order(buyer.key, chain_id, vault.address, buy),
    ]
    fill = (
        0,
        1,
        10,
        taker_fee_bps,
        2 * BPC,
        sell.price_quote,
    )  # maker, taker, fee bps of each, amount, price
    return vault.transact("settle", [sell.as_abi_tuple(), buy.as_abi_tuple()], signatures, [fill])


async def test_trading_fees_are_distributed_in_the_quote_token(foundation: Foundation) -> None:
    chain, pool = foundation.chain, foundation.chain.pool
    quote = pool.quote
    assert quote is not None
    contributor = await new_member(foundation)
    await admit_patent(foundation, "US 12,200,001 B2", source="contributed", contributor=contributor.address)

    # Two members trade 2 BPC through the Vault; the operator settles and the fees go to the Fund.
    seller, buyer = embedded_account(7), embedded_account(8)
    vault = pool.vault
    for trader in (seller, buyer):
        pool.admit(trader.address, Tier.SMALL)
    pool.mint_bpc(seller.address, 10 * BPC)
    quote.transact("mint", buyer.address, 10_000 * USD)
    pool.approve_bpc(vault.address, 10 * BPC, sender=seller.address)
    quote.transact("approve", vault.address, 10_000 * USD, sender=buyer.address)
    vault.transact("deposit", pool.bpc.address, 10 * BPC, sender=seller.address)
    vault.transact("deposit", quote.address, 10_000 * USD, sender=buyer.address)
    receipt = settle_a_trade(chain, vault, quote.address, seller, buyer, taker_fee_bps=25)
    (collected,) = vault.contract.events.FeesCollected().process_receipt(receipt, errors=DISCARD)
    fees = int(collected["args"]["amount"])
    assert fees > 0
    assert int(collected["args"]["received"]) == fees  # the dev quote token takes no fee on transfer
    assert quote.call("balanceOf", pool.fund.address) == fees

    day = chain_day(chain)
    travel_to(chain, day + timedelta(days=1))
    reply = await foundation.client.post(
        "/v1/admin/royalties/runs",
        json={
            "period_id": "T1",
            "starts_on": day.isoformat(),
            "ends_on": day.isoformat(),
            "token": quote.address,
        },
        headers=foundation.council,
    )
    assert reply.status_code == 201, reply.text
    run = reply.json()
    assert (run["token"], run["received_wei"]) == (quote.address, str(fees))
    assert payouts_of(run) == {contributor.address: fees}  # the only stake takes it all
    await pay(foundation, run["id"])
    assert quote.call("balanceOf", contributor.address) == fees
    assert quote.call("balanceOf", pool.fund.address) == 0
    # The BPC run of the same period is separate and received nothing.
    bpc_run = await create_run(foundation, "T1", day, day)
    assert (bpc_run["token"], bpc_run["received_wei"]) == (pool.bpc.address, "0")


async def test_a_run_pays_only_in_a_token_the_fund_collects(foundation: Foundation) -> None:
    """BPC and the Vault's quote token, or a token the Fund received; any other address is refused
    (no contract there, or a contract that never paid the Fund) and nothing is stored or audited."""
    chain, client, pool = foundation.chain, foundation.client, foundation.chain.pool
    contributor = await new_member(foundation)
    await admit_patent(foundation, "US 12,300,001 B2", source="contributed", contributor=contributor.address)
    # Another ERC-20, deposited into the Fund directly.
    artifacts = compile_contracts()
    artifact = artifacts["TestToken"]
    sent = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode).constructor("Other", "OTH", 6)
    other = BoundContract(
        chain.w3,
        "Other",
        str(chain.w3.eth.wait_for_transaction_receipt(sent.transact())["contractAddress"]),
        artifact.abi,
        error_decoder(artifacts),
    )
    day = next_chain_day(chain)
    other.transact("mint", DEPOSITOR.address, 500)
    other.transact("approve", pool.fund.address, 500, sender=DEPOSITOR.address)
    pool.fund.transact("deposit", other.address, 500, keccak(b"donation"), sender=DEPOSITOR.address)
    travel_to(chain, day + timedelta(days=1))
    audit_before = await client.get("/v1/admin/audit", headers=foundation.council)

    def body(token: str) -> dict[str, str]:
        return {"period_id": "K1", "starts_on": day.isoformat(), "ends_on": day.isoformat(), "token": token}

    for token in ("0x" + "33" * 20, pool.bpr.address):
        refused = await client.post("/v1/admin/royalties/runs", json=body(token), headers=foundation.council)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [error["loc"] for error in refused.json()["errors"]] == [["body", "token"]]
        assert "the Fund collects no" in refused.json()["detail"]
    runs = await client.get("/v1/admin/royalties/runs", headers=foundation.council)
    assert runs.json() == []
    audit_after = await client.get("/v1/admin/audit", headers=foundation.council)
    assert audit_after.json() == audit_before.json()

    quote = pool.quote
    assert quote is not None
    for token, received in ((other.address, 500), (quote.address, 0), (pool.bpc.address, 0)):
        reply = await client.post("/v1/admin/royalties/runs", json=body(token), headers=foundation.council)
        assert reply.status_code == 201, reply.text
        assert (reply.json()["token"], reply.json()["received_wei"]) == (token, str(received))
