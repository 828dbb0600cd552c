"""Ids, cursors and dates beyond what the tables hold are refused with a 422, never a database error."""

from __future__ import annotations

import base64
import json

from exchange.api.dependencies import ROW_ID_MAX
from tests.pool_service.conftest import Foundation


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _assert_refused(reply: object) -> None:
    status = reply.status_code  # type: ignore[attr-defined]
    assert status == 422, reply.text  # type: ignore[attr-defined]
    assert reply.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]


async def test_row_ids_beyond_the_integer_keys_are_refused(foundation: Foundation) -> None:
    client = foundation.client
    for row_id in (ROW_ID_MAX + 1, 2**63, 0):
        for method, path, headers in (
            ("GET", f"/v1/admin/royalties/runs/{row_id}", foundation.council),
            ("POST", f"/v1/admin/royalties/runs/{row_id}/pay", foundation.council),
            ("GET", f"/v1/admin/royalties/runs/{row_id}/statements", foundation.council),
            ("GET", f"/v1/royalties/runs/{row_id}/statement", foundation.outsider),
            ("GET", f"/v1/admin/membership/applications/{row_id}", foundation.council),
            ("POST", f"/v1/admin/pool/mints/{row_id}/process", foundation.registrar),
        ):
            _assert_refused(await client.request(method, path, headers=headers))
    # In range and unknown: the usual 404.
    known = await client.get(f"/v1/admin/royalties/runs/{ROW_ID_MAX}", headers=foundation.council)
    assert known.status_code == 404, known.text


async def test_integer_cursors_beyond_the_keys_are_refused(foundation: Foundation) -> None:
    client = foundation.client
    for value in (ROW_ID_MAX + 1, 10**20, 0, -5):
        for path, headers in (
            ("/v1/admin/audit", foundation.council),
            ("/v1/admin/membership/applications", foundation.registrar),
            ("/v1/admin/pool/mints", foundation.registrar),
        ):
            _assert_refused(await client.get(path, params={"cursor": _cursor(value)}, headers=headers))


async def test_text_cursors_with_unencodable_text_are_refused(foundation: Foundation) -> None:
    reply = await foundation.client.get(
        "/v1/admin/members", params={"cursor": _cursor("\ud800")}, headers=foundation.registrar
    )
    _assert_refused(reply)


async def test_a_period_ending_on_the_last_representable_day_is_refused(foundation: Foundation) -> None:
    reply = await foundation.client.post(
        "/v1/admin/royalties/runs",
        json={"period_id": "far", "starts_on": "9999-12-01", "ends_on": "9999-12-31"},
        headers=foundation.council,
    )
    _assert_refused(reply)
