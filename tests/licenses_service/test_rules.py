"""Pure rules of the licensing service: certificate forms and checks, device lists, content negotiation."""

from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st

from exchange.kit.errors import ValidationFailed
from exchange.licenses.certificates import (
    Certificate,
    ChainFacts,
    InvalidCertificate,
    LicenceState,
    SignatureVerdict,
    check,
)
from exchange.licenses.pages import wants_html
from exchange.licenses.uploads import InvalidDeviceList, parse_csv, parse_json_list, parse_references

HOLDER = "0x" + "11" * 20
BPR = "0x" + "22" * 20
REGISTRY = "0x" + "33" * 20

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
certificates = st.builds(
    lambda chain_id, contract, holder, pool, statement, issued_at, term, nonce: Certificate(
        chain_id=chain_id,
        verifying_contract=contract,
        holder=holder,
        pool=pool,
        statement=statement,
        issued_at=issued_at,
        expires_at=issued_at + term,
        nonce=nonce,
    ),
    st.integers(1, 2**64 - 1),
    addresses,
    addresses,
    addresses,
    st.text(max_size=200),
    st.integers(0, 2**63),
    st.integers(1, 2**62),
    st.integers(0, 2**256 - 1),
)


@given(certificates, st.binary(max_size=200))
def test_compact_form_round_trips(certificate: Certificate, signature: bytes) -> None:
    text = certificate.to_compact(signature)
    assert text.startswith("BPCERT1:")
    assert Certificate.from_compact(text) == (certificate, signature)
    body = text.removeprefix("BPCERT1:")
    padded = "BPCERT1:" + body + "=" * (-len(body) % 4)  # as an encoder that pads writes it
    assert Certificate.from_compact(padded) == (certificate, signature)
    for damage in ("!", "+", " ", "=="):  # not of base64url, or padding before the end: refused
        with pytest.raises(ValidationFailed, match="not base64url"):
            Certificate.from_compact(text[:20] + damage + text[20:])


@given(certificates)
def test_typed_data_round_trips_with_numbers_as_strings(certificate: Certificate) -> None:
    typed = certificate.typed_data()
    assert Certificate.from_typed_data(typed) == certificate
    as_strings = {
        **typed,
        "domain": {**typed["domain"], "chainId": hex(certificate.chain_id)},
        "message": {
            **typed["message"],
            "nonce": str(certificate.nonce),
            "issuedAt": str(certificate.issued_at),
        },
    }
    assert Certificate.from_typed_data(as_strings) == certificate


def test_the_signature_covers_every_field() -> None:
    key = Account.create()
    base = Certificate(1, BPR, key.address, REGISTRY, "licensed", 10, 20, 1)
    signature = key.sign_message(base.signable()).signature
    for changed in (
        Certificate(2, BPR, key.address, REGISTRY, "licensed", 10, 20, 1),
        Certificate(1, BPR, key.address, REGISTRY, "licensed!", 10, 20, 1),
        Certificate(1, BPR, key.address, REGISTRY, "licensed", 10, 21, 1),
        Certificate(1, BPR, key.address, REGISTRY, "licensed", 10, 20, 2),
    ):
        assert Account.recover_message(changed.signable(), signature=signature) != key.address
    assert Account.recover_message(base.signable(), signature=signature) == key.address


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"expires_at": 10}, "after issuedAt"),
        ({"holder": "0x12"}, "not an address"),
        ({"holder": "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}, "EIP-55 checksum"),
        ({"chain_id": 0}, "chainId"),
        ({"statement": "x" * 1001}, "longer than"),
        ({"nonce": 2**256}, "uint256"),
    ],
)
def test_malformed_certificates(fields: dict[str, object], reason: str) -> None:
    values: dict[str, object] = {
        "chain_id": 1,
        "verifying_contract": BPR,
        "holder": HOLDER,
        "pool": REGISTRY,
        "statement": "s",
        "issued_at": 10,
        "expires_at": 20,
        "nonce": 1,
        **fields,
    }
    with pytest.raises(InvalidCertificate, match=reason):
        Certificate(**values)  # type: ignore[arg-type]


def facts(**changes: object) -> ChainFacts:
    values: dict[str, object] = {
        "chain_id": 1,
        "bpr": Certificate(1, BPR, HOLDER, REGISTRY, "", 0, 1, 0).verifying_contract,
        "registry": Certificate(1, BPR, HOLDER, REGISTRY, "", 0, 1, 0).pool,
        "block_number": 100,
        "block_timestamp": 15,
        "licence_kind": LicenceState.LOCKED,
        "licence_expires_at": 0,
        "licensed": True,
        "licence_since_block": 50,
        **changes,
    }
    return ChainFacts(**values)  # type: ignore[arg-type]


def test_check_reports_each_reason_and_only_those() -> None:
    certificate = Certificate(1, BPR, HOLDER, REGISTRY, "s", 10, 20, 1)
    assert check(certificate, SignatureVerdict.VALID, HOLDER, facts()) == []
    cases = {
        "bad_signature": (SignatureVerdict.MALFORMED, facts()),
        "signer_not_holder": (SignatureVerdict.OTHER_SIGNER, facts()),
        "wrong_chain": (SignatureVerdict.VALID, facts(chain_id=5)),
        "not_yet_valid": (SignatureVerdict.VALID, facts(block_timestamp=9)),
        "expired": (SignatureVerdict.VALID, facts(block_timestamp=20)),
        "holder_not_licensed": (
            SignatureVerdict.VALID,
            facts(licensed=False, licence_kind=LicenceState.NONE),
        ),
        "fee_licence_expired": (SignatureVerdict.VALID, facts(licensed=False, licence_kind=LicenceState.FEE)),
    }
    for code, (verdict, chain) in cases.items():
        assert [reason.code for reason in check(certificate, verdict, None, chain)] == [code]
    # The validity window is [issuedAt, expiresAt): valid at issuedAt, expired at expiresAt.
    assert check(certificate, SignatureVerdict.VALID, HOLDER, facts(block_timestamp=10)) == []


def test_json_lists_and_csv_give_the_same_devices() -> None:
    from_json = parse_json_list(["imei:352099001761481", {"scheme": "serial", "id": "Acme:SN1"}])
    from_csv = parse_csv("device_id,scheme\n352099001761481,imei\nAcme:SN1,serial\n")
    assert from_json == from_csv
    assert [device.canonical for device in from_csv] == ["imei:352099001761481", "serial:acme:SN1"]


def test_a_refused_entry_is_named_by_its_first_items_not_written_out_whole() -> None:
    """An entry of a million items is named as reprlib abbreviates it: its text costs what those do."""
    with pytest.raises(InvalidDeviceList) as caught:
        parse_json_list([[[]] * 1_000_000, {"note": "x" * 1_000}])
    assert [error.input for error in caught.value.errors] == [
        "[[], [], [], [], [], [], ...]",
        "{'note': 'xxxxxxxxxxxx...xxxxxxxxxxxxx'}",
    ]


def test_device_lists_report_up_to_a_hundred_errors_with_the_total() -> None:
    text = "device_id\n" + "".join(f"imei:{n}\n" for n in range(150))
    with pytest.raises(InvalidDeviceList) as caught:
        parse_csv(text)
    assert caught.value.total == 150
    assert len(caught.value.errors) == 100
    assert caught.value.errors[0].line == 2
    with pytest.raises(InvalidDeviceList, match="no device_id column"):
        parse_csv("serial\nx\n")
    with pytest.raises(InvalidDeviceList, match="no device"):
        parse_json_list([])
    with pytest.raises(InvalidDeviceList, match="JSON list"):
        parse_json_list({"devices": []})


def test_queries_name_devices_by_prefix_or_link() -> None:
    devices = parse_references(["https://id.example.org/imei/352099001761481", "imei:35-209900-176148-1"])
    assert devices[0] == devices[1]
    with pytest.raises(InvalidDeviceList):
        parse_references(["352099001761481"])  # no scheme


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("text/html", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json;q=0.9, text/html", True),
        ("text/html;q=0.5, application/json", False),
        ("text/html;q=0", False),
        ("text/html, application/json", False),
    ],
)
def test_content_negotiation(accept: str | None, html: bool) -> None:
    assert wants_html(accept) is html
