"""Upload ids and offsets beyond what the tables hold are refused with a 422, never a database error."""

from __future__ import annotations

from exchange.api.dependencies import ROW_ID_MAX
from exchange.licenses.batches import MAX_BATCH_DEVICES
from tests.licenses_service.conftest import Service, account


async def test_upload_ids_beyond_the_integer_keys_are_refused(licensing: Service) -> None:
    headers = await licensing.sign_in(account(3))
    for upload_id in (ROW_ID_MAX + 1, 2**64, 0):
        for method, path in (
            ("GET", f"/v1/devices/batches/{upload_id}"),
            ("DELETE", f"/v1/devices/batches/{upload_id}"),
            ("GET", f"/v1/devices/batches/{upload_id}/transactions"),
            ("GET", f"/v1/devices/batches/{upload_id}/devices"),
            ("GET", f"/v1/devices/batches/{upload_id}/tree"),
        ):
            reply = await licensing.client.request(method, path, headers=headers)
            assert reply.status_code == 422, (path, reply.text)
            assert reply.headers["content-type"].startswith("application/problem+json")
    unknown = await licensing.client.get(f"/v1/devices/batches/{ROW_ID_MAX}", headers=headers)
    assert unknown.status_code == 404, unknown.text


async def test_device_offsets_beyond_any_batch_are_refused(licensing: Service) -> None:
    headers = await licensing.sign_in(account(3))
    reply = await licensing.client.get(
        "/v1/devices/batches/1/devices", params={"offset": MAX_BATCH_DEVICES + 1}, headers=headers
    )
    assert reply.status_code == 422, reply.text
