"""A JSON device upload is refused by its count of parser events before json.loads decodes it:
what decoding builds follows the values, not the bytes."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from exchange.kit.errors import ValidationFailed
from exchange.licenses import uploads
from exchange.licenses.uploads import TooManyDevices, check_json_size


def _body(entries: list[object], **fields: object) -> bytes:
    return json.dumps({"bpc_per_device_wei": "1", **fields, "devices": entries}).encode()


@pytest.mark.parametrize(
    "entry",
    [
        "imei:352099001761481",
        {"scheme": "imei", "id": "352099001761481"},
        {"scheme": "imei", "id": "352099001761481", **{f"note{index}": "x" for index in range(13)}},
        "gs1:(01)09506000134352(21),,,,,,,,,,,,,,,,,,,,",  # commas in a serial are no values
        'gs1:(01)09506000134352(21)"[{}]"',
    ],
    ids=["string", "object", "object with thirteen keys more", "commas", "quotes and brackets"],
)
def test_an_upload_of_as_many_devices_as_allowed_passes(entry: object) -> None:
    check_json_size(_body([entry] * 1_000), max_devices=1_000)


def test_an_entry_of_more_keys_than_room_is_left_for_counts_against_the_limit() -> None:
    heavy = {"scheme": "imei", "id": "352099001761481", **{f"note{index}": "x" for index in range(20)}}
    with pytest.raises(TooManyDevices) as refused:
        check_json_size(_body([heavy] * 1_000), max_devices=1_000)
    assert refused.value.detail == "the body holds more JSON values than an upload of at most 1000 devices"
    assert refused.value.extra == {"limit": 1_000}


def test_a_body_of_tiny_containers_is_refused_before_anything_is_built() -> None:
    """A million empty lists (3 MB) decode to some 60 MB of lists; counted, the count stops at
    the limit having built a buffer's events at most."""
    raw = b'{"devices": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
    tracemalloc.start()
    try:
        with pytest.raises(TooManyDevices):
            check_json_size(raw, max_devices=1_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, peak


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbf" + _body(["imei:352099001761481"]),
        _body(["imei:352099001761481"]).decode().encode("utf-16"),
        _body(["imei:352099001761481"], note=float("nan")),
        b'{"devices": ["serial:acme:\\udc00"]}',
        b"{",
    ],
    ids=["byte-order mark", "UTF-16", "NaN", "lone low surrogate", "not JSON"],
)
def test_a_small_body_yajl_cannot_read_is_left_to_json_loads(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """json.loads reads what it reads (a BOM, UTF-16, NaN) and refuses the rest as before; past
    the size up to which that is allowed, the body is refused with what yajl said."""
    check_json_size(raw, max_devices=1)
    monkeypatch.setattr(uploads, "UNCOUNTED_MAX_BYTES", len(raw) - 1)
    with pytest.raises(ValidationFailed, match="the body is not JSON that can be counted"):
        check_json_size(raw, max_devices=1)
