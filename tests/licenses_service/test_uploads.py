"""Batch uploads are all or nothing: every bad entry located by line (CSV) or item (JSON), nothing stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exchange.licenses import batches
from exchange.licenses.merkle import MerkleTree
from exchange.licenses.uploads import parse_csv
from tests.licenses_service.conftest import BPC, Service, account, licensed_member
from tests.licenses_service.test_device_batches import BPC_PER_DEVICE, upload


async def my_batches(service: Service, headers: dict[str, str]) -> list[dict[str, Any]]:
    reply = await service.client.get("/v1/devices/batches", headers=headers)
    assert reply.status_code == 200
    batches: list[dict[str, Any]] = reply.json()
    return batches


async def manufacturer_headers(service: Service, index: int = 1) -> dict[str, str]:
    licensed_member(service.pool, account(index))
    return await service.sign_in(account(index))


async def test_csv_upload_reports_every_bad_line_and_stores_nothing(licensing: Service) -> None:
    headers = await manufacturer_headers(licensing)
    csv_text = (
        "scheme,device_id,colour\n"
        "imei,352099001761481,red\n"
        "imei,352099001761482,red\n"  # line 3: wrong check digit
        "serial,acme:SN-1,blue\n"
        "\n"
        "gs1,(01)09506000134352(21)ABC,blue\n"
        "serial,ACME:SN-1,green\n"  # line 7: the same device as line 4 (namespaces are lower-cased)
        "fax,123,green\n"  # line 8: no such scheme
    )
    reply = await licensing.client.post(
        "/v1/devices/batches",
        content=csv_text.encode(),
        params={"bpc_per_device_wei": str(BPC_PER_DEVICE)},
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    assert problem["error_count"] == 3
    assert [error["line"] for error in problem["errors"]] == [3, 7, 8]
    assert "check digit" in problem["errors"][0]["reason"]
    assert "listed twice (first at line 4)" in problem["errors"][1]["reason"]
    assert "unknown scheme" in problem["errors"][2]["reason"]
    assert await my_batches(licensing, headers) == []

    good = "\n".join(csv_text.splitlines()[:2] + csv_text.splitlines()[3:4] + csv_text.splitlines()[5:6])
    accepted = await licensing.client.post(
        "/v1/devices/batches",
        content=good.encode(),
        params={"bpc_per_device_wei": str(BPC_PER_DEVICE)},
        headers={**headers, "Content-Type": "text/csv; charset=utf-8"},
    )
    assert accepted.status_code == 201, accepted.text
    devices = parse_csv(good)
    assert (
        accepted.json()["batch"]["root"] == "0x" + MerkleTree.build([d.id_hash for d in devices]).root.hex()
    )
    assert accepted.json()["batch"]["device_count"] == 3


async def test_json_upload_locates_errors_by_item(licensing: Service) -> None:
    headers = await manufacturer_headers(licensing)
    reply = await licensing.client.post(
        "/v1/devices/batches",
        json={
            "bpc_per_device_wei": str(BPC_PER_DEVICE),
            "devices": [
                "serial:acme:1",
                "acme:2",
                7,
                {"scheme": "imei", "id": "35-209900-176148-1"},
                "imei:1",
            ],
        },
        headers=headers,
    )
    assert reply.status_code == 422
    errors = reply.json()["errors"]
    assert [error["item"] for error in errors] == [1, 2, 4]
    assert "prefix" in errors[0]["reason"]
    # A default scheme names the scheme of unprefixed strings.
    body = await upload(licensing, headers, ["acme:1", "acme:2"], scheme="serial")
    assert body["batch"]["device_count"] == 2


async def test_an_upload_of_a_namespace_that_is_a_link_path_key_is_refused(licensing: Service) -> None:
    """``serial:imei:352099001761481`` would be labelled with the Digital Link of the IMEI device
    ``imei:352099001761481``: namespaces that are path keys are refused, and nothing is stored."""
    headers = await manufacturer_headers(licensing)
    ids = ["serial:acme:1", "serial:imei:352099001761481", "serial:21:SN-1"]
    reply = await upload_raw(licensing, headers, ids, str(BPC_PER_DEVICE))
    assert reply.status_code == 422, reply.text
    errors = reply.json()["errors"]
    assert [error["item"] for error in errors] == [1, 2]
    assert all("is reserved" in error["reason"] for error in errors)
    assert await my_batches(licensing, headers) == []


async def test_device_ids_belong_to_one_batch(licensing: Service) -> None:
    headers = await manufacturer_headers(licensing)
    first = await upload(licensing, headers, ["serial:acme:1", "serial:acme:2"])
    reply = await licensing.client.post(
        "/v1/devices/batches",
        json={"bpc_per_device_wei": "1", "devices": ["serial:acme:3", "serial:acme:2"]},
        headers=headers,
    )
    assert reply.status_code == 409
    assert reply.json()["taken"] == [{"item": 1, "device_id": "serial:acme:2"}]
    assert len(await my_batches(licensing, headers)) == 1
    # Withdrawing the pending batch frees its ids.
    withdrawn = await licensing.client.delete(
        f"/v1/devices/batches/{first['batch']['upload_id']}", headers=headers
    )
    assert withdrawn.status_code == 204
    await upload(licensing, headers, ["serial:acme:3", "serial:acme:2"])


async def test_only_licensed_funded_manufacturers_upload(licensing: Service) -> None:
    stranger = account(2)
    headers = await licensing.sign_in(stranger)
    refused = await upload_raw(licensing, headers, ["serial:acme:1"], str(BPC_PER_DEVICE))
    assert refused.status_code == 403
    assert "BPR" in refused.json()["detail"]
    anonymous = await upload_raw(licensing, {}, ["serial:acme:1"], "1")
    assert anonymous.status_code == 401

    headers = await manufacturer_headers(licensing)
    poor = await upload_raw(licensing, headers, ["serial:acme:1", "serial:acme:2"], str(10_000 * BPC))
    assert poor.status_code == 409
    assert poor.json()["needed_wei"] == str(20_000 * BPC)
    zero = await upload_raw(licensing, headers, ["serial:acme:1"], "0")
    assert zero.status_code == 422
    licensing.pool.devices.transact("setMinBpcPerDevice", 1000)
    low = await upload_raw(licensing, headers, ["serial:acme:1"], "999")
    assert low.status_code == 422
    assert low.json()["minimum_wei"] == "1000"
    assert await my_batches(licensing, headers) == []


async def test_suspended_and_expelled_members_register_no_devices(licensing: Service) -> None:
    """A suspended member keeps its BPR, but DeviceLicenses refuses its registrations: its upload
    is refused before the body is read, and so are its pending upload's transactions, until it is
    reinstated. An expelled member is refused the same way."""
    manufacturer = account(1).address
    headers = await manufacturer_headers(licensing)
    pending = await upload(licensing, headers, ["serial:acme:1"])
    upload_id = pending["batch"]["upload_id"]
    licensing.pool.suspend(manufacturer)
    assert licensing.pool.is_licensed(manufacturer)

    unread = await licensing.client.post(
        "/v1/devices/batches", content=b"[" * 100, headers={**headers, "Content-Type": "application/json"}
    )
    transactions = await licensing.client.post(
        f"/v1/devices/batches/{upload_id}/transactions", headers=headers
    )
    for refused in (unread, transactions):
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["member_status"] == "suspended"
        assert "suspended pool member" in refused.json()["detail"]

    licensing.pool.reinstate(manufacturer)
    await upload(licensing, headers, ["serial:acme:2"])
    licensing.pool.expel(manufacturer)
    expelled = await upload_raw(licensing, headers, ["serial:acme:3"], str(BPC_PER_DEVICE))
    assert expelled.status_code == 403, expelled.text
    assert expelled.json()["member_status"] == "expelled"
    assert len(await my_batches(licensing, headers)) == 2


async def upload_raw(service: Service, headers: dict[str, str], ids: list[str], amount: str) -> Any:
    return await service.client.post(
        "/v1/devices/batches", json={"bpc_per_device_wei": amount, "devices": ids}, headers=headers
    )


async def test_batches_are_private_to_their_manufacturer(licensing: Service) -> None:
    headers = await manufacturer_headers(licensing, 1)
    body = await upload(licensing, headers, ["serial:acme:1", "serial:acme:2", "serial:acme:3"])
    upload_id = body["batch"]["upload_id"]
    other = await manufacturer_headers(licensing, 2)
    for path in ("", "/devices", "/tree"):
        assert (
            await licensing.client.get(f"/v1/devices/batches/{upload_id}{path}", headers=other)
        ).status_code == 404
    listed = (
        await licensing.client.get(f"/v1/devices/batches/{upload_id}/devices?offset=1", headers=headers)
    ).json()
    assert listed["device_ids"] == ["serial:acme:2", "serial:acme:3"]
    tree = (await licensing.client.get(f"/v1/devices/batches/{upload_id}/tree", headers=headers)).content
    assert "0x" + MerkleTree.from_bytes(tree).root.hex() == body["batch"]["root"]
    again = await licensing.client.post(f"/v1/devices/batches/{upload_id}/transactions", headers=headers)
    assert again.status_code == 200
    assert [tx["data"] for tx in again.json()] == [tx["data"] for tx in body["transactions"]]


async def test_an_upload_is_refused_before_its_list_is_read(
    licensing: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No licence: refused before the body is parsed. A list longer than a batch: refused at its
    first entry too many, before any entry is judged. A body nested too deeply: a 422, not a
    crash."""
    stranger = await licensing.sign_in(account(2))
    unread = await licensing.client.post(
        "/v1/devices/batches", content=b"[" * 100, headers={**stranger, "Content-Type": "application/json"}
    )
    assert unread.status_code == 403, unread.text

    headers = await manufacturer_headers(licensing)
    json_headers = {**headers, "Content-Type": "application/json"}
    deep = b'{"bpc_per_device_wei": "1", "devices": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    nested = await licensing.client.post("/v1/devices/batches", content=deep, headers=json_headers)
    assert nested.status_code == 422, nested.text
    assert nested.headers["content-type"].startswith("application/problem+json")
    assert nested.json()["detail"] == "the body is not JSON, or nests too deeply"

    monkeypatch.setattr(batches, "MAX_BATCH_DEVICES", 3)
    too_long_json = await upload_raw(
        licensing, headers, ["serial:acme:1", "serial:acme:2", "serial:acme:3", "not a device"], "1"
    )
    too_long_csv = await licensing.client.post(
        "/v1/devices/batches",
        content=b"device_id\nserial:acme:1\nserial:acme:2\nserial:acme:3\nnot a device\n",
        params={"bpc_per_device_wei": "1"},
        headers={**headers, "Content-Type": "text/csv"},
    )
    for reply in (too_long_json, too_long_csv):
        assert reply.status_code == 413, reply.text
        assert reply.json()["limit"] == 3

    bom = await licensing.client.post(  # as json.loads reads it: a byte-order mark is no refusal
        "/v1/devices/batches",
        content=b"\xef\xbb\xbf" + json.dumps({"bpc_per_device_wei": "1", "devices": []}).encode(),
        headers=json_headers,
    )
    assert bom.status_code == 422, bom.text
    assert bom.json()["errors"][0]["reason"] == "the list holds no device"
    assert await my_batches(licensing, headers) == []


async def test_an_escaped_lone_surrogate_is_refused_never_read_as_another_character(
    licensing: Service,
) -> None:
    """yajl, which counts a JSON upload's values, reads ``\\ud800`` as ``?``, a character GS1
    serials may hold: the upload is decoded by json.loads, whose id is refused as no ASCII."""
    headers = await manufacturer_headers(licensing)
    reply = await licensing.client.post(
        "/v1/devices/batches",
        content=b'{"bpc_per_device_wei": "1", "devices": ["gs1:(01)09506000134352(21)A\\ud800"]}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["type"].endswith("/invalid-device-list")
    assert await my_batches(licensing, headers) == []
