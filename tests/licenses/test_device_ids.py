"""Device ids: one canonical form per scheme, check digits, Digital Link URIs."""

from __future__ import annotations

import httpx
import pytest
from eth_utils.crypto import keccak
from hypothesis import assume, given
from hypothesis import strategies as st

from exchange.kit.errors import ValidationFailed
from exchange.licenses.device_ids import (
    LINK_PATH_MAX_LENGTH,
    MAX_INPUT_LENGTH,
    RESOLVER_BASE_MAX_LENGTH,
    DeviceId,
    DeviceScheme,
    Gs1DeviceId,
    ImeiDeviceId,
    InvalidDeviceId,
    SerialDeviceId,
    digital_link,
    imei_check_digit,
    parse_canonical,
    parse_device_id,
    parse_digital_link,
)
from tests.licenses.strategies import (
    DIGITS,
    RESERVED_NAMESPACES,
    device_ids,
    gs1_serials,
    gtins,
    imeis,
    luhn_is_valid,
    manufacturer_serials,
    namespaces,
    resolver_bases,
    substitute_digit,
)

RESOLVER = "https://id.example.org"


# --- GS1 ------------------------------------------------------------------------------------------


@given(gtin=gtins(), serial=gs1_serials)
def test_gs1_spellings_share_one_canonical_form(gtin: str, serial: str) -> None:
    gtin14 = gtin.zfill(14)
    expected = f"gs1:(01){gtin14}(21){serial}"
    spellings = [
        f"(01){gtin}(21){serial}",
        f"(01){gtin14}(21){serial}",
        f"  (01) {gtin} (21){serial}\n",
        f"01{gtin14}21{serial}",
        f"01{gtin14} 21{serial}",
        expected,
    ]
    for spelling in spellings:
        device = parse_device_id("gs1", spelling)
        assert device == Gs1DeviceId(gtin14, serial)
        assert device.canonical == expected
        assert device.id_hash == keccak(text=expected)
    assert parse_canonical(expected) == Gs1DeviceId(gtin14, serial)


def test_gs1_padding_makes_gtin_lengths_one_item() -> None:
    spellings = ["(01)036000291452(21)X1", "(01)0036000291452(21)X1", "(01)00036000291452(21)X1"]
    assert {parse_device_id(DeviceScheme.GS1, s).canonical for s in spellings} == {
        "gs1:(01)00036000291452(21)X1"
    }
    assert parse_device_id("gs1", "(01)96385074(21)A").canonical == "gs1:(01)00000096385074(21)A"


@given(gtin=gtins(), serial=gs1_serials, data=st.data())
def test_gs1_any_single_digit_error_is_refused(gtin: str, serial: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(gtin) - 1), label="position")
    replacement = data.draw(st.sampled_from(DIGITS).filter(lambda d: d != gtin[position]), label="digit")
    corrupted = substitute_digit(gtin, position, replacement)
    assume(corrupted.strip("0"))
    with pytest.raises(InvalidDeviceId, match="check digit"):
        parse_device_id("gs1", f"(01){corrupted}(21){serial}")


@given(gtin=gtins(), serial=gs1_serials, data=st.data())
def test_gs1_corrupted_check_digit_is_refused_with_the_expected_one(
    gtin: str, serial: str, data: st.DataObject
) -> None:
    wrong = data.draw(st.sampled_from(DIGITS).filter(lambda d: d != gtin[-1]))
    with pytest.raises(InvalidDeviceId) as caught:
        parse_device_id("gs1", f"(01){gtin[:-1]}{wrong}(21){serial}")
    assert caught.value.reason == f"wrong GTIN check digit: expected {gtin[-1]}"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("(01)09506000134352", "a GS1 device id is (01){GTIN}(21){serial}"),
        ("(01)09506000134(21)A", "a GTIN has 8, 12, 13 or 14 digits"),
        ("(01)00000000000000(21)A", "a GTIN of zeros names no item"),
        ("(01)09506000134352(21)", "a GS1 serial (AI 21) has 1 to 20 characters"),
        ("(01)09506000134352(21)" + "A" * 21, "a GS1 serial (AI 21) has 1 to 20 characters"),
        ("(01)09506000134352(21)AB C", "characters outside GS1 character set 82 in the serial: ' '"),
        ("(01)09506000134352(21)A#$", "characters outside GS1 character set 82 in the serial: '#$'"),
        ("(01)09506000134352(21)Ä", "device ids are ASCII"),
        ("(01)09506000134352(21).", "a serial of '.' cannot travel in a link's path"),
        ("(01)09506000134352(21)..", "a serial of '..' cannot travel in a link's path"),
        ("0109506000134352", "a GS1 device id is (01){GTIN}(21){serial}"),
        ("", "empty device id"),
        ("   ", "empty device id"),
    ],
)
def test_gs1_refusals(raw: str, reason: str) -> None:
    with pytest.raises(InvalidDeviceId) as caught:
        parse_device_id("gs1", raw)
    assert caught.value.reason == reason
    assert caught.value.input == raw
    assert isinstance(caught.value, ValidationFailed)
    assert caught.value.status == 422
    assert caught.value.extra == {"reason": reason, "input": raw}


def test_gs1_constructor_refuses_non_canonical_parts() -> None:
    with pytest.raises(InvalidDeviceId, match="14 digits"):
        Gs1DeviceId("9506000134352", "A")
    with pytest.raises(InvalidDeviceId, match="check digit"):
        Gs1DeviceId("09506000134353", "A")
    with pytest.raises(InvalidDeviceId, match="character set 82"):
        Gs1DeviceId("09506000134352", "A B")


# --- IMEI -----------------------------------------------------------------------------------------


@given(imei=imeis(), separator=st.sampled_from(["", " ", "-"]))
def test_imei_spellings_share_one_canonical_form(imei: str, separator: str) -> None:
    grouped = separator.join([imei[:2], imei[2:8], imei[8:14], imei[14:]])
    for spelling in (imei, grouped, f"imei:{imei}", f" {grouped} "):
        device = parse_device_id("imei", spelling)
        assert device == ImeiDeviceId(imei)
        assert device.canonical == f"imei:{imei}"
        assert device.id_hash == keccak(text=f"imei:{imei}")


@given(imei=imeis(), data=st.data())
def test_imei_any_single_digit_error_is_refused(imei: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, 14), label="position")
    replacement = data.draw(st.sampled_from(DIGITS).filter(lambda d: d != imei[position]), label="digit")
    assert not luhn_is_valid(substitute_digit(imei, position, replacement))
    with pytest.raises(InvalidDeviceId, match="wrong IMEI check digit"):
        parse_device_id("imei", substitute_digit(imei, position, replacement))


@given(imei=imeis())
def test_imei_without_check_digit_is_refused_and_can_be_completed_explicitly(imei: str) -> None:
    with pytest.raises(InvalidDeviceId) as caught:
        parse_device_id("imei", imei[:14])
    assert caught.value.reason == "an IMEI has 15 digits; this one lacks its check digit"
    assert imei_check_digit(imei[:14]) == imei[14]


def test_known_imei() -> None:
    # The example IMEI of 3GPP TS 23.003 and of most IMEI documentation.
    assert parse_device_id("imei", "49-015420-323751-8").canonical == "imei:490154203237518"
    with pytest.raises(InvalidDeviceId, match="expected 8"):
        parse_device_id("imei", "490154203237517")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("4901542032375180", "an IMEI has 15 digits, not 16"),
        ("49015420323751x", "an IMEI is made of digits"),
        ("imei:", "an IMEI is made of digits"),
    ],
)
def test_imei_refusals(raw: str, reason: str) -> None:
    with pytest.raises(InvalidDeviceId) as caught:
        parse_device_id("imei", raw)
    assert caught.value.reason == reason


def test_imei_check_digit_needs_fourteen_digits() -> None:
    with pytest.raises(InvalidDeviceId):
        imei_check_digit("4901542032375")


# --- manufacturer serials -------------------------------------------------------------------------


@given(namespace=namespaces, serial=manufacturer_serials)
def test_serial_spellings_share_one_canonical_form(namespace: str, serial: str) -> None:
    expected = f"serial:{namespace}:{serial}"
    spellings = (f"{namespace}:{serial}", f"{namespace.upper()}:{serial}", expected)
    if namespace in RESERVED_NAMESPACES:
        for spelling in spellings:
            with pytest.raises(InvalidDeviceId, match="is reserved"):
                parse_device_id("serial", spelling)
        with pytest.raises(InvalidDeviceId, match="is reserved"):
            SerialDeviceId(namespace, serial)
        return
    for spelling in spellings:
        device = parse_device_id("serial", spelling)
        assert device == SerialDeviceId(namespace, serial)
        assert device.canonical == expected
        assert device.id_hash == keccak(text=expected)


def test_serial_is_case_sensitive_and_namespace_is_not() -> None:
    assert parse_device_id("serial", "ACME:ab1").canonical == "serial:acme:ab1"
    assert parse_device_id("serial", "acme:AB1") != parse_device_id("serial", "acme:ab1")
    # "serial" is a Digital Link path key, so no namespace: the canonical prefix is not read as one.
    for raw in ("serial:X1", "serial:serial:X1"):
        with pytest.raises(InvalidDeviceId, match="'serial' is reserved"):
            parse_device_id("serial", raw)


@pytest.mark.parametrize(
    "raw",
    [
        "acme",
        "acme:",
        ":X1",
        "ac me:X1",
        "acme.:X1",
        "-acme:X1",
        "acme:X/1",
        "acme:X:1",
        "a" * 65 + ":X",
        "acme:" + "X" * 65,
        "acme:.",
        "acme:..",
    ],
)
def test_serial_refusals(raw: str) -> None:
    with pytest.raises(InvalidDeviceId):
        parse_device_id("serial", raw)


# --- all schemes ----------------------------------------------------------------------------------


@given(device=device_ids())
def test_canonical_form_parses_to_the_same_device(device: DeviceId) -> None:
    assert parse_device_id(device.scheme, device.canonical) == device
    assert parse_canonical(device.canonical) == device
    assert str(device) == device.canonical
    assert len(device.id_hash) == 32


@given(device=device_ids(), scheme=st.sampled_from(list(DeviceScheme)))
def test_canonical_forms_never_cross_schemes(device: DeviceId, scheme: DeviceScheme) -> None:
    """A canonical string starts with its own scheme, so no two schemes can share an id hash."""
    assert device.canonical.startswith(f"{device.scheme}:")
    if scheme is not device.scheme:
        with pytest.raises(InvalidDeviceId):
            parse_canonical(f"{scheme}:{device.canonical.partition(':')[2]}")


@pytest.mark.parametrize(
    "text",
    [
        "(01)09506000134352(21)A",
        "gs1:01095060001343522 1A",
        "imei:49-015420-323751-8",
        "serial:ACME:X",
        "x:y",
    ],
)
def test_parse_canonical_refuses_other_spellings(text: str) -> None:
    with pytest.raises(InvalidDeviceId):
        parse_canonical(text)


def test_unknown_scheme_and_oversized_input() -> None:
    with pytest.raises(InvalidDeviceId, match="unknown scheme"):
        parse_device_id("ean", "123")
    with pytest.raises(InvalidDeviceId, match=f"longer than {MAX_INPUT_LENGTH}"):
        parse_device_id("serial", "a:" + "b" * MAX_INPUT_LENGTH)


@given(scheme=st.sampled_from(list(DeviceScheme)), raw=st.text(max_size=60))
def test_any_text_parses_to_a_stable_device_or_is_refused(scheme: DeviceScheme, raw: str) -> None:
    try:
        device = parse_device_id(scheme, raw)
    except InvalidDeviceId:
        return
    assert parse_canonical(device.canonical) == device


# --- Digital Link ---------------------------------------------------------------------------------


def test_digital_link_examples() -> None:
    gs1 = parse_device_id("gs1", "(01)09506000134352(21)ABC/12:3")
    assert digital_link(gs1, RESOLVER) == "https://id.example.org/01/09506000134352/21/ABC%2F12%3A3"
    imei = parse_device_id("imei", "490154203237518")
    assert digital_link(imei, RESOLVER + "/") == "https://id.example.org/imei/490154203237518"
    serial = parse_device_id("serial", "com.acme:SN-1_a.b~c")
    assert (
        digital_link(serial, "http://localhost:8000/dl")
        == "http://localhost:8000/dl/serial/com.acme/SN-1_a.b~c"
    )


@given(serial=gs1_serials)
def test_digital_link_percent_encodes_exactly_the_reserved_characters(serial: str) -> None:
    uri = digital_link(Gs1DeviceId("09506000134352", serial), RESOLVER)
    encoded = uri.rpartition("/")[2]
    unreserved = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert all(c in unreserved or c == "%" for c in encoded)
    assert len(encoded) == sum(1 if c in unreserved else 3 for c in serial)


LINK_BASES = (
    st.sampled_from(
        [
            RESOLVER,
            "http://127.0.0.1:8000",
            "https://dl.example.com/prefix/path",
            "HTTPS://ID.EXAMPLE",
            "https://id.example.org/serial",
            "https://id.example.org/imei/",
            "https://id.example.org/01",
            "https://id.example.org/01/09506000134352/10",
            "https://id.example.org/d%C3%A9vices",
        ]
    )
    | resolver_bases
)


@given(device=device_ids(), base=LINK_BASES)
def test_digital_link_round_trip(device: DeviceId, base: str) -> None:
    """Every device's link names that device, whatever segments the base's path ends in, also
    as an HTTP client sends it (dot segments removed from the path)."""
    link = digital_link(device, base)
    assert parse_digital_link(link) == device
    assert parse_digital_link(str(httpx.URL(link))) == device


@given(namespace=namespaces, serial=manufacturer_serials | imeis(), base=LINK_BASES)
def test_every_serial_id_there_is_links_to_itself(namespace: str, serial: str, base: str) -> None:
    """A serial id is refused, for a reserved namespace, or its link names it and no other device."""
    try:
        device = SerialDeviceId(namespace, serial)
    except InvalidDeviceId:
        assert namespace in RESERVED_NAMESPACES
        return
    link = digital_link(device, base)
    assert parse_digital_link(link) == device
    assert parse_digital_link(str(httpx.URL(link))) == device


def test_a_serial_namespace_is_never_a_link_path_key() -> None:
    """``serial:imei:352099001761481`` would link to ``…/serial/imei/352099001761481``: the link
    of the IMEI device ``imei:352099001761481``, another device with its own licence."""
    with pytest.raises(InvalidDeviceId) as caught:
        SerialDeviceId("imei", "352099001761481")
    assert caught.value.reason.startswith("the namespace 'imei' is reserved")
    assert caught.value.status == 422
    for raw in ("imei:352099001761481", "serial:imei:SN-1", "IMEI:SN-1", "21:SN-1", "01:A", "10:A", "22:A"):
        with pytest.raises(InvalidDeviceId, match="is reserved"):
            parse_device_id("serial", raw)
    # Such a path is the IMEI device's link under a base ending in /serial, and only that.
    imei = ImeiDeviceId("352099001761481")
    assert digital_link(imei, RESOLVER + "/serial") == RESOLVER + "/serial/imei/352099001761481"
    assert parse_digital_link(RESOLVER + "/serial/imei/352099001761481") == imei
    with pytest.raises(InvalidDeviceId, match="'21' is reserved"):
        parse_digital_link(RESOLVER + "/serial/21/SN-1")


def test_the_longest_link_under_the_longest_base_parses() -> None:
    base = "https://id.example.org/"
    base += "p" * (RESOLVER_BASE_MAX_LENGTH - len(base))
    longest = [
        SerialDeviceId("n" * 64, "S" * 64),
        Gs1DeviceId("09506000134352", '"' * 20),  # each character percent-encoded
        ImeiDeviceId("352099001761481"),
    ]
    links = [digital_link(device, base + "/") for device in longest]
    assert [len(link) - len(base) for link in links] == [LINK_PATH_MAX_LENGTH, 82, 21]
    assert len(links[0]) == MAX_INPUT_LENGTH
    assert [parse_digital_link(link) for link in links] == longest
    with pytest.raises(ValueError, match=f"at most {RESOLVER_BASE_MAX_LENGTH} ASCII characters"):
        digital_link(longest[2], base + "p")


@pytest.mark.parametrize(
    "uri",
    [
        "https://id.example.org/01/09506000134352/21/ABC%2f1",
        "https://id.example.org/01/9506000134352/21/ABC%2F1",
        "https://id.example.org/01/09506000134352/10/LOT7/21/ABC%2F1",
        "https://id.example.org/01/09506000134352/22/2A/10/LOT7/21/ABC%2F1",
        "https://id.example.org/01/09506000134352/21/ABC%2F1/",
        "https://id.example.org/01/09506000134352/21/ABC%2F1?linkType=gs1:pip#top",
        "http://example.com/any/prefix/01/09506000134352/21/ABC%2F1",
    ],
)
def test_digital_link_accepts_gs1_variants(uri: str) -> None:
    assert parse_digital_link(uri) == Gs1DeviceId("09506000134352", "ABC/1")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("ftp://id.example.org/imei/490154203237518", "a Digital Link is an http(s) URI with a host"),
        ("https:///imei/490154203237518", "a Digital Link is an http(s) URI with a host"),
        ("https://id.example.org/01/09506000134352", "no /01/{GTIN}/21/{serial}"),
        ("https://id.example.org/01/09506000134352/10/L/22/C/21/A", "no /01/{GTIN}/21/{serial}"),
        ("https://id.example.org/01/09506000134352/21/A%2", "a '%' that starts no percent-escape"),
        ("https://id.example.org/01/09506000134352/21/A%ZZ", "a '%' that starts no percent-escape"),
        ("https://id.example.org/01/09506000134352/21/%C3%28", "percent-escapes that are not UTF-8"),
        ("https://id.example.org/01/09506000134352/21/%C3%A9", "characters outside GS1 character set 82"),
        ("https://id.example.org/01/09506000134353/21/A", "wrong GTIN check digit: expected 2"),
        ("https://id.example.org/imei/490154203237517", "wrong IMEI check digit: expected 8"),
        ("https://id.example.org/serial/ACME/X", "a namespace is"),
        ("http://[x/imei/490154203237518", "not a URI"),  # brackets: an IPv6 host, unclosed
        ("http://a]/imei/490154203237518", "not a URI"),
        ("http://[zz]/imei/490154203237518", "not a URI"),  # no IPv6 address
    ],
)
def test_digital_link_refusals(uri: str, reason: str) -> None:
    with pytest.raises(InvalidDeviceId) as caught:
        parse_digital_link(uri)
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    "base",
    [
        "id.example.org",
        "ftp://id.example.org",
        "https://",
        "https://x.org/?q=1",
        "https://x.org/d\u00e9",
        "https://x.org/50%off",
        "https://x.org/%C3%28",
    ],
)
def test_digital_link_needs_an_http_base(base: str) -> None:
    with pytest.raises(ValueError, match="resolver base"):
        digital_link(ImeiDeviceId("490154203237518"), base)


@given(
    text=st.text(max_size=80),
    prefix=st.sampled_from(["", "https://id.example.org/", "https://x/01/", "https://[", "https://[::1"]),
)
def test_any_uri_parses_to_a_stable_device_or_is_refused(text: str, prefix: str) -> None:
    try:
        device = parse_digital_link(prefix + text)
    except InvalidDeviceId:
        return
    assert parse_digital_link(digital_link(device, RESOLVER)) == device
