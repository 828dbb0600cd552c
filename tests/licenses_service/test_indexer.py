"""The indexer restarts from its persisted cursor, reads in bounded block ranges, and runs as a loop."""

from __future__ import annotations

import asyncio

from exchange.db.session import app_sessionmaker
from exchange.licenses import repository
from exchange.licenses.indexer import DeviceIndexer
from tests.licenses_service.conftest import Service, account, licensed_member
from tests.licenses_service.test_device_batches import BPC_PER_DEVICE, upload


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
