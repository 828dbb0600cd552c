"""The indexer restarts from its persisted cursor, reads in bounded block ranges, and runs as a loop."""

from __future__ import annotations

import asyncio

from eth_account.signers.local import LocalAccount

from exchange.db.session import app_sessionmaker
from exchange.licenses import repository
from exchange.licenses.indexer import DeviceIndexer
from tests.licenses_service.conftest import BPC, Service, account, licensed_member
from tests.licenses_service.test_device_batches import BPC_PER_DEVICE, registered_batch, upload


async def test_a_restarted_indexer_resumes_from_its_cursor(licensing: Service) -> None:
    manufacturer = account(1)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    body = await upload(licensing, headers, ["serial:acme:1", "serial:acme:2", "serial:acme:3"])
    licensing.send(manufacturer, body["transactions"])
    first = await licensing.catch_up()
    assert first == licensing.w3.eth.block_number

    # While "down", the chain moves on: a revocation and a suspension.
    batch_id = int(licensing.pool.devices.call("batchCount"))
    licensing.pool.devices.transact("revokeDevices", batch_id, [0])
    licensing.pool.devices.transact("suspendBatch", batch_id)
    licensing.pool.devices.transact("reinstateBatch", batch_id)
    # A new indexer (a restarted process), reading one block per eth_getLogs call.
    restarted = DeviceIndexer(licensing.runtime, app_sessionmaker(licensing.app), max_blocks=1)
    assert await restarted.catch_up() == licensing.w3.eth.block_number
    statuses = (
        await licensing.client.post("/v1/devices/query", json={"devices": ["serial:acme:1", "serial:acme:2"]})
    ).json()
    assert [answer["status"] for answer in statuses["devices"]] == ["revoked", "licensed"]
    assert statuses["block"] == licensing.w3.eth.block_number
    # Nothing new: a pass changes nothing and keeps the cursor.
    assert await restarted.catch_up() == licensing.w3.eth.block_number


async def test_batches_registered_elsewhere_are_skipped(licensing: Service) -> None:
    manufacturer = account(1)
    licensed_member(licensing.pool, manufacturer)
    licensing.pool.approve_bpc(licensing.pool.devices.address, 10**18, sender=manufacturer.address)
    licensing.pool.devices.transact(
        "registerBatch", b"\x01" * 32, 5, BPC_PER_DEVICE, sender=manufacturer.address
    )
    await licensing.catch_up()
    headers = await licensing.sign_in(manufacturer)
    assert (await licensing.client.get("/v1/devices/batches", headers=headers)).json() == []


async def test_the_background_loop_confirms_batches(licensing: Service) -> None:
    manufacturer = account(1)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    body = await upload(licensing, headers, ["imei:352099001761481"])
    licensing.send(manufacturer, body["transactions"])
    task = asyncio.create_task(licensing.licensing.indexer.run(0.01))
    status = "not asked"
    try:
        for _ in range(500):
            status = (await licensing.client.get("/v1/devices/imei/352099001761481")).json()["status"]
            if status == "licensed":
                break
            await asyncio.sleep(0.01)
        assert status == "licensed"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with app_sessionmaker(licensing.app)() as session:
        connection = await session.connection()
        block, _ = await repository.lookup_devices(
            connection, licensing.licensing.indexer.registry, ["imei:352099001761481"]
        )
    assert block == licensing.w3.eth.block_number


# Device counts and indexes are uint32 on chain; a PostgreSQL INTEGER holds up to 2**31 - 1.
ONE_MORE_THAN_AN_INTEGER = 2**31
UINT32_MAX = 2**32 - 1


def registered_elsewhere(service: Service, member: LocalAccount, device_count: int) -> int:
    """`member` registers a batch of `device_count` devices straight on the contract, at the
    lowest BPC per device it takes, without uploading it here; returns its batch id."""
    per_device = max(1, int(service.pool.devices.call("minBpcPerDevice")))
    licensed_member(service.pool, member, bpc=1_000 * BPC + device_count * per_device)
    service.pool.approve_bpc(service.pool.devices.address, device_count * per_device, sender=member.address)
    service.pool.devices.transact(
        "registerBatch", b"\x01" * 32, device_count, per_device, sender=member.address
    )
    return int(service.pool.devices.call("batchCount"))


async def test_a_batch_of_more_than_2_31_devices_registered_elsewhere_is_skipped(licensing: Service) -> None:
    registered_elsewhere(licensing, account(2), ONE_MORE_THAN_AN_INTEGER)
    assert await licensing.catch_up() == licensing.w3.eth.block_number

    # The indexer goes on: a later upload is confirmed and resolves.
    manufacturer = account(1)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    body = await upload(licensing, headers, ["imei:352099001761481"])
    licensing.send(manufacturer, body["transactions"])
    assert await licensing.catch_up() == licensing.w3.eth.block_number
    answer = (await licensing.client.get("/v1/devices/imei/352099001761481")).json()
    assert answer["status"] == "licensed"


async def test_a_revocation_beyond_2_31_in_a_batch_registered_elsewhere_is_skipped(
    licensing: Service,
) -> None:
    squatter = account(2)
    squatted = registered_elsewhere(licensing, squatter, UINT32_MAX)
    # Its last device revoked (an index past 2**31 - 1), credited in the pass that confirms the upload.
    licensing.pool.devices.transact("revokeDevices", squatted, [UINT32_MAX - 1], sender=squatter.address)
    batch, _ = await registered_batch(licensing, ["imei:352099001761481", "imei:490154203237518"])

    # Revocations after it are still applied.
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [0])
    assert await licensing.catch_up() == licensing.w3.eth.block_number
    statuses = (
        await licensing.client.post(
            "/v1/devices/query", json={"devices": ["imei:352099001761481", "imei:490154203237518"]}
        )
    ).json()
    assert [answer["status"] for answer in statuses["devices"]] == ["revoked", "licensed"]
