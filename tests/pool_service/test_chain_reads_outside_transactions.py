"""The pool's routes that talk to the chain do so with no database transaction open, and check
again, when they write, what they read the chain for.

The watch is ``tests.support.chain_reads``'s, on the shared embedded chain: every JSON-RPC
request a route makes must find the database free (SQLite: another connection takes the write
lock at once; PostgreSQL: no connection idle in transaction).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import text

from exchange.chain.pool import Tier
from exchange.db.base import utc_now
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.pool import repository as pool_repository
from exchange.settings import Settings
from tests.conftest import run_in_thread
from tests.pool_service.conftest import Foundation, pool_settings
from tests.pool_service.flows import admit, apply
from tests.pool_service.test_royalties import create_run, deposit, next_chain_day, travel_to
from tests.support.chain_reads import assert_read_outside_transactions, watching


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The trading service's poll of the registry is off: it reads the chain on the same Web3 and
    # cancels a suspended member's orders in a transaction of the market writer's, which the
    # watch cannot tell from the route's.
    return pool_settings(database_url, trading_membership_poll_s=0)


# What a route that changes the register asks the chain: the registry's record, the transaction
# sent and its receipt, and the registry's events for the catch-up that indexes it.
SENDS = {"eth_call", "eth_sendTransaction", "eth_getTransactionReceipt", "eth_getLogs"}


async def test_the_pool_stats_read_the_bpc_supply_with_no_transaction_open(
    foundation: Foundation, database_url: str
) -> None:
    with watching(foundation.chain.w3, database_url) as watch:
        stats = await foundation.client.get("/v1/pool/stats")

    assert stats.status_code == 200, stats.text
    assert stats.json()["bpc_supply_wei"] == str(foundation.chain.pool.bpc_supply())
    assert_read_outside_transactions(watch, expected={"eth_call"})


async def _under_review(foundation: Foundation, applicant: LocalAccount) -> str:
    """The path of `applicant`'s application, reviewed."""
    application = await apply(foundation, applicant)
    path = f"/v1/admin/membership/applications/{application['id']}"
    reviewed = await foundation.client.post(f"{path}/review", json={}, headers=foundation.registrar)
    assert reviewed.status_code == 200, reviewed.text
    return path


async def test_an_approval_admits_with_no_transaction_open(foundation: Foundation, database_url: str) -> None:
    """The registry's record, the admission sent and mined, the catch-up that indexes it."""
    applicant = Account.create()
    path = await _under_review(foundation, applicant)

    with watching(foundation.chain.w3, database_url) as watch:
        approved = await foundation.client.post(
            f"{path}/approve", json={"tier": "small"}, headers=foundation.council
        )

    assert approved.status_code == 200, approved.text
    assert approved.json()["member"]["status"] == "active"
    assert_read_outside_transactions(watch, expected=SENDS)


async def test_an_approval_whose_admission_another_made_meanwhile_completes_once(
    foundation: Foundation, database_url: str
) -> None:
    """The wallet is admitted (by another approval, say) after the route found it no member and
    before its own admission is sent: the registry refuses that one, and the approval completes
    with the admission made, named in its audit entry, as a retry would."""
    applicant = Account.create()
    path = await _under_review(foundation, applicant)
    admitted: list[str] = []

    def admitted_meanwhile() -> None:
        receipt = foundation.chain.pool.admit(applicant.address, Tier.SMALL)
        admitted.append("0x" + bytes(receipt["transactionHash"]).hex())

    with watching(foundation.chain.w3, database_url) as watch:
        watch.meanwhile_after, watch.meanwhile = "eth_call", admitted_meanwhile
        approved = await foundation.client.post(
            f"{path}/approve", json={"tier": "small"}, headers=foundation.council
        )

    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["application"]["status"] == "approved"
    assert body["application"]["admit_tx_hash"] == body["member"]["last_tx_hash"] == admitted[0]
    assert_read_outside_transactions(watch, expected={"eth_call", "eth_getLogs"})
    audit = await foundation.client.get(
        "/v1/admin/audit", params={"action": "membership.approve"}, headers=foundation.council
    )
    assert [entry["tx_hashes"] for entry in audit.json()["items"]] == [admitted]


async def test_a_rejection_reads_the_register_with_no_transaction_open(
    foundation: Foundation, database_url: str
) -> None:
    path = await _under_review(foundation, Account.create())

    with watching(foundation.chain.w3, database_url) as watch:
        rejected = await foundation.client.post(
            f"{path}/reject", json={"reason": "no"}, headers=foundation.council
        )

    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected")
    assert_read_outside_transactions(watch, expected={"eth_call"})


async def test_a_rejection_refuses_when_an_approval_sets_out_while_it_reads_the_register(
    foundation: Foundation, database_url: str
) -> None:
    """The register holds no member when the rejection reads it; an approval then records that it
    sets out to admit the wallet: the rejection refuses (409, to be asked again) rather than reject
    a wallet about to be a member, and the approval goes on."""
    path = await _under_review(foundation, Account.create())
    application_id = int(path.rsplit("/", 1)[1])

    async def mark() -> None:
        engine = create_engine_for_url(database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                if engine.dialect.name == "postgresql":  # a route holding the row: fail, not wait forever
                    await session.execute(text("SET LOCAL lock_timeout = '5s'"))
                assert await pool_repository.mark_admitting(session, application_id, since=utc_now())
        finally:
            await engine.dispose()

    with watching(foundation.chain.w3, database_url) as watch:
        watch.meanwhile_after, watch.meanwhile = "eth_call", lambda: run_in_thread(mark())
        refused = await foundation.client.post(
            f"{path}/reject", json={"reason": "no"}, headers=foundation.council
        )

    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/application-changed-meanwhile")
    assert refused.headers["retry-after"] == "1"
    application = await foundation.client.get(path, headers=foundation.council)
    assert application.json()["status"] == "under_review"
    approved = await foundation.client.post(
        f"{path}/approve", json={"tier": "small"}, headers=foundation.council
    )
    assert approved.status_code == 200, approved.text


# The change asked for, and what is done first for it to be one.
MEMBER_CHANGES = {
    "tier": ({"tier": "medium", "reason": "grew"}, None),
    "suspend": ({"reason": "late fees"}, None),
    "reinstate": ({"reason": "fees paid"}, "suspend"),
    "expel": ({"reason": "misconduct"}, None),
}


@pytest.mark.parametrize("action", sorted(MEMBER_CHANGES))
async def test_a_member_change_is_sent_with_no_transaction_open(
    foundation: Foundation, database_url: str, action: str
) -> None:
    """The catch-up before, the registry's record, the transactions sent and mined, the
    catch-up that indexes them."""
    member = Account.create()
    await admit(foundation, member)
    body, first = MEMBER_CHANGES[action]
    path = f"/v1/admin/members/{member.address}"
    headers = foundation.council if action == "expel" else foundation.registrar
    if first is not None:
        done = await foundation.client.post(f"{path}/{first}", json={"reason": "first"}, headers=headers)
        assert done.status_code == 200, done.text

    with watching(foundation.chain.w3, database_url) as watch:
        changed = await foundation.client.post(f"{path}/{action}", json=body, headers=headers)

    assert changed.status_code == 200, changed.text
    assert changed.json()["changed"] is True
    assert len(changed.json()["tx_hashes"]) >= 1
    assert_read_outside_transactions(watch, expected=SENDS)


async def test_a_royalty_run_reads_the_chain_with_no_transaction_open(
    foundation: Foundation, database_url: str
) -> None:
    """The catch-up that indexes the period's deposits, and the date of the block it reached."""
    chain = foundation.chain
    day = next_chain_day(chain)
    deposit(chain, 1_000)
    travel_to(chain, day + timedelta(days=1))
    chain.pool.mint_bpc(Account.create().address, 1)  # a block dated after the period

    with watching(chain.w3, database_url) as watch:
        run = await create_run(foundation, "W1", day, day)

    assert (run["received_wei"], run["carry_out_wei"]) == ("1000", "1000")  # no patent: all carried
    assert_read_outside_transactions(
        watch, expected={"eth_blockNumber", "eth_getLogs", "eth_getBlockByNumber"}
    )
