"""A JSON device upload is decoded in a worker process within a memory limit, and only what it
names comes back."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

from exchange.kit.errors import ValidationFailed
from exchange.licenses.device_ids import MAX_INPUT_LENGTH
from exchange.licenses.json_uploads import (
    Decoded,
    UploadTooLarge,
    _limit_memory,
    decode,
    decode_upload,
    entries_of,
)
from exchange.licenses.uploads import InvalidDeviceList, TooManyDevices, collect

REFUSED = 'an entry is a device id string or {"scheme": ..., "id": ...}'


def _body(devices: object, **fields: object) -> bytes:
    return json.dumps({"bpc_per_device_wei": "5", **fields, "devices": devices}).encode()


def test_entries_come_back_flat_with_their_schemes_and_the_amount() -> None:
    decoded = decode(
        _body(
            [
                "imei:352099001761481",
                {"scheme": "serial", "id": "Acme:SN1", "note": "ignored"},
                {"id": "acme:SN2"},
                {"id": "acme:SN3", "scheme": 7},
                [1, [2]],
                "x" * 1_000,
            ],
            scheme="serial",
        ),
        None,
        None,
        10,
    )
    assert decoded.amount == "5"
    assert decoded.entries == [
        ("imei:352099001761481", "serial", None),
        ("Acme:SN1", "serial", None),
        ("acme:SN2", "serial", None),  # the body's default scheme
        ("acme:SN3", None, None),  # a scheme that is no string names none
        ("[1, [2]]", None, REFUSED),
        ("x" * (MAX_INPUT_LENGTH + 1), "serial", None),  # cut: its check refuses it as too long
    ]
    with pytest.raises(InvalidDeviceList) as refused:
        collect(entries_of(decoded, 10))
    assert [error.item for error in refused.value.errors] == [0, 3, 4, 5]


def test_the_query_names_what_the_body_does_not() -> None:
    decoded = decode(json.dumps({"devices": ["acme:1"]}).encode(), "serial", "7", 10)
    assert (decoded.entries, decoded.amount) == ([("acme:1", "serial", None)], "7")
    assert decode(_body(["acme:1"], bpc_per_device_wei=5), None, "7", 10).amount is None  # a number


@pytest.mark.parametrize(
    ("raw", "refusal"),
    [
        (b"{", ValidationFailed),
        (b'["acme:1"]', ValidationFailed),
        (b'{"devices": {"a": 1}}', InvalidDeviceList),
        (_body(["serial:acme:1"] * 11), TooManyDevices),
    ],
)
def test_a_body_that_is_no_upload_is_refused(raw: bytes, refusal: type[Exception]) -> None:
    with pytest.raises(refusal):
        entries_of(decode(raw, None, None, 10), 10)


def test_json_is_read_as_json_loads_reads_it() -> None:
    """A byte-order mark, UTF-16, commas in a GS1 serial: an upload; a lone surrogate stays itself
    (and is refused as no ASCII), never replaced by another character."""
    serial = "gs1:(01)09506000134352(21)A,,,,,,,,,,,,B"
    assert decode(b"\xef\xbb\xbf" + _body([serial]), None, None, 1).entries == [(serial, None, None)]
    assert decode(_body([serial]).decode().encode("utf-16"), None, None, 1).entries == [(serial, None, None)]
    lone = decode(b'{"devices": ["serial:acme:\\ud800"]}', None, None, 1)
    with pytest.raises(InvalidDeviceList):
        collect(entries_of(lone, 1))


def test_a_body_too_large_to_decode_within_the_limit_is_refused_in_the_worker() -> None:
    """Three million empty lists (9 MB) decode to some 200 MB: past a 64 MiB limit, the worker
    answers that the upload is too large, and goes on to decode the next."""
    bomb = b'{"devices": [' + b",".join([b"[]"] * 3_000_000) + b"]}"
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        1, mp_context=context, initializer=_limit_memory, initargs=(64 * 1024**2,)
    ) as pool:
        refused = pool.submit(decode, bomb, None, None, 1_000_000).result()
        after = pool.submit(decode, _body(["serial:acme:1"]), None, None, 1).result()
    with pytest.raises(UploadTooLarge):
        entries_of(refused, 1_000_000)
    assert after == Decoded(entries=[("serial:acme:1", None, None)], amount="5")


async def test_the_service_decodes_in_its_worker() -> None:
    decoded = await decode_upload(
        _body(["serial:acme:1", "serial:acme:2"]), scheme_query=None, amount_query=None, max_devices=2
    )
    assert [device.canonical for device in collect(entries_of(decoded, 2))] == [
        "serial:acme:1",
        "serial:acme:2",
    ]
