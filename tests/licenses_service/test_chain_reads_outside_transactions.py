"""The device routes that read the chain (an upload, a withdrawal, a pending upload's transactions),
and a member's licence transactions, read it with no database transaction open; what the device
routes read it for is checked again when they write.

The watch is ``tests.support.chain_reads``'s, on the shared embedded chain. The races are real
too: the registration is mined, and a second indexer on its own connections credits it, between
the route's chain read and its write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from exchange.chain.pool import Tier
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.licenses.indexer import DeviceIndexer
from tests.conftest import run_in_thread
from tests.licenses_service.conftest import BPC, Service, account, configure_small_tier, licensed_member
from tests.licenses_service.test_device_batches import (
    BPC_PER_DEVICE,
    batch_state,
    devices,
    make_stale,
    upload,
)
from tests.support.chain_reads import assert_read_outside_transactions, watching

CHAIN_READS = {"eth_blockNumber", "eth_getLogs", "eth_call", "eth_estimateGas"}


async def pending_upload_past_the_credited_block(
    service: Service, member: LocalAccount, prefix: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """`member`'s pending upload, with blocks past the indexer's credited one for the route to read."""
    licensed_member(service.pool, member)
    headers = await service.sign_in(member)
    body = await upload(service, headers, devices(3, prefix=prefix))
    await service.catch_up()
    service.pool.mint_bpc(member.address, 1)  # a block the indexer has not credited
    return headers, body


async def stale_upload(
    service: Service, member: LocalAccount, prefix: str
) -> tuple[dict[str, str], dict[str, Any], int]:
    """`member`'s pending upload past the credited block (its headers, the upload's answer, its
    id), old enough for another upload of its ids to release it."""
    headers, body = await pending_upload_past_the_credited_block(service, member, prefix)
    upload_id: int = body["batch"]["upload_id"]
    await make_stale(service, upload_id)
    return headers, body, upload_id


async def credit_with_an_indexer_of_its_own(service: Service, database_url: str) -> None:
    """One pass of an indexer with its own connections (run it on an event loop of its own):
    what the service's indexer does between two of a request's steps."""
    engine = create_engine_for_url(database_url)
    try:
        await DeviceIndexer(service.runtime, create_sessionmaker(engine)).catch_up()
    finally:
        await engine.dispose()


def registered_and_credited_meanwhile(
    service: Service, member: LocalAccount, body: dict[str, Any], database_url: str
) -> Callable[[], None]:
    """Mine the upload's registration, and credit it with an indexer of its own
    (``credit_with_an_indexer_of_its_own``, in a thread)."""

    def meanwhile() -> None:
        service.send(member, body["transactions"])
        run_in_thread(credit_with_an_indexer_of_its_own(service, database_url))

    return meanwhile


async def test_an_upload_reads_the_chain_with_no_transaction_open(
    licensing: Service, database_url: str
) -> None:
    """The whole upload: the licence and balance checks, the registration search of a stale
    upload holding the ids, the search for the upload's own registration, the allowance and the
    gas estimate."""
    owner, squatter = account(3), account(4)
    licensed_member(licensing.pool, owner)
    await stale_upload(licensing, squatter, "UP")
    headers = await licensing.sign_in(owner)

    with watching(licensing.w3, database_url) as watch:
        owned = await upload(licensing, headers, devices(3, prefix="UP"))

    assert [tx["description"].split()[0] for tx in owned["transactions"]] == ["allow", "register"]
    assert [call for call, _ in watch.calls].count("eth_getLogs") == 2  # the stale upload's, the new one's
    assert_read_outside_transactions(watch, expected=CHAIN_READS)


async def test_a_withdrawal_reads_the_chain_with_no_transaction_open(
    licensing: Service, database_url: str
) -> None:
    headers, body = await pending_upload_past_the_credited_block(licensing, account(2), "WO")

    with watching(licensing.w3, database_url) as watch:
        withdrawn = await licensing.client.delete(
            f"/v1/devices/batches/{body['batch']['upload_id']}", headers=headers
        )

    assert withdrawn.status_code == 204, withdrawn.text
    assert_read_outside_transactions(watch, expected={"eth_blockNumber", "eth_getLogs"})


async def test_a_pending_uploads_transactions_read_the_chain_with_no_transaction_open(
    licensing: Service, database_url: str
) -> None:
    headers, body = await pending_upload_past_the_credited_block(licensing, account(2), "TX")

    with watching(licensing.w3, database_url) as watch:
        again = await licensing.client.post(
            f"/v1/devices/batches/{body['batch']['upload_id']}/transactions", headers=headers
        )

    assert again.status_code == 200, again.text
    assert [tx["data"] for tx in again.json()] == [tx["data"] for tx in body["transactions"]]
    assert_read_outside_transactions(watch, expected=CHAIN_READS)


async def test_licence_transactions_read_the_chain_with_no_transaction_open(
    licensing: Service, database_url: str
) -> None:
    member = account(2)
    configure_small_tier(licensing.pool)
    licensing.pool.admit(member.address, Tier.SMALL)
    licensing.pool.mint_bpc(member.address, 500 * BPC)
    headers = await licensing.sign_in(member)

    with watching(licensing.w3, database_url) as watch:
        plan = await licensing.client.post("/v1/licences/transactions/acquire", headers=headers)

    assert plan.status_code == 200, plan.text
    assert [step["to"] for step in plan.json()["transactions"]] == [
        licensing.pool.bpc.address,
        licensing.pool.gate.address,
    ]
    assert_read_outside_transactions(watch, expected={"eth_call", "eth_estimateGas"})


def assert_registered_for_good(reply: httpx.Response, upload_id: int, batch_id: int) -> None:
    assert reply.status_code == 409, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert (
        reply.json()["detail"]
        == f"batch upload {upload_id} is registered on chain (batch {batch_id}) for good"
    )


async def test_an_upload_confirmed_while_its_withdrawal_reads_the_chain_stays(
    licensing: Service, database_url: str
) -> None:
    """The chain holds no registration when the withdrawal reads it; then the registration is
    mined and credited before the withdrawal writes: the upload is confirmed, and stays so (409),
    where deleting it would leave a registered batch's devices unknown."""
    member = account(2)
    headers, body = await pending_upload_past_the_credited_block(licensing, member, "RW")
    upload_id = body["batch"]["upload_id"]

    with watching(licensing.w3, database_url) as watch:
        watch.meanwhile = registered_and_credited_meanwhile(licensing, member, body, database_url)
        withdrawn = await licensing.client.delete(f"/v1/devices/batches/{upload_id}", headers=headers)

    assert_registered_for_good(withdrawn, upload_id, 1)
    assert await batch_state(licensing, headers, upload_id) == ("confirmed", 1)


async def test_a_stale_upload_confirmed_while_another_upload_reads_the_chain_keeps_its_ids(
    licensing: Service, database_url: str
) -> None:
    """A stale upload holds the ids; another licensee's upload finds no registration of it on
    chain, and the owner's registration is then mined and credited before that upload writes:
    the confirmed batch keeps its ids (409 naming them), where releasing it would delete a
    registered batch."""
    owner, other = account(5), account(6)
    licensed_member(licensing.pool, other)
    _, mine, upload_id = await stale_upload(licensing, owner, "RS")
    owner_headers = await licensing.sign_in(owner)

    with watching(licensing.w3, database_url) as watch:
        watch.meanwhile = registered_and_credited_meanwhile(licensing, owner, mine, database_url)
        refused = await licensing.client.post(
            "/v1/devices/batches",
            json={"bpc_per_device_wei": str(BPC_PER_DEVICE), "devices": devices(3, prefix="RS")},
            headers=await licensing.sign_in(other),
        )

    assert refused.status_code == 409, refused.text
    assert refused.json()["taken_count"] == 3
    assert await batch_state(licensing, owner_headers, upload_id) == ("confirmed", 1)
