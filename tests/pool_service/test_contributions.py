"""Contribution mints: exactly once across refusals, retries and restarts.

A crash is simulated by putting a mint row back into the state the service
leaves it in between its steps (``sending`` committed, transaction sent or not),
then letting the service — a retried request or a restarted process — continue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from web3 import Web3
from web3.exceptions import Web3RPCError
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from exchange.chain.runtime import ChainRuntime
from exchange.db.base import utc_now
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.pool.models import ContributionMint
from tests.pool_service.conftest import OUTSIDER, Foundation, pool_settings, started_beside
from tests.pool_service.flows import admit, admit_patent, new_member

AMOUNT_AT_SCORE_75 = 750 * 10**18
LOG_RANGE_LIMIT = 4


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine_for_url(database_url)
    yield engine
    await engine.dispose()


async def _mint_row(engine: AsyncEngine, patent_id: str) -> ContributionMint:
    async with create_sessionmaker(engine)() as session:
        row = await session.scalar(select(ContributionMint).where(ContributionMint.patent_id == patent_id))
        assert row is not None
        return row


async def _set_mint(engine: AsyncEngine, patent_id: str, **values: Any) -> None:
    async with create_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(ContributionMint).where(ContributionMint.patent_id == patent_id).values(**values)
        )


def _minter_role(chain: ChainRuntime, grant: bool) -> None:
    bpc = chain.pool.bpc
    bpc.transact(
        "grantRole" if grant else "revokeRole", bpc.call("MINTER_ROLE"), chain.w3.eth.default_account
    )


async def _process(foundation: Foundation, mint_id: int) -> dict[str, Any]:
    reply = await foundation.client.post(
        f"/v1/admin/pool/mints/{mint_id}/process", headers=foundation.registrar
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_a_refused_mint_is_recorded_and_sent_once_when_retried(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    contributor, pool = (await new_member(foundation)).address, foundation.chain.pool
    _minter_role(foundation.chain, grant=False)
    decision = await admit_patent(
        foundation, "US 11,000,001 B2", source="contributed", contributor=contributor
    )
    mint = await _mint_row(engine, decision["patent"]["patent_id"])
    assert mint.status == "failed"
    assert mint.error is not None
    assert "AccessControlUnauthorizedAccount" in mint.error
    assert pool.bpc_balance(contributor) == 0

    _minter_role(foundation.chain, grant=True)
    first = await _process(foundation, mint.id)
    assert (first["status"], first["amount_wei"]) == ("minted", str(AMOUNT_AT_SCORE_75))
    again = await _process(foundation, mint.id)
    assert again["tx_hash"] == first["tx_hash"]
    assert pool.bpc_balance(contributor) == AMOUNT_AT_SCORE_75
    listed = await foundation.client.get(
        "/v1/admin/pool/mints", params={"status": "minted"}, headers=foundation.council
    )
    assert [m["patent_id"] for m in listed.json()["items"]] == ["US11000001B2"]
    audit = await foundation.client.get(
        "/v1/admin/audit", params={"subject_id": "US11000001B2"}, headers=foundation.council
    )
    actions = [entry["action"] for entry in audit.json()["items"]]
    assert actions[:2] == ["contribution.minted", "contribution.mint_failed"]


async def test_a_mint_sent_but_not_recorded_is_found_on_chain_after_a_restart(
    foundation: Foundation, engine: AsyncEngine, database_url: str, chain_runtime: ChainRuntime
) -> None:
    contributor, pool = (await new_member(foundation)).address, chain_runtime.pool
    decision = await admit_patent(foundation, "EP 3200001 B1", source="contributed", contributor=contributor)
    patent_id = decision["patent"]["patent_id"]
    sent = await _mint_row(engine, patent_id)
    assert sent.status == "minted"
    assert sent.minted_block is not None
    supply = pool.bpc_supply()
    # The process stopped after the transaction was mined, before it recorded it.
    await _set_mint(
        engine, patent_id, status="sending", tx_hash=None, minted_block=None, from_block=sent.minted_block
    )

    async with started_beside(pool_settings(database_url), chain_runtime):
        pass
    found = await _mint_row(engine, patent_id)
    assert (found.status, found.tx_hash, found.minted_block) == ("minted", sent.tx_hash, sent.minted_block)
    assert pool.bpc_supply() == supply
    assert pool.bpc_balance(contributor) == AMOUNT_AT_SCORE_75
    audit = await foundation.client.get(
        "/v1/admin/audit", params={"action": "contribution.minted"}, headers=foundation.council
    )
    assert audit.json()["items"][0]["reason"] == "found on chain after an interrupted send"


async def test_a_mint_committed_as_sending_but_never_sent_is_sent_once(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    contributor, chain = (await new_member(foundation)).address, foundation.chain
    _minter_role(chain, grant=False)
    decision = await admit_patent(
        foundation, "JP 2018-100001 A", source="contributed", contributor=contributor
    )
    patent_id = decision["patent"]["patent_id"]
    _minter_role(chain, grant=True)
    # The intent was committed, then the process stopped before sending.
    head = chain.w3.eth.block_number
    await _set_mint(
        engine, patent_id, status="sending", error=None, from_block=head + 1, sending_at=utc_now()
    )
    mint_id = (await _mint_row(engine, patent_id)).id

    outcome = await _process(foundation, mint_id)
    assert outcome["status"] == "minted"
    assert chain.pool.bpc_balance(contributor) == AMOUNT_AT_SCORE_75
    await _process(foundation, mint_id)
    assert chain.pool.bpc_balance(contributor) == AMOUNT_AT_SCORE_75


async def test_two_interrupted_mints_of_equal_amounts_claim_one_transfer_each(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    contributor, pool = (await new_member(foundation)).address, foundation.chain.pool
    first = await admit_patent(foundation, "US 11,000,002 B2", source="contributed", contributor=contributor)
    second = await admit_patent(foundation, "US 11,000,003 B2", source="contributed", contributor=contributor)
    rows = [await _mint_row(engine, d["patent"]["patent_id"]) for d in (first, second)]
    assert rows[0].minted_block is not None
    supply = pool.bpc_supply()
    for row in rows:
        await _set_mint(
            engine,
            row.patent_id,
            status="sending",
            tx_hash=None,
            minted_block=None,
            from_block=rows[0].minted_block,
        )
    for row in rows:
        await _process(foundation, row.id)
    after = [await _mint_row(engine, row.patent_id) for row in rows]
    assert {row.tx_hash for row in after} == {row.tx_hash for row in rows}
    assert pool.bpc_supply() == supply
    assert pool.bpc_balance(contributor) == 2 * AMOUNT_AT_SCORE_75


async def test_a_mint_mined_after_its_search_is_not_minted_again_when_resent(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    contributor, pool = (await new_member(foundation)).address, foundation.chain.pool
    decision = await admit_patent(
        foundation, "US 11,000,004 B2", source="contributed", contributor=contributor
    )
    patent_id = decision["patent"]["patent_id"]
    sent = await _mint_row(engine, patent_id)
    assert sent.minted_block is not None
    supply = pool.bpc_supply()
    # The first transaction was still on its way when the search for it ran (it is mined
    # in a block the search did not cover), and the resend delay has passed.
    await _set_mint(
        engine,
        patent_id,
        status="sending",
        tx_hash=None,
        minted_block=None,
        from_block=sent.minted_block + 1,
        sending_at=utc_now(),
    )

    outcome = await _process(foundation, sent.id)
    assert (outcome["status"], outcome["tx_hash"]) == ("minted", sent.tx_hash)
    assert pool.bpc_supply() == supply
    assert pool.bpc_balance(contributor) == AMOUNT_AT_SCORE_75


async def test_a_key_minted_to_someone_else_fails_the_mint_and_mints_nothing_more(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    contributor, chain = (await new_member(foundation)).address, foundation.chain
    _minter_role(chain, grant=False)
    decision = await admit_patent(foundation, "EP 3200004 B1", source="contributed", contributor=contributor)
    mint = await _mint_row(engine, decision["patent"]["patent_id"])
    assert mint.status == "failed"
    _minter_role(chain, grant=True)
    stranger = Account.create().address
    chain.pool.mint_bpc_once(stranger, 1, mint.idempotency_key)
    supply = chain.pool.bpc_supply()

    outcome = await _process(foundation, mint.id)
    assert outcome["status"] == "failed"
    assert outcome["tx_hash"] is None
    failed = await _mint_row(engine, mint.patent_id)
    assert failed.error is not None
    assert f"BPC minted 1 to {stranger}" in failed.error
    assert chain.pool.bpc_supply() == supply
    assert chain.pool.bpc_balance(contributor) == 0


@contextmanager
def _log_range_limited(w3: Web3) -> Iterator[None]:
    """The node refuses an ``eth_getLogs`` over more than ``LOG_RANGE_LIMIT`` blocks, as hosted nodes do."""

    def block_of(value: Any) -> int:
        return int(w3.eth.block_number) if value in (None, "latest") else int(str(value), 0)

    class RangeLimit(Web3Middleware):
        def wrap_make_request(self, make_request: Callable[..., RPCResponse]) -> Callable[..., RPCResponse]:
            def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
                if method == "eth_getLogs":
                    query = params[0]
                    span = block_of(query.get("toBlock")) - block_of(query.get("fromBlock")) + 1
                    if span > LOG_RANGE_LIMIT:
                        raise Web3RPCError(f"query exceeds max block range {LOG_RANGE_LIMIT}")
                return make_request(method, params)

            return middleware

    w3.middleware_onion.add(RangeLimit, name="log-range-limit")
    try:
        yield
    finally:
        w3.middleware_onion.remove("log-range-limit")


async def _start_once(database_url: str, chain: ChainRuntime, **overrides: object) -> None:
    """Start the service and stop it: its start sends or reconciles every open mint.

    The other areas' indexers read ranges the node answers.
    """
    settings = pool_settings(
        database_url,
        vault_indexer_max_blocks=LOG_RANGE_LIMIT,
        licence_indexer_max_blocks=LOG_RANGE_LIMIT,
        **overrides,
    )
    async with started_beside(settings, chain):
        pass


async def test_an_interrupted_mint_is_found_block_range_by_block_range(
    foundation: Foundation, engine: AsyncEngine, database_url: str, chain_runtime: ChainRuntime
) -> None:
    contributor, pool = (await new_member(foundation)).address, chain_runtime.pool
    decision = await admit_patent(
        foundation, "US 11,000,005 B2", source="contributed", contributor=contributor
    )
    patent_id = decision["patent"]["patent_id"]
    sent = await _mint_row(engine, patent_id)
    assert sent.minted_block is not None
    for _ in range(3 * LOG_RANGE_LIMIT):
        chain_runtime.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    supply = pool.bpc_supply()
    # The service stopped long ago between sending and recording: the search covers many blocks.
    await _set_mint(
        engine, patent_id, status="sending", tx_hash=None, minted_block=None, from_block=sent.minted_block - 2
    )

    with _log_range_limited(chain_runtime.w3):
        await _start_once(database_url, chain_runtime, pool_indexer_max_blocks=LOG_RANGE_LIMIT)
    found = await _mint_row(engine, patent_id)
    assert (found.status, found.tx_hash) == ("minted", sent.tx_hash)
    assert pool.bpc_supply() == supply


async def test_a_mint_that_cannot_go_on_does_not_hold_back_the_mints_after_it(
    foundation: Foundation, engine: AsyncEngine, database_url: str, chain_runtime: ChainRuntime
) -> None:
    pool = chain_runtime.pool
    stuck_to, waiting_to = (await new_member(foundation)).address, (await new_member(foundation)).address
    stuck = await admit_patent(foundation, "US 11,000,006 B2", source="contributed", contributor=stuck_to)
    _minter_role(chain_runtime, grant=False)
    waiting = await admit_patent(foundation, "US 11,000,007 B2", source="contributed", contributor=waiting_to)
    _minter_role(chain_runtime, grant=True)
    first = await _mint_row(engine, stuck["patent"]["patent_id"])
    second = await _mint_row(engine, waiting["patent"]["patent_id"])
    assert (first.id < second.id, first.minted_block, second.status) == (True, first.minted_block, "failed")
    assert first.minted_block is not None
    for _ in range(3 * LOG_RANGE_LIMIT):
        chain_runtime.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
    # The first is interrupted, and its search is more than this node answers (the setting
    # allows ranges the node refuses); the second waits to be sent.
    await _set_mint(
        engine,
        first.patent_id,
        status="sending",
        tx_hash=None,
        minted_block=None,
        from_block=first.minted_block,
    )
    await _set_mint(engine, second.patent_id, status="pending", error=None)

    with _log_range_limited(chain_runtime.w3):
        await _start_once(database_url, chain_runtime)
    assert (await _mint_row(engine, first.patent_id)).status == "sending"
    assert (await _mint_row(engine, second.patent_id)).status == "minted"
    assert pool.bpc_balance(waiting_to) == AMOUNT_AT_SCORE_75


@contextmanager
def _chain_calls_during_a_write_lock(w3: Web3, database_url: str) -> Iterator[list[str]]:
    """The JSON-RPC methods asked while another connection held the SQLite database's write lock."""
    path = database_url.removeprefix("sqlite+aiosqlite:///")
    under_lock: list[str] = []

    class LockProbe(Web3Middleware):
        def wrap_make_request(self, make_request: Callable[..., RPCResponse]) -> Callable[..., RPCResponse]:
            def middleware(method: RPCEndpoint, params: Any) -> RPCResponse:
                probe = sqlite3.connect(path, timeout=0, isolation_level=None)
                try:
                    probe.execute("BEGIN IMMEDIATE")
                    probe.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    under_lock.append(method)
                finally:
                    probe.close()
                return make_request(method, params)

            return middleware

    w3.middleware_onion.add(LockProbe, name="lock-probe")
    try:
        yield under_lock
    finally:
        w3.middleware_onion.remove("lock-probe")


async def test_no_chain_call_is_made_while_a_mint_holds_the_sqlite_write_lock(
    foundation: Foundation, engine: AsyncEngine, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL locks the row only")
    chain = foundation.chain
    await admit(foundation, OUTSIDER)
    _minter_role(chain, grant=False)
    decision = await admit_patent(
        foundation, "US 11,000,008 B2", source="contributed", contributor=OUTSIDER.address
    )
    _minter_role(chain, grant=True)
    mint = await _mint_row(engine, decision["patent"]["patent_id"])
    # Interrupted after its intent was committed: the retry searches the chain, then sends.
    await _set_mint(engine, mint.patent_id, status="sending", error=None, from_block=1, sending_at=utc_now())

    with _chain_calls_during_a_write_lock(chain.w3, database_url) as under_lock:
        assert (await _process(foundation, mint.id))["status"] == "minted"
    assert under_lock == []


async def test_a_used_key_whose_mint_the_logs_do_not_show_yet_is_looked_for_again_later(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    """A node whose log index lags (one behind a load balancer, say) answers the key used but no
    ``MintedOnce``: the mint stays ``sending`` (503, not a 500) and is recorded once the logs show it."""
    chain = foundation.chain
    await admit(foundation, OUTSIDER)
    decision = await admit_patent(
        foundation, "US 11,000,009 B2", source="contributed", contributor=OUTSIDER.address
    )
    sent = await _mint_row(engine, decision["patent"]["patent_id"])
    await _set_mint(
        engine, sent.patent_id, status="sending", tx_hash=None, minted_block=None, sending_at=utc_now()
    )

    class NoLogsYet(Web3Middleware):
        def response_processor(self, method: RPCEndpoint, response: RPCResponse) -> Any:
            return {**response, "result": []} if method == "eth_getLogs" else response

    chain.w3.middleware_onion.add(NoLogsYet, name="no-logs-yet")
    try:
        reply = await foundation.client.post(
            f"/v1/admin/pool/mints/{sent.id}/process", headers=foundation.registrar
        )
    finally:
        chain.w3.middleware_onion.remove("no-logs-yet")
    assert reply.status_code == 503, reply.text
    assert "no MintedOnce" in reply.json()["detail"]
    assert (await _mint_row(engine, sent.patent_id)).status == "sending"

    later = await _process(foundation, sent.id)
    assert (later["status"], later["tx_hash"]) == ("minted", sent.tx_hash)


async def test_the_database_refuses_a_second_mint_with_the_same_key(
    foundation: Foundation, engine: AsyncEngine
) -> None:
    decision = await admit_patent(
        foundation, "EP 3200002 B1", source="contributed", contributor=(await new_member(foundation)).address
    )
    original = await _mint_row(engine, decision["patent"]["patent_id"])
    other = await admit_patent(foundation, "EP 3200003 B1")  # purchased: owes nothing
    assert other["mint"] is None
    with pytest.raises(IntegrityError):
        async with create_sessionmaker(engine)() as session, session.begin():
            session.add(
                ContributionMint(
                    patent_id=other["patent"]["patent_id"],
                    idempotency_key=original.idempotency_key,
                    recipient=original.recipient,
                    amount_wei=original.amount_wei,
                    score=original.score,
                    policy_version=original.policy_version,
                    status="pending",
                )
            )
