"""A JSON device upload is read as a stream: what an allowed upload holds, and no more, is built."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.kit.errors import ValidationFailed
from exchange.licenses.uploads import InvalidDeviceList, TooManyDevices, parse_json_list, read_json_upload

_text = st.text(max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), _text)
_entry = st.one_of(_text, st.dictionaries(_text, _scalar, max_size=3))


@given(
    devices=st.lists(_entry, max_size=20),
    others=st.dictionaries(_text.filter(lambda key: key != "devices"), _scalar, max_size=3),
)
def test_flat_entries_and_scalar_fields_read_as_json_loads_reads_them(
    devices: list[object], others: dict[str, Any]
) -> None:
    raw = json.dumps({**others, "devices": devices}).encode()
    upload = read_json_upload(raw, max_devices=20)
    assert upload.devices == devices
    assert {key: _plain(value) for key, value in upload.fields.items()} == others


def _plain(value: object) -> object:
    """A field as json.loads gives it (the reader names numbers as written)."""
    return json.loads(repr(value)) if type(value).__name__ == "_Shown" else value


def test_containers_are_named_not_built_and_the_last_of_a_repeated_key_counts() -> None:
    raw = (
        b'{"devices": "first", "extra": {"deep": [1, [2, {"x": 3}]]}, "devices": '
        b'[[1, [2]], {"id": "imei:1", "scheme": {"a": [1]}}, 1.50, 1e3, 7, null, "serial:acme:1"]}'
    )
    upload = read_json_upload(raw, max_devices=10)
    assert isinstance(upload.devices, list)
    assert [repr(entry) for entry in upload.devices] == [
        "[…]",
        "{'id': 'imei:1', 'scheme': {…}}",
        "1.50",
        "1E+3",
        "7",
        "None",
        "'serial:acme:1'",
    ]
    assert repr(upload.fields["extra"]) == "{…}"
    with pytest.raises(InvalidDeviceList) as refused:
        parse_json_list(upload.devices)
    assert [error.item for error in refused.value.errors] == [0, 1, 2, 3, 4, 5]
    assert [error.input for error in refused.value.errors][:4] == ["[…]", "imei:1", "1.50", "1E+3"]


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"", "the body is not JSON (parse error: premature EOF)"),
        (b'{"devices": []} {}', "the body is not JSON (parse error: trailing garbage)"),
        (b'{"devices": ["\xff"]}', "the body is not JSON (lexical error: invalid bytes in UTF8 string.)"),
        (b'["serial:acme:1"]', 'the body is {"bpc_per_device_wei": "...", "devices": [...]}'),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(raw: bytes, detail: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        read_json_upload(raw, max_devices=10)
    assert refused.value.detail == detail


def test_a_list_longer_than_allowed_is_refused_before_the_rest_is_built() -> None:
    """A million empty lists (3 MB) decode to some 60 MB of lists; the reader stops at the
    1,001st entry, holding little more than the events of one buffer it parsed."""
    raw = b'{"devices": [' + b",".join([b"[]"] * 1_000_000) + b"]}"
    tracemalloc.start()
    try:
        with pytest.raises(TooManyDevices) as refused:
            read_json_upload(raw, max_devices=1_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.extra == {"limit": 1_000}
    assert peak < 8_000_000, peak


def test_a_body_of_more_values_than_an_allowed_upload_is_refused_as_they_are_met() -> None:
    """Values in entries or other keys are read past, not built; their count is still bounded."""
    many = b'{"bpc_per_device_wei": "1", "padding": [' + b",".join([b"0"] * 200) + b'], "devices": []}'
    with pytest.raises(TooManyDevices) as refused:
        read_json_upload(many, max_devices=10)
    assert refused.value.detail == "the body holds more JSON values than an upload of at most 10 devices"
    assert read_json_upload(many, max_devices=100).devices == []
