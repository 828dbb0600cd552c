"""Patent publication numbers: the spellings people paste, their DOCDB forms, and the refusals."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from exchange.kit.errors import ValidationFailed
from exchange.pool.patent_numbers import (
    MAX_INPUT_LENGTH,
    OFFICE_KIND_CODES,
    PATENT_COUNTRY_CODES,
    InvalidPatentNumber,
    PatentNumber,
    normalise_patent_number,
    parse_patent_number,
)

from .strategies import patent_number_spellings

VALID = [
    # US grants
    ("US 10,123,456 B2", "US.10123456.B2"),
    ("US10123456B2", "US.10123456.B2"),
    ("us 10123456 b2", "US.10123456.B2"),
    ("US.10123456.B2", "US.10123456.B2"),
    ("US 7,654,321 B1", "US.7654321.B1"),
    ("US 07654321 B1", "US.7654321.B1"),
    ("US 5,123,456 A", "US.5123456.A"),
    ("US 6,000,000 C1", "US.6000000.C1"),
    ("US D500,000 S", "US.D500000.S"),
    ("USD0500000S", "US.D500000.S"),
    ("US RE43,210 E", "US.RE43210.E"),
    ("US PP12,345 P2", "US.PP12345.P2"),
    ("US H1,234 H", "US.H1234.H"),
    # US pre-grant publications: 11 digits printed, 10 in DOCDB
    ("US 2016/0123456 A1", "US.2016123456.A1"),
    ("US20160123456A1", "US.2016123456.A1"),
    ("US2016123456A1", "US.2016123456.A1"),
    ("US 2001/0000001 A1", "US.2001000001.A1"),
    ("US 2019/0004567 A9", "US.2019004567.A9"),
    ("US 2012/0012345 P1", "US.2012012345.P1"),
    # EP: 7 digits, zero-padded
    ("EP3123456B1", "EP.3123456.B1"),
    ("EP 3 123 456 B1", "EP.3123456.B1"),
    ("EP 3,123,456 A1", "EP.3123456.A1"),
    ("EP 123456 A2", "EP.0123456.A2"),
    ("EP0123456B9", "EP.0123456.B9"),
    ("EP.1000000.A3", "EP.1000000.A3"),
    # WO
    ("WO2016/123456A1", "WO.2016123456.A1"),
    ("WO 2016/123456 A1", "WO.2016123456.A1"),
    ("WO2016123456A1", "WO.2016123456.A1"),
    ("WO 2016/1234 A3", "WO.2016001234.A3"),
    ("WO 03/012345 A1", "WO.03012345.A1"),
    ("WO 99/12345 A2", "WO.9912345.A2"),
    ("WO9912345A1", "WO.9912345.A1"),
    # CN
    ("CN107431123A", "CN.107431123.A"),
    ("CN 107431123 B", "CN.107431123.B"),
    ("CN 1234567 C", "CN.1234567.C"),
    ("CN 205123456 U", "CN.205123456.U"),
    # JP
    ("JP2017-123456A", "JP.2017123456.A"),
    ("JP 2017-123456 A", "JP.2017123456.A"),
    ("JP2017123456A", "JP.2017123456.A"),
    ("JP 2005-1234 A", "JP.2005001234.A"),
    ("JP H10-123456 A", "JP.H10123456.A"),
    ("JPH10123456A", "JP.H10123456.A"),
    ("JP S60-12345 A", "JP.S60012345.A"),
    ("JP H7-12345 B2", "JP.H07012345.B2"),
    ("JP 6123456 B2", "JP.6123456.B2"),
    ("JP 3212345 U", "JP.3212345.U"),
    # DE
    ("DE 10 2015 123 456 A1", "DE.102015123456.A1"),
    ("DE102015123456A1", "DE.102015123456.A1"),
    ("DE 20 2015 001 234 U1", "DE.202015001234.U1"),
    ("DE 60 2005 012 345 T2", "DE.602005012345.T2"),
    ("DE 11 2015 001 234 T5", "DE.112015001234.T5"),
    ("DE 195 12 345 A1", "DE.19512345.A1"),
    ("DE 1234567 B", "DE.1234567.B"),
    # KR
    ("KR10-2016-0012345A", "KR.20160012345.A"),
    ("KR 10-2016-0012345 A", "KR.20160012345.A"),
    ("KR1020160012345A", "KR.20160012345.A"),
    ("KR20160012345A", "KR.20160012345.A"),
    ("KR 20-2016-0001234 U", "KR.20160001234.U"),
    ("KR 10-1234567 B1", "KR.101234567.B1"),
    ("KR101234567B1", "KR.101234567.B1"),
    ("KR 20-0456789 Y1", "KR.200456789.Y1"),
    # GB, FR
    ("GB 2512345 A", "GB.2512345.A"),
    ("GB2512345B", "GB.2512345.B"),
    ("FR 3 012 345 A1", "FR.3012345.A1"),
    ("FR3012345B1", "FR.3012345.B1"),
    # other offices: the general pattern
    ("EA 034567 B1", "EA.034567.B1"),
    ("AP 1234 A", "AP.1234.A"),
    ("OA 12345 A", "OA.12345.A"),
    ("GC 0001234 B", "GC.0001234.B"),
    ("RU 2612345 C2", "RU.2612345.C2"),
    ("AU 2016123456 A1", "AU.2016123456.A1"),
    ("CA 2912345 A1", "CA.2912345.A1"),
    # pasted with Unicode spaces and dashes
    ("US\u00a010,123,456\u00a0B2", "US.10123456.B2"),
    ("JP\u20092017\u2013123456\u2009A", "JP.2017123456.A"),
    ("  EP 3123456 B1\t", "EP.3123456.B1"),
]


@pytest.mark.parametrize(("text", "docdb"), VALID)
def test_valid_spellings_normalise_to_docdb(text: str, docdb: str) -> None:
    number = parse_patent_number(text)
    assert number.docdb() == docdb
    assert number.compact() == docdb.replace(".", "")
    assert str(number) == number.compact()
    assert normalise_patent_number(text) == number.compact()
    assert parse_patent_number(number.compact()) == number
    assert parse_patent_number(number.docdb()) == number


INVALID = [
    # shape of the whole text
    ("", "empty"),
    ("   ", "empty"),
    ("US 10,123,456 B2" + " " * MAX_INPUT_LENGTH, f"longer than {MAX_INPUT_LENGTH} characters"),
    ("US 10#123#456 B2", "character '#' does not belong"),
    ("US 10123456 B\u00b2", "character '\u00b2' does not belong"),
    ("\ufb0610123456A", "character '\ufb06' does not belong"),  # the 'st' ligature upper-cases to ST
    ("1234567", "starts with a two-letter ST.3 country code"),
    ("U1234567B1", "starts with a two-letter ST.3 country code"),
    # country codes
    ("XX123456A", "unknown country code 'XX'"),
    ("QQ123456A", "unknown country code 'QQ'"),
    ("UK2512345A", "unknown country code 'UK'"),
    ("EU1234567A1", "unknown country code 'EU'"),
    ("EM1234567A", "'EM' (EUIPO) publishes trade marks and designs"),
    ("IB2016123456A1", "its PCT publications carry the code WO"),
    ("XN123456A", "Nordic Patent Institute"),
    ("SU1234567A1", "former state (Soviet Union)"),
    ("DD123456A1", "former state (German Democratic Republic)"),
    # kind codes
    ("US10123456", "kind code (e.g. B2, A1) is missing"),
    ("EP3123456", "kind code (e.g. B2, A1) is missing"),
    ("EP3123456B12", "kind code 'B12' is not an ST.16 kind code"),
    ("EP3123456Z9", "kind code 'Z9' is not valid for EP"),
    ("EP3123456A5", "kind code 'A5' is not valid for EP"),
    ("WO2016123456B1", "kind code 'B1' is not valid for WO"),
    ("US10123456A3", "kind code 'A3' is not valid for US"),
    ("CN107431123A1", "kind code 'A1' is not valid for CN"),
    ("DE102015123456B2", "kind code 'B2' is not valid for DE"),
    ("KR20160012345A1", "kind code 'A1' is not valid for KR"),
    ("GB2512345A1", "kind code 'A1' is not valid for GB"),
    ("FR3012345B2", "kind code 'B2' is not valid for FR"),
    ("JP2017123456Z", "kind code 'Z' is not valid for JP"),
    ("EPB1", "document number is missing"),
    # US numbers
    ("US123456789B2", "US grant numbers have at most 8 digits"),
    ("US20160123456B2", "US grant numbers have at most 8 digits; YYYYNNNNNNN is a pre-grant publication"),
    ("US 2016/0123456 B2", "is a grant, but YYYY/NNNNNNN is a pre-grant publication number"),
    ("US 10123456 A1", "pre-grant publication, numbered YYYYNNNNNNN"),
    ("US 2000/0123456 A1", "US pre-grant publications began in 2001"),
    ("US 2016/1234567 A1", "serial 1234567 has no 6-digit DOCDB form"),
    ("US 2016/0000000 A1", "the serial number is zero"),
    ("US D500,000 B2", "is a design patent; kind code 'B2' needs a number without prefix"),
    ("US 500,000 S", "is a utility patent; kind code 'S' needs a number starting with D"),
    ("US RE43,210 B1", "is a reissue"),
    ("US D12345678 S", "US D numbers have at most 7 digits"),
    ("US RE1234567 E", "US RE numbers have at most 6 digits"),
    ("US X12345 B1", "a US grant number is digits with an optional D, RE, PP or H prefix"),
    ("US 0 B1", "the document number is zero"),
    ("US 000,000 B1", "the document number is zero"),
    # EP, WO, CN
    ("EP 12345678 A1", "EP publication numbers have at most 7 digits"),
    ("EP 3/123456 A1", "EP numbers are written without '/' or '-'"),
    ("EP ZL3123456 A1", "unexpected letters 'LZ' in a EP number"),
    ("WO 2003/123456 A1", "WO numbers before 2004 have a two-digit year"),
    ("WO 16/123456 A1", "two-digit WO years run from 78 (1978) to 03 (2003), not 16"),
    ("WO 2016/1234567 A1", "WO publication numbers are YYYY/NNNNNN"),
    ("WO 123456 A1", "WO publication numbers are YYYY/NNNNNN"),
    ("WO 2016/000000 A1", "the serial number is zero"),
    ("CN 123456 A", "CN publication numbers have 7 to 9 digits"),
    ("CN 1074311234 A", "CN publication numbers have 7 to 9 digits"),
    ("CN ZL201510123456 A", "unexpected letters 'LZ' in a CN number"),
    # JP
    ("JP R01-123456 A", "JP era letter 'R' is not S (Showa) or H (Heisei)"),
    ("JP H12-123456 A", "JP era year H12 is outside H1-H11"),
    ("JP S65-123456 A", "JP era year S65 is outside S1-S64"),
    ("JP 1999-123456 A", "JP numbers before 2000 use the era year"),
    ("JP 12345678 B2", "JP numbers are YYYY-NNNNNN, an era year"),
    ("JP 2017-000000 A", "the serial number is zero"),
    # DE
    ("DE 10 2007 004 488.9 A1", "that is an application number, not a publication number"),
    ("DE 123456 A1", "DE publication numbers have 7, 8 or 12 digits"),
    ("DE 99 2015 123 456 A1", "DE numbers of 12 digits start with a type of right"),
    ("DE 10 2015 000 000 A1", "the serial number is zero"),
    # KR
    ("KR30-2016-0012345A", "KR type of right '30' is not 10 (patent) or 20 (utility model)"),
    ("KR20-2016-0012345A", "KR type of right 20 (utility model) does not match kind code 'A'"),
    ("KR10-1234567Y1", "KR type of right 10 (patent) does not match kind code 'Y1'"),
    ("KR 1234567890 A", "KR numbers are tt-yyyy-nnnnnnn"),
    ("KR10-2016-0000000A", "the serial number is zero"),
    # GB, FR, other offices
    ("GB 25123456 A", "GB publication numbers have at most 7 digits"),
    ("FR 30123456 A1", "FR publication numbers have at most 7 digits"),
    ("TW I501234 B", "unexpected letters 'I' in a TW number"),
    ("AU 1234567890123 A1", "publication numbers have at most 12 digits"),
    ("AT 0000 B", "the document number is zero"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_spellings_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidPatentNumber) as refused:
        parse_patent_number(text)
    assert reason in refused.value.reason
    assert refused.value.input == text


def test_refusal_is_a_422_problem_with_reason_and_input() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_patent_number("EP3123456Z9")
    error = refused.value
    assert isinstance(error, InvalidPatentNumber)
    assert error.status == 422
    assert error.type_uri().endswith("/invalid-patent-number")
    assert error.extra == {"reason": "kind code 'Z9' is not valid for EP", "input": "EP3123456Z9"}
    assert error.detail == "kind code 'Z9' is not valid for EP (in 'EP3123456Z9')"


@pytest.mark.parametrize(
    ("country", "number", "kind"),
    [
        ("EP", "123456", "B1"),  # EP numbers are padded to 7 digits
        ("US", "010123456", "B2"),  # leading zero
        ("US", "20160123456", "A1"),  # the printed, not the DOCDB, form
        ("us", "10123456", "B2"),  # lower case
        ("WO", "2016/123456", "A1"),  # separator
        ("XX", "123456", "A"),
    ],
)
def test_a_hand_built_number_must_already_be_in_docdb_form(country: str, number: str, kind: str) -> None:
    with pytest.raises(InvalidPatentNumber):
        PatentNumber(country, number, kind)


def test_a_hand_built_docdb_number_is_accepted() -> None:
    assert PatentNumber("EP", "0123456", "B1") == parse_patent_number("EP 123456 B1")


def test_the_code_tables_are_consistent() -> None:
    assert {
        "EP",
        "WO",
        "EA",
        "AP",
        "OA",
        "GC",
        "US",
        "CN",
        "JP",
        "DE",
        "KR",
        "GB",
        "FR",
    } <= PATENT_COUNTRY_CODES
    assert "XX" not in PATENT_COUNTRY_CODES
    assert all(len(code) == 2 and code.isalpha() and code.isupper() for code in PATENT_COUNTRY_CODES)
    assert set(OFFICE_KIND_CODES) <= PATENT_COUNTRY_CODES
    for kinds in OFFICE_KIND_CODES.values():
        assert all(re.fullmatch(r"[A-Z][0-9]?", kind) for kind in kinds)


@given(patent_number_spellings())
def test_generated_spellings_parse_to_their_expected_docdb_form(spelling: tuple[str, str]) -> None:
    text, expected_compact = spelling
    number = parse_patent_number(text)
    assert number.compact() == expected_compact
    assert parse_patent_number(text.lower()) == number


@given(patent_number_spellings())
def test_normalising_is_idempotent_and_rendering_round_trips(spelling: tuple[str, str]) -> None:
    text, _ = spelling
    number = parse_patent_number(text)
    assert normalise_patent_number(normalise_patent_number(text)) == normalise_patent_number(text)
    assert parse_patent_number(number.compact()) == number
    assert parse_patent_number(number.docdb()) == number
    assert PatentNumber(number.country, number.number, number.kind) == number


def _parsed_or_refusal(text: str) -> PatentNumber | InvalidPatentNumber:
    try:
        return parse_patent_number(text)
    except InvalidPatentNumber as refused:
        return refused


_PATENT_ALPHABET = "0123456789 ,./-ABCDEHJKOPRSTUWXYZabdehopsuwy\u00a0\u2013"


@given(st.text(max_size=50) | st.text(alphabet=_PATENT_ALPHABET, max_size=45))
@example("US2016/0123456A1")
@example("KR10-1234567-B1")
@example("JP.H10123456.A")
@example("WO./A1")
def test_garbage_never_crashes_and_what_parses_round_trips(text: str) -> None:
    number = _parsed_or_refusal(text)
    if isinstance(number, InvalidPatentNumber):
        assert number.reason
        assert number.input == text
        return
    assert parse_patent_number(number.compact()) == number
    assert parse_patent_number(number.docdb()) == number
