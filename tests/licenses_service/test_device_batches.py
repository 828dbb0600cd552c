"""Device batches through the HTTP API: upload, register on chain with the returned transactions,
confirmation by the indexer, and the resolver's answers checked against the contract."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import update
from web3.logs import DISCARD

from exchange.db.base import utc_now
from exchange.db.session import app_sessionmaker
from exchange.licenses import transactions
from exchange.licenses.device_ids import parse_canonical
from exchange.licenses.merkle import verify_proof
from exchange.licenses.models import DeviceBatch
from tests.licenses_service.conftest import BPC, Service, account, licensed_member

BPC_PER_DEVICE = 10**15
GTIN = "09506000134352"


def devices(count: int, prefix: str = "SN") -> list[str]:
    return [f"serial:acme:{prefix}{n}" for n in range(count)]


async def upload(service: Service, headers: dict[str, str], ids: list[str], **extra: Any) -> dict[str, Any]:
    reply = await service.client.post(
        "/v1/devices/batches",
        json={"bpc_per_device_wei": str(BPC_PER_DEVICE), "devices": ids, **extra},
        headers=headers,
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def registered_batch(
    service: Service, ids: list[str], member_index: int = 1
) -> tuple[dict[str, Any], dict[str, str]]:
    """A licensed manufacturer uploads `ids`, signs and sends the transactions; the indexer confirms."""
    manufacturer = account(member_index)
    licensed_member(service.pool, manufacturer)
    headers = await service.sign_in(manufacturer)
    body = await upload(service, headers, ids)
    service.send(manufacturer, body["transactions"])
    await service.catch_up()
    batch = (
        await service.client.get(f"/v1/devices/batches/{body['batch']['upload_id']}", headers=headers)
    ).json()
    assert batch["status"] == "confirmed", batch
    return batch, headers


def on_chain_status(service: Service, answer: dict[str, Any]) -> int:
    """What the contract itself says, from nothing but the answer (0 = Licensed)."""
    registry = service.w3.eth.contract(address=answer["registry"], abi=service.pool.devices.contract.abi)
    proof = [bytes.fromhex(node[2:]) for node in answer["proof"]]
    return int(
        registry.functions.deviceStatus(
            answer["batch_id"], answer["index"], bytes.fromhex(answer["id_hash"][2:]), proof
        ).call(block_identifier=answer["block"])
    )


async def uploaded_after_a_credited_block(
    service: Service, prefix: str
) -> tuple[LocalAccount, dict[str, str], dict[str, Any]]:
    """A licensed manufacturer's pending upload of three devices, made once the indexer has
    credited a block: a registration sent now stays past the credited block, uncredited, until
    the test catches up (the fixture's indexer loop is off)."""
    manufacturer = account(2)
    licensed_member(service.pool, manufacturer)
    headers = await service.sign_in(manufacturer)
    await service.catch_up()
    return manufacturer, headers, await upload(service, headers, devices(3, prefix=prefix))


def register(service: Service, manufacturer: LocalAccount, body: dict[str, Any]) -> tuple[int, int]:
    """Send the upload's transactions; the registration's batch id and block."""
    receipts = service.send(manufacturer, body["transactions"])
    events = service.pool.devices.contract.events.BatchRegistered()
    (registered,) = events.process_receipt(receipts[-1], errors=DISCARD)
    return registered["args"]["batchId"], receipts[-1]["blockNumber"]


def assert_awaiting_confirmation(reply: httpx.Response, batch_id: int, block: int) -> None:
    assert reply.status_code == 409, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    problem = reply.json()
    assert (problem["batch_id"], problem["block"]) == (batch_id, block)
    assert "registered on chain, awaiting confirmation" in problem["detail"]


async def make_stale(service: Service, upload_id: int) -> None:
    """Date pending upload `upload_id` 8 days back: past its lifetime (``licence_pending_upload_ttl_s``,
    by default 7 days), so that another upload of its ids may release it."""
    async with app_sessionmaker(service.app)() as session, session.begin():
        await session.execute(
            update(DeviceBatch)
            .where(DeviceBatch.id == upload_id)
            .values(created_at=utc_now() - timedelta(days=8))
        )


async def batch_state(service: Service, headers: dict[str, str], upload_id: int) -> tuple[str, int | None]:
    batch = (await service.client.get(f"/v1/devices/batches/{upload_id}", headers=headers)).json()
    return batch["status"], batch["batch_id"]


async def test_upload_register_confirm_resolve(licensing: Service) -> None:
    ids = [*devices(6), f"gs1:(01){GTIN}(21)A/1", "imei:352099001761481"]
    batch, _ = await registered_batch(licensing, ids)
    assert batch["device_count"] == 8
    assert batch["bpc_per_device_wei"] == str(BPC_PER_DEVICE)
    assert batch["batch_id"] == 1
    assert batch["registry"] == licensing.pool.devices.address

    for index, device_id in enumerate(ids):
        device = parse_canonical(device_id)
        reply = await licensing.client.get(f"/v1/devices/{device.scheme}/{device.canonical}")
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["status"] == "licensed"
        assert answer["index"] == index
        assert answer["manufacturer"] == account(1).address
        assert answer["id_hash"] == "0x" + device.id_hash.hex()
        assert answer["root"] == batch["root"]
        assert answer["chain_id"] == licensing.w3.eth.chain_id
        assert verify_proof(
            bytes.fromhex(answer["root"][2:]),
            index,
            device.id_hash,
            [bytes.fromhex(p[2:]) for p in answer["proof"]],
            batch["device_count"],
        )
        assert on_chain_status(licensing, answer) == 0


async def test_pending_batches_do_not_resolve(licensing: Service) -> None:
    manufacturer = account(1)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    body = await upload(licensing, headers, devices(3))
    assert body["batch"]["status"] == "pending"
    assert [tx["description"].split()[0] for tx in body["transactions"]] == ["allow", "register"]
    await licensing.catch_up()
    answer = (await licensing.client.get("/v1/devices/serial/acme:SN0")).json()
    assert answer["status"] == "unknown"
    assert answer["proof"] == []
    assert answer["manufacturer"] is None


@pytest.mark.parametrize("member_index", [1])
async def test_revocation_and_suspension_follow_the_chain(licensing: Service, member_index: int) -> None:
    ids = devices(5)
    batch, _ = await registered_batch(licensing, ids, member_index)
    devices_contract = licensing.pool.devices
    devices_contract.transact("revokeDevices", batch["batch_id"], [3])
    await licensing.catch_up()
    revoked = (await licensing.client.get("/v1/devices/serial/acme:SN3")).json()
    assert revoked["status"] == "revoked"
    assert on_chain_status(licensing, revoked) == 5  # Revoked
    assert (await licensing.client.get("/v1/devices/serial/acme:SN2")).json()["status"] == "licensed"

    devices_contract.transact("suspendBatch", batch["batch_id"])
    await licensing.catch_up()
    suspended = (await licensing.client.get("/v1/devices/serial/acme:SN3")).json()
    assert suspended["status"] == "suspended"  # suspension is checked before revocation, as on chain
    assert on_chain_status(licensing, suspended) == 4  # BatchSuspended
    devices_contract.transact("reinstateBatch", batch["batch_id"])
    await licensing.catch_up()
    assert (await licensing.client.get("/v1/devices/serial/acme:SN2")).json()["status"] == "licensed"


async def test_top_up_raises_bpc_per_device(licensing: Service) -> None:
    batch, _ = await registered_batch(licensing, devices(4))
    manufacturer = account(1).address
    licensing.pool.approve_bpc(licensing.pool.devices.address, 4 * BPC, sender=manufacturer)
    licensing.pool.devices.transact("topUp", batch["batch_id"], 5, sender=manufacturer)
    await licensing.catch_up()
    answer = (await licensing.client.get("/v1/devices/serial/acme:SN1")).json()
    assert answer["bpc_per_device_wei"] == str(BPC_PER_DEVICE + 5)


async def test_a_registration_whose_upload_was_withdrawn_is_adopted_by_the_same_upload_again(
    licensing: Service,
) -> None:
    """The upload is withdrawn after its registration was signed but before it was mined: the
    registration confirms nothing, and its later events (a revocation) find no batch. Uploading
    the same devices again adopts the batch: confirmed at once, nothing to sign, and the
    resolver answers what the contract says, revocation included."""
    ids = devices(4, prefix="AD")
    manufacturer = account(2)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    first = await upload(licensing, headers, ids)
    withdrawn = await licensing.client.delete(
        f"/v1/devices/batches/{first['batch']['upload_id']}", headers=headers
    )
    assert withdrawn.status_code == 204, withdrawn.text
    batch_id, _ = register(licensing, manufacturer, first)
    registry = licensing.pool.devices
    registry.transact("revokeDevices", batch_id, [2])
    await licensing.catch_up()
    unknown = (await licensing.client.get("/v1/devices/serial/acme:AD1")).json()
    assert unknown["status"] == "unknown"

    again = await upload(licensing, headers, ids)

    assert again["transactions"] == []
    assert (again["batch"]["status"], again["batch"]["batch_id"]) == ("confirmed", batch_id)
    licensed = (await licensing.client.get("/v1/devices/serial/acme:AD1")).json()
    assert licensed["status"] == "licensed"
    assert on_chain_status(licensing, licensed) == 0
    revoked = (await licensing.client.get("/v1/devices/serial/acme:AD2")).json()
    assert revoked["status"] == "revoked"
    assert on_chain_status(licensing, revoked) == 5


async def test_a_stale_pending_upload_gives_up_its_ids_and_pending_devices_are_capped(
    licensing: Service,
) -> None:
    """Another licensee's pending upload holds the ids until it is older than the pending TTL;
    then the upload that needs them deletes it. A manufacturer's pending devices are capped."""
    owner, squatter = account(3), account(4)
    for member in (owner, squatter):
        licensed_member(licensing.pool, member)
    owner_headers, squatter_headers = await licensing.sign_in(owner), await licensing.sign_in(squatter)
    ids = devices(3, prefix="ST")
    squatted = await upload(licensing, squatter_headers, ids)
    body = {"bpc_per_device_wei": str(BPC_PER_DEVICE), "devices": ids}
    refused = await licensing.client.post("/v1/devices/batches", json=body, headers=owner_headers)
    assert refused.status_code == 409, refused.text

    await make_stale(licensing, squatted["batch"]["upload_id"])
    await licensing.catch_up()  # credited up to the head: no block after it to look for a registration in
    owned = await upload(licensing, owner_headers, ids)
    assert owned["batch"]["device_count"] == 3
    gone = await licensing.client.get(
        f"/v1/devices/batches/{squatted['batch']['upload_id']}", headers=squatter_headers
    )
    assert gone.status_code == 404, gone.text

    settings = licensing.app.state.settings
    licensing.app.state.settings = settings.model_copy(update={"licence_pending_devices_max": 4})
    try:
        over = await licensing.client.post(
            "/v1/devices/batches",
            json={**body, "devices": devices(2, prefix="CAP")},
            headers=owner_headers,
        )
    finally:
        licensing.app.state.settings = settings
    assert over.status_code == 409, over.text
    assert (over.json()["pending_devices"], over.json()["limit"]) == (3, 4)


async def test_a_stale_upload_registered_on_chain_keeps_its_ids_until_the_indexer_confirms_it(
    licensing: Service,
) -> None:
    """The owner registered its upload on chain after the pending TTL, and the indexer has not
    credited that block yet: another licensee's upload of one of its ids does not release it."""
    owner, other = account(5), account(6)
    for member in (owner, other):
        licensed_member(licensing.pool, member)
    owner_headers, other_headers = await licensing.sign_in(owner), await licensing.sign_in(other)
    await licensing.catch_up()  # the indexer has a credited block
    ids = devices(3, prefix="RG")
    mine = await upload(licensing, owner_headers, ids)
    licensing.send(owner, mine["transactions"])  # registered on chain, not yet credited
    await make_stale(licensing, mine["batch"]["upload_id"])

    body = {"bpc_per_device_wei": str(BPC_PER_DEVICE), "devices": ids[:1]}
    refused = await licensing.client.post("/v1/devices/batches", json=body, headers=other_headers)
    assert refused.status_code == 409, refused.text
    assert refused.json()["taken"] == [{"item": 0, "device_id": ids[0]}]
    await licensing.catch_up()
    kept = await licensing.client.get(
        f"/v1/devices/batches/{mine['batch']['upload_id']}", headers=owner_headers
    )
    assert kept.json()["status"] == "confirmed", kept.text


async def test_a_registration_mined_but_not_yet_credited_is_not_offered_for_signing_again(
    licensing: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload's registerBatch is mined but the indexer has not credited its block yet
    (confirmations, or its next poll): asking for the upload's transactions again answers 409
    with the batch and block, and builds nothing, since a second registerBatch would register
    the root again and lock its BPC for good. The indexer then confirms the upload."""
    manufacturer, headers, body = await uploaded_after_a_credited_block(licensing, "MN")
    upload_id = body["batch"]["upload_id"]
    batch_id, block = register(licensing, manufacturer, body)

    built: list[tuple[Any, ...]] = []

    def build(*args: Any, **kwargs: Any) -> list[Any]:
        built.append(args)
        return []

    monkeypatch.setattr(transactions, "with_allowance", build)
    again = await licensing.client.post(f"/v1/devices/batches/{upload_id}/transactions", headers=headers)

    assert_awaiting_confirmation(again, batch_id, block)
    assert built == []
    await licensing.catch_up()
    assert await batch_state(licensing, headers, upload_id) == ("confirmed", batch_id)


async def test_an_upload_whose_registration_is_mined_but_not_yet_credited_cannot_be_withdrawn(
    licensing: Service,
) -> None:
    """Withdrawing the upload once its registerBatch is mined, before the indexer credits it,
    answers 409 with the batch and block: the upload stays pending, holding its devices (an
    upload of them again is refused), and the indexer confirms it."""
    manufacturer, headers, body = await uploaded_after_a_credited_block(licensing, "WD")
    upload_id = body["batch"]["upload_id"]
    batch_id, block = register(licensing, manufacturer, body)

    withdrawn = await licensing.client.delete(f"/v1/devices/batches/{upload_id}", headers=headers)

    assert_awaiting_confirmation(withdrawn, batch_id, block)
    assert await batch_state(licensing, headers, upload_id) == ("pending", None)
    again = await licensing.client.post(
        "/v1/devices/batches",
        json={"bpc_per_device_wei": str(BPC_PER_DEVICE), "devices": devices(3, prefix="WD")},
        headers=headers,
    )
    assert again.status_code == 409, again.text
    assert again.json()["taken_count"] == 3
    await licensing.catch_up()
    assert await batch_state(licensing, headers, upload_id) == ("confirmed", batch_id)


async def test_an_upload_again_of_a_registration_not_yet_credited_is_matched_to_it(
    licensing: Service,
) -> None:
    """The upload is withdrawn while its registerBatch waits to be mined; once mined, and before
    the indexer credits it, the same devices are uploaded again. The new upload offers nothing
    to sign (a second registration would lock the batch's BPC again), its transactions answer
    409, and the indexer confirms it with that registration."""
    manufacturer, headers, first = await uploaded_after_a_credited_block(licensing, "RU")
    withdrawn = await licensing.client.delete(
        f"/v1/devices/batches/{first['batch']['upload_id']}", headers=headers
    )
    assert withdrawn.status_code == 204, withdrawn.text
    batch_id, block = register(licensing, manufacturer, first)

    again = await upload(licensing, headers, devices(3, prefix="RU"))

    assert again["transactions"] == []
    assert (again["batch"]["status"], again["batch"]["root"]) == ("pending", first["batch"]["root"])
    upload_id = again["batch"]["upload_id"]
    asked = await licensing.client.post(f"/v1/devices/batches/{upload_id}/transactions", headers=headers)
    assert_awaiting_confirmation(asked, batch_id, block)
    await licensing.catch_up()
    assert await batch_state(licensing, headers, upload_id) == ("confirmed", batch_id)
    answer = (await licensing.client.get("/v1/devices/serial/acme:RU1")).json()
    assert (answer["status"], answer["batch_id"]) == ("licensed", batch_id)
    assert on_chain_status(licensing, answer) == 0


async def test_an_upload_id_is_never_given_again(licensing: Service) -> None:
    """The newest upload withdrawn, the next one gets a new id (SQLite would give the same rowid)."""
    manufacturer = account(1)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    first = (await upload(licensing, headers, devices(2, prefix="ID")))["batch"]["upload_id"]
    assert (await licensing.client.delete(f"/v1/devices/batches/{first}", headers=headers)).status_code == 204
    second = (await upload(licensing, headers, devices(2, prefix="ID")))["batch"]["upload_id"]
    assert second > first
