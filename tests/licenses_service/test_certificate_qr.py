"""The certificate QR code's size limit: a PNG's pixels cost the server drawing time."""

from __future__ import annotations

from exchange.licenses.routes import MAX_QR_PNG_SIDE_PX
from tests.licenses_service.conftest import Service, account
from tests.licenses_service.test_certificates import certificate, signed


async def test_a_png_larger_than_the_limit_is_refused_and_an_svg_is_not(licensing: Service) -> None:
    holder = account(1)
    largest = 40  # the schema's largest module_px
    # A long statement makes a large symbol: at 40 pixels a module it is too many pixels.
    long = signed(holder, certificate(licensing, holder.address, statement="s" * 900))
    refused = await licensing.client.post(
        "/v1/licences/certificates/qr", json={**long, "format": "png", "module_px": largest}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["field"] == "module_px"
    assert f"more than {MAX_QR_PNG_SIDE_PX}" in problem["detail"]

    smaller = await licensing.client.post(
        "/v1/licences/certificates/qr", json={**long, "format": "png", "module_px": 8}
    )
    assert smaller.status_code == 200, smaller.text
    assert smaller.headers["content-type"] == "image/png"
    svg = await licensing.client.post("/v1/licences/certificates/qr", json={**long, "module_px": largest})
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"] == "image/svg+xml"
