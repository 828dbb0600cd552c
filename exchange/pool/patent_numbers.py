"""Patent publication numbers: validated and normalised to the DOCDB form.

A publication number names one published patent document: the office that
published it (WIPO ST.3 two-letter code), the office's document number, and the
ST.16 kind code (a letter and at most one digit) that says which publication
level it is. :func:`parse_patent_number` accepts the spellings people paste
(``US 10,123,456 B2``, ``WO 2016/123456 A1``, ``JP2017-123456A``,
``DE 10 2015 123 456 A1``, ``KR10-2016-0012345A``, the dotted DOCDB form
``EP.3123456.B1``) and returns one :class:`PatentNumber` per document, rendered
as ``US.10123456.B2`` (:meth:`PatentNumber.docdb`) or ``US10123456B2``
(:meth:`PatentNumber.compact`, also ``str()``).

Rules
-----
* Input is ASCII after mapping non-breaking and thin spaces to a space and
  Unicode dashes to ``-``; letters are upper-cased; at most
  ``MAX_INPUT_LENGTH`` characters. Spaces, commas and dots separate digit
  groups and carry no meaning; ``/`` and ``-`` separate a year from a serial
  where the office writes one (US pre-grant, WO, JP, KR).
* The country code must be an ST.3 code of an office that publishes patent
  documents. ``XX`` (ST.3's "unknown") is refused, as are the codes of offices
  that publish no patents (EUIPO ``EM``, Benelux ``BX``, CPVO ``QZ``, UPOV
  ``XU``, the search institutes ``XN`` and ``XV``, the International Bureau
  ``IB``, whose publications carry ``WO``) and of former states (``DD``, ``SU``,
  ``CS``, ``YU``): everything those published has expired.
* The kind code is required (a US grant is B1 or B2 and nothing in the number
  tells which). It must have the ST.16 shape, and for US, EP, WO, CN, JP, DE,
  KR, GB and FR it must be one that office uses (``OFFICE_KIND_CODES``).
* Number shapes, in DOCDB form:

  - US grants: 1 to 8 digits, leading zeros dropped; designs ``D`` + up to 7
    digits (kind S), reissues ``RE`` + up to 6 (kind E), plant patents ``PP`` +
    up to 6 (kinds P, P2, P3), statutory invention registrations ``H`` + up to 7
    (kind H). The prefixed series follow the same leading-zero rule.
  - US pre-grant publications (kinds A1, A2, A9, P1, P4, P9): printed as 11
    digits ``YYYYNNNNNNN`` (``2016/0123456``), stored by DOCDB as 10 — the year
    and a 6-digit serial, dropping the serial's leading zero (``2016123456``).
    Both spellings are accepted; a serial above 999999 has no DOCDB form and is
    refused. Published from 2001.
  - EP: up to 7 digits, zero-padded to 7.
  - WO: from 2004 ``YYYY/NNNNNN`` → ``YYYYNNNNNN``; 1978-2003 ``YY/NNNNN`` or
    ``YY/NNNNNN`` → ``YYNNNNN(N)``.
  - CN: 7 to 9 digits.
  - JP: from 2000 ``YYYY-NNNNNN`` → ``YYYYNNNNNN``; before, the era year
    ``S`` (Showa, 1-64) or ``H`` (Heisei, 1-11) → ``H10123456``; registration
    numbers up to 7 digits.
  - DE: 7 or 8 digits (before 2004), or 12 digits from 2004 whose first two
    digits are the type of right (10, 11, 20, 21, 50, 60): ``102015123456``.
  - KR: ``tt-yyyy-nnnnnnn`` publications → ``yyyynnnnnnn`` (the type of right
    ``tt`` — 10 patent, 20 utility model — is dropped); ``tt-nnnnnnn`` grants →
    ``ttnnnnnnn``; older forms of 7 to 9 digits.
  - GB, FR: up to 7 digits, leading zeros dropped.
  - Every other office: 1 to 12 digits, kept as written.

* A number that ends in ``.<digit>`` is an application number with its check
  digit, not a publication number, and is refused as such. A number of zeros is
  refused.

Invariants: ``parse_patent_number(p.compact()) == p`` and
``parse_patent_number(p.docdb()) == p`` for every parsed ``p`` (so normalising
is idempotent), and every refusal is an :class:`InvalidPatentNumber` carrying a
precise ``reason`` and the ``input`` as given; no other exception escapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from exchange.kit.errors import ValidationFailed

MAX_INPUT_LENGTH: Final = 40


class InvalidPatentNumber(ValidationFailed):
    """The text is not a valid patent publication number; ``reason`` says why."""

    type_slug = "invalid-patent-number"
    title = "Invalid patent number"

    def __init__(self, reason: str, input: str) -> None:
        super().__init__(f"{reason} (in {input!r})", extra={"reason": reason, "input": input})
        self.reason = reason
        self.input = input


# WIPO ST.3, Annex A: states and other entities (ISO 3166-1 alpha-2 based). Taiwan
# (TW) is included because DOCDB and the patent literature use it.
# fmt: off
ST3_STATE_CODES: Final = frozenset({
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AR", "AT", "AU", "AW", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY",
    "BZ", "CA", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW",
    "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI",
    "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GG", "GH", "GI", "GL", "GM", "GN", "GQ",
    "GR", "GS", "GT", "GW", "GY", "HK", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IQ",
    "IR", "IS", "IT", "JE", "JM", "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW",
    "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD",
    "ME", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MR", "MS", "MT", "MU", "MV", "MW", "MX",
    "MY", "MZ", "NA", "NE", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PG",
    "PH", "PK", "PL", "PT", "PW", "PY", "QA", "RO", "RS", "RU", "RW", "SA", "SB", "SC", "SD", "SE",
    "SG", "SH", "SI", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST", "SV", "SX", "SY", "SZ", "TC",
    "TD", "TG", "TH", "TJ", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "US",
    "UY", "UZ", "VA", "VC", "VE", "VG", "VN", "VU", "WS", "YE", "ZA", "ZM", "ZW",
})
# fmt: on

# WIPO ST.3: intergovernmental organisations that publish patent documents.
ST3_PATENT_ORGANISATION_CODES: Final = frozenset({"AP", "EA", "EP", "GC", "OA", "WO"})

# ST.3 codes that are valid but never appear on a patent document, with the reason.
_NON_PATENT_CODES: Final = {
    "XX": "unknown country code 'XX' (ST.3 reserves it for unknown states)",
    "EM": "'EM' (EUIPO) publishes trade marks and designs, not patents",
    "BX": "'BX' (Benelux Office for IP) publishes trade marks and designs, not patents",
    "QZ": "'QZ' (Community Plant Variety Office) grants plant variety rights, not patents",
    "XU": "'XU' (UPOV) does not publish patents",
    "XN": "'XN' (Nordic Patent Institute) searches and examines but publishes no patents",
    "XV": "'XV' (Visegrad Patent Institute) searches and examines but publishes no patents",
    "IB": "'IB' is the International Bureau; its PCT publications carry the code WO",
}

# ST.3, Annex B: former states. Their patents expired long ago.
_FORMER_STATE_CODES: Final = {
    "DD": "German Democratic Republic",
    "SU": "Soviet Union",
    "CS": "Czechoslovakia",
    "YU": "Yugoslavia",
}

PATENT_COUNTRY_CODES: Final = ST3_STATE_CODES | ST3_PATENT_ORGANISATION_CODES

_US_PUBLICATION_KINDS: Final = frozenset({"A1", "A2", "A9", "P1", "P4", "P9"})
# US grant kinds and the letter prefix their numbers carry ("" for utility patents).
_US_GRANT_PREFIX: Final = {
    "A": "",  # utility patent before 2001
    "B1": "",  # utility patent with no pre-grant publication (also pre-2001 reexamination)
    "B2": "",  # utility patent after a pre-grant publication (also pre-2001 reexamination)
    "C1": "",  # reexamination certificates keep the patent's number
    "C2": "",
    "C3": "",
    "E": "RE",  # reissue
    "S": "D",  # design patent
    "P": "PP",  # plant patent before 2001
    "P2": "PP",  # plant patent with no pre-grant publication
    "P3": "PP",  # plant patent after a pre-grant publication
    "H": "H",  # statutory invention registration
}
_US_PREFIX_MAX_DIGITS: Final = {"": 8, "D": 7, "RE": 6, "PP": 6, "H": 7}
_US_PREFIX_NAMES: Final = {
    "": "a utility patent",
    "D": "a design patent",
    "RE": "a reissue",
    "PP": "a plant patent",
    "H": "a statutory invention registration",
}

# ST.16 kind codes each office uses (current and former publication levels).
OFFICE_KIND_CODES: Final[dict[str, frozenset[str]]] = {
    "US": _US_PUBLICATION_KINDS | frozenset(_US_GRANT_PREFIX),
    "EP": frozenset({"A1", "A2", "A3", "A4", "A8", "A9", "B1", "B2", "B3", "B8", "B9"}),
    "WO": frozenset({"A1", "A2", "A3", "A4", "A8", "A9"}),
    "CN": frozenset({"A", "B", "C", "U", "Y", "S"}),
    "JP": frozenset({"A", "A1", "B", "B1", "B2", "C", "S", "T", "U", "U1", "Y", "Y1", "Y2"}),
    "DE": frozenset(
        {"A1", "A5", "A8", "A9", "B", "B3", "B4", "B8", "B9", "C1", "C2", "C3", "C5", "C8", "C9"}
        | {"T1", "T2", "T5", "T8", "T9", "U1", "U8", "U9"}
    ),
    "KR": frozenset({"A", "B", "B1", "B2", "U", "Y", "Y1", "Y2"}),
    "GB": frozenset({"A", "A8", "A9", "B", "B8", "B9", "C"}),
    "FR": frozenset({"A", "A1", "A3", "B1", "B3"}),
}

# An office's rule: (country, body as written, kind, input for errors) -> DOCDB number.
_OfficeRule: TypeAlias = Callable[[str, str, str, str], str]

_DE_TYPES_OF_RIGHT: Final = frozenset({"10", "11", "20", "21", "50", "60"})
_KR_TYPES_OF_RIGHT: Final = {"10": "patent", "20": "utility model"}
_KR_KINDS_BY_TYPE: Final = {"10": frozenset({"A", "B", "B1", "B2"}), "20": frozenset({"U", "Y", "Y1", "Y2"})}
_JP_ERA_LAST_YEAR: Final = {"S": 64, "H": 11}

_UNICODE_SEPARATORS: Final = str.maketrans(
    {
        "\t": " ",
        "\u00a0": " ",  # no-break space
        "\u2007": " ",  # figure space
        "\u2009": " ",  # thin space
        "\u202f": " ",  # narrow no-break space
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u2212": "-",  # minus sign
    }
)
_ALLOWED_CHARACTERS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,./-")
_ST16_KIND: Final = re.compile(r"[A-Z][0-9]?", re.ASCII)
_DOTTED_DOCDB: Final = re.compile(r"([A-Z]{2})\.([0-9A-Z]+)\.([A-Z][0-9]*)", re.ASCII)
_SPELLED: Final = re.compile(r"([A-Z]{2}) *(.*?) *([A-Z][0-9]{0,2})", re.ASCII)
_DIGITS: Final = re.compile(r"[0-9]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class PatentNumber:
    """One patent document, in DOCDB form. Build it with :func:`parse_patent_number`."""

    country: str
    number: str
    kind: str

    def __post_init__(self) -> None:
        # A hand-built value must already be normal: the same rules, applied to its own parts.
        parts = (self.country, self.number, self.kind)
        compact = "".join(parts)
        if _normalise(*parts, compact) != parts:
            raise InvalidPatentNumber("not in DOCDB form; build it with parse_patent_number", compact)

    def docdb(self) -> str:
        """``US.10123456.B2``: country, number and kind separated by dots."""
        return f"{self.country}.{self.number}.{self.kind}"

    def compact(self) -> str:
        """``US10123456B2``: the form used as the patent's id."""
        return f"{self.country}{self.number}{self.kind}"

    def __str__(self) -> str:
        return self.compact()


def parse_patent_number(text: str) -> PatentNumber:
    """Validate and normalise ``text``; raise :class:`InvalidPatentNumber` with the reason."""
    if len(text) > MAX_INPUT_LENGTH:
        raise InvalidPatentNumber(f"longer than {MAX_INPUT_LENGTH} characters", text)
    cleaned = text.translate(_UNICODE_SEPARATORS).strip()
    if not cleaned:
        raise InvalidPatentNumber("empty", text)
    for character in cleaned:
        # ASCII first: str.upper() turns some other letters into ASCII ones ('\ufb06' -> 'ST').
        if not character.isascii() or character.upper() not in _ALLOWED_CHARACTERS:
            raise InvalidPatentNumber(
                f"character {character!r} does not belong in a patent number "
                "(letters, digits, spaces and , . / - only)",
                text,
            )
    cleaned = cleaned.upper()
    country = cleaned[:2]
    if not (len(country) == 2 and country.isalpha()):
        raise InvalidPatentNumber("a patent number starts with a two-letter ST.3 country code", text)
    _check_country(country, text)
    match = _DOTTED_DOCDB.fullmatch(cleaned) or _SPELLED.fullmatch(cleaned)
    if match is None:
        raise InvalidPatentNumber("the ST.16 kind code (e.g. B2, A1) is missing at the end", text)
    _, body, kind = match.groups()
    country, number, kind = _normalise(country, body, kind, text)
    return PatentNumber(country, number, kind)


def normalise_patent_number(text: str) -> str:
    """The compact DOCDB form of ``text`` (``US10123456B2``)."""
    return parse_patent_number(text).compact()


def _check_country(country: str, text: str) -> None:
    if country in PATENT_COUNTRY_CODES:
        return
    if country in _NON_PATENT_CODES:
        raise InvalidPatentNumber(_NON_PATENT_CODES[country], text)
    if country in _FORMER_STATE_CODES:
        raise InvalidPatentNumber(
            f"country code {country!r} belongs to a former state ({_FORMER_STATE_CODES[country]}); "
            "all its patents have expired",
            text,
        )
    raise InvalidPatentNumber(f"unknown country code {country!r}", text)


def _normalise(country: str, body: str, kind: str, text: str) -> tuple[str, str, str]:
    """The DOCDB (country, number, kind) for one parsed spelling; ``text`` is quoted in errors."""
    _check_country(country, text)
    if not _ST16_KIND.fullmatch(kind):
        raise InvalidPatentNumber(
            f"kind code {kind!r} is not an ST.16 kind code (one letter and at most one digit)", text
        )
    office_kinds = OFFICE_KIND_CODES.get(country)
    if office_kinds is not None and kind not in office_kinds:
        raise InvalidPatentNumber(f"kind code {kind!r} is not valid for {country}", text)
    if not body:
        raise InvalidPatentNumber("the document number is missing", text)
    if re.search(r"\.[0-9]$", body):
        raise InvalidPatentNumber(
            "the number ends in a check digit: that is an application number, not a publication number",
            text,
        )
    rule = _OFFICE_RULES.get(country, _other_office)
    number = rule(country, body, kind, text)
    if not re.sub(r"[^1-9]", "", number):
        raise InvalidPatentNumber("the document number is zero", text)
    return country, number, kind


def _strip_group_separators(body: str) -> str:
    return body.replace(" ", "").replace(",", "").replace(".", "")


def _plain_digits(body: str, country: str, text: str) -> str:
    """The digits of a number written with group separators only; refuse anything else."""
    compact = _strip_group_separators(body)
    letters = "".join(sorted(set(re.sub(r"[^A-Z]", "", compact))))
    if letters:
        raise InvalidPatentNumber(f"unexpected letters {letters!r} in a {country} number", text)
    if "/" in compact or "-" in compact:
        raise InvalidPatentNumber(f"{country} numbers are written without '/' or '-'", text)
    return compact


def _without_leading_zeros(digits: str) -> str:
    return digits.lstrip("0") or "0"


def _nonzero_serial(serial: str, text: str) -> int:
    value = int(serial)
    if value == 0:
        raise InvalidPatentNumber("the serial number is zero", text)
    return value


def _us(country: str, body: str, kind: str, text: str) -> str:
    compact = _strip_group_separators(body)
    if kind in _US_PUBLICATION_KINDS:
        return _us_pre_grant(compact, kind, text)
    match = re.fullmatch(r"(D|RE|PP|H|)([0-9]+)", compact, re.ASCII)
    if match is None:
        if re.fullmatch(r"[0-9]{4}[/-][0-9]+", compact, re.ASCII):
            raise InvalidPatentNumber(
                f"kind code {kind!r} is a grant, but YYYY/NNNNNNN is a pre-grant publication number "
                "(kind A1, A2 or A9)",
                text,
            )
        raise InvalidPatentNumber("a US grant number is digits with an optional D, RE, PP or H prefix", text)
    prefix, digits = match.groups()
    expected_prefix = _US_GRANT_PREFIX[kind]
    if prefix != expected_prefix:
        wanted = f"a number starting with {expected_prefix}" if expected_prefix else "a number without prefix"
        raise InvalidPatentNumber(
            f"{compact} is {_US_PREFIX_NAMES[prefix]}; kind code {kind!r} needs {wanted}", text
        )
    digits = _without_leading_zeros(digits)
    limit = _US_PREFIX_MAX_DIGITS[prefix]
    if len(digits) > limit:
        if not prefix and len(digits) in (10, 11):
            raise InvalidPatentNumber(
                "US grant numbers have at most 8 digits; YYYYNNNNNNN is a pre-grant publication "
                "(kind A1, A2 or A9)",
                text,
            )
        what = "grant numbers" if not prefix else f"{prefix} numbers"
        raise InvalidPatentNumber(f"US {what} have at most {limit} digits", text)
    return prefix + digits


def _us_pre_grant(compact: str, kind: str, text: str) -> str:
    match = re.fullmatch(r"([0-9]{4})[/-]([0-9]{1,7})", compact, re.ASCII) or re.fullmatch(
        r"([0-9]{4})([0-9]{6,7})", compact, re.ASCII
    )
    if match is None:
        raise InvalidPatentNumber(
            f"kind code {kind!r} is a US pre-grant publication, numbered YYYYNNNNNNN "
            "(e.g. US 2016/0123456 A1)",
            text,
        )
    year, serial = int(match.group(1)), _nonzero_serial(match.group(2), text)
    if year < 2001:
        raise InvalidPatentNumber("US pre-grant publications began in 2001", text)
    if serial > 999_999:
        raise InvalidPatentNumber(f"US pre-grant serial {serial} has no 6-digit DOCDB form", text)
    return f"{year}{serial:06d}"


def _ep(country: str, body: str, kind: str, text: str) -> str:
    digits = _plain_digits(body, "EP", text)
    if len(digits) > 7:
        raise InvalidPatentNumber("EP publication numbers have at most 7 digits", text)
    return digits.zfill(7)


def _wo(country: str, body: str, kind: str, text: str) -> str:
    compact = _strip_group_separators(body)
    slashed = re.fullmatch(r"([0-9]{2}|[0-9]{4})/([0-9]{1,6})", compact, re.ASCII)
    if slashed is not None:
        year, serial = slashed.groups()
    elif _DIGITS.fullmatch(compact) and len(compact) == 10:
        year, serial = compact[:4], compact[4:]
    elif _DIGITS.fullmatch(compact) and len(compact) in (7, 8):
        year, serial = compact[:2], compact[2:]
    else:
        raise InvalidPatentNumber(
            "WO publication numbers are YYYY/NNNNNN (from 2004) or YY/NNNNN (1978-2003)", text
        )
    _nonzero_serial(serial, text)
    if len(year) == 4:
        if int(year) < 2004:
            raise InvalidPatentNumber(
                "WO numbers before 2004 have a two-digit year (e.g. WO 03/012345)", text
            )
        return year + serial.zfill(6)
    if 4 <= int(year) <= 77:
        raise InvalidPatentNumber(f"two-digit WO years run from 78 (1978) to 03 (2003), not {year}", text)
    return year + (serial if len(serial) == 6 else serial.zfill(5))


def _cn(country: str, body: str, kind: str, text: str) -> str:
    digits = _plain_digits(body, "CN", text)
    if not 7 <= len(digits) <= 9:
        raise InvalidPatentNumber("CN publication numbers have 7 to 9 digits", text)
    return digits


def _jp(country: str, body: str, kind: str, text: str) -> str:
    compact = body.replace(" ", "").replace(",", "")
    era = re.fullmatch(r"([A-Z])([0-9]{1,2})-([0-9]{1,6})", compact, re.ASCII) or re.fullmatch(
        r"([A-Z])([0-9]{2})([0-9]{6})", compact, re.ASCII
    )
    if era is not None:
        letter, era_year, serial = era.groups()
        if letter not in _JP_ERA_LAST_YEAR:
            raise InvalidPatentNumber(
                f"JP era letter {letter!r} is not S (Showa) or H (Heisei); from 2000 the year is written "
                "in full",
                text,
            )
        if not 1 <= int(era_year) <= _JP_ERA_LAST_YEAR[letter]:
            raise InvalidPatentNumber(
                f"JP era year {letter}{era_year} is outside {letter}1-{letter}{_JP_ERA_LAST_YEAR[letter]}",
                text,
            )
        return f"{letter}{int(era_year):02d}{_nonzero_serial(serial, text):06d}"
    western = re.fullmatch(r"([0-9]{4})-([0-9]{1,6})", compact, re.ASCII) or re.fullmatch(
        r"([0-9]{4})([0-9]{6})", compact, re.ASCII
    )
    if western is not None:
        year, serial = western.groups()
        if int(year) < 2000:
            raise InvalidPatentNumber("JP numbers before 2000 use the era year (e.g. JP H11-123456 A)", text)
        return f"{year}{_nonzero_serial(serial, text):06d}"
    if _DIGITS.fullmatch(compact) and len(compact) <= 7:
        return _without_leading_zeros(compact)
    raise InvalidPatentNumber(
        "JP numbers are YYYY-NNNNNN, an era year such as H10-123456, or a registration number of "
        "up to 7 digits",
        text,
    )


def _de(country: str, body: str, kind: str, text: str) -> str:
    digits = _plain_digits(body, "DE", text)
    if len(digits) == 12:
        if digits[:2] not in _DE_TYPES_OF_RIGHT:
            raise InvalidPatentNumber(
                f"DE numbers of 12 digits start with a type of right "
                f"({', '.join(sorted(_DE_TYPES_OF_RIGHT))}), not {digits[:2]}",
                text,
            )
        _nonzero_serial(digits[6:], text)
        return digits
    if len(digits) in (7, 8):
        return digits
    raise InvalidPatentNumber("DE publication numbers have 7, 8 or 12 digits (e.g. DE 10 2015 123 456)", text)


def _kr(country: str, body: str, kind: str, text: str) -> str:
    compact = _strip_group_separators(body)
    publication = re.fullmatch(r"([0-9]{2})-([0-9]{4})-([0-9]{1,7})", compact, re.ASCII) or re.fullmatch(
        r"(10|20)([0-9]{4})([0-9]{7})", compact, re.ASCII
    )
    if publication is not None:
        type_of_right, year, serial = publication.groups()
        _check_kr_type_of_right(type_of_right, kind, text)
        _nonzero_serial(serial, text)
        return year + serial.zfill(7)
    grant = re.fullmatch(r"([0-9]{2})-([0-9]{1,7})", compact, re.ASCII)
    if grant is not None:
        type_of_right, serial = grant.groups()
        _check_kr_type_of_right(type_of_right, kind, text)
        return type_of_right + serial.zfill(7)
    if _DIGITS.fullmatch(compact) and len(compact) in (7, 8, 9, 11):
        return compact
    raise InvalidPatentNumber("KR numbers are tt-yyyy-nnnnnnn (publications) or tt-nnnnnnn (grants)", text)


def _check_kr_type_of_right(type_of_right: str, kind: str, text: str) -> None:
    if type_of_right not in _KR_TYPES_OF_RIGHT:
        raise InvalidPatentNumber(
            f"KR type of right {type_of_right!r} is not 10 (patent) or 20 (utility model)", text
        )
    if kind not in _KR_KINDS_BY_TYPE[type_of_right]:
        raise InvalidPatentNumber(
            f"KR type of right {type_of_right} ({_KR_TYPES_OF_RIGHT[type_of_right]}) "
            f"does not match kind code {kind!r}",
            text,
        )


def _seven_digits_at_most(country: str) -> _OfficeRule:
    def rule(_country: str, body: str, kind: str, text: str) -> str:
        digits = _plain_digits(body, country, text)
        if len(digits) > 7:
            raise InvalidPatentNumber(f"{country} publication numbers have at most 7 digits", text)
        return _without_leading_zeros(digits)

    return rule


def _other_office(country: str, body: str, kind: str, text: str) -> str:
    digits = _plain_digits(body, country, text)
    if len(digits) > 12:
        raise InvalidPatentNumber("publication numbers have at most 12 digits", text)
    return digits


_OFFICE_RULES: Final[dict[str, _OfficeRule]] = {
    "US": _us,
    "EP": _ep,
    "WO": _wo,
    "CN": _cn,
    "JP": _jp,
    "DE": _de,
    "KR": _kr,
    "GB": _seven_digits_at_most("GB"),
    "FR": _seven_digits_at_most("FR"),
}
