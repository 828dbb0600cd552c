"""A JSON device upload is refused by its count of values before it is decoded: what decoding
builds follows that count, not the body's size."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from exchange.licenses.uploads import VALUES_PER_DEVICE, TooManyDevices, check_json_values


def _body(entries: list[object]) -> bytes:
    return json.dumps({"bpc_per_device_wei": "1", "scheme": "imei", "devices": entries}).encode()


@pytest.mark.parametrize(
    "entry",
    [
        "imei:352099001761481",
        {"scheme": "imei", "id": "352099001761481"},
        {"scheme": "imei", "id": "352099001761481", "note": "a key more"},
    ],
    ids=["string", "object", "object with a key more"],
)
def test_an_upload_of_as_many_devices_as_allowed_passes(entry: object) -> None:
    check_json_values(_body([entry] * 1_000), max_devices=1_000)
    with pytest.raises(TooManyDevices) as refused:
        check_json_values(_body([entry] * 1_000), max_devices=1_000 // VALUES_PER_DEVICE - 20)
    assert refused.value.detail.startswith("the body holds more JSON values than an upload of at most")


def test_a_body_of_tiny_containers_is_refused_before_anything_is_built() -> None:
    """A million empty lists (3 MB) decode to some 60 MB of lists; counted, they build nothing."""
    raw = b'{"devices": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
    tracemalloc.start()
    try:
        with pytest.raises(TooManyDevices) as refused:
            check_json_values(raw, max_devices=1_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.extra == {"limit": 1_000}
    assert peak < 100_000, peak


def test_commas_in_strings_count_and_the_limit_has_room_for_them() -> None:
    """A GS1 serial may hold commas: counted as values, within the room an upload has."""
    serials = [f"gs1:(01)09506000134352(21)A,B,{index}" for index in range(1_000)]
    check_json_values(_body(serials), max_devices=1_000)
