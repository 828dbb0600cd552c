"""Device identifiers: three schemes, one canonical form each, and their Digital Link URIs.

A licensed device is named on chain by ``id_hash = keccak256(canonical)`` (the
``deviceIdHash`` of ``DeviceLicenses``), so every spelling of one device must
give one canonical string, and nothing else may. :func:`parse_device_id`
accepts the spellings below and returns a :class:`DeviceId`; every refusal is an
:class:`InvalidDeviceId` carrying a precise ``reason`` and the ``input``.

Schemes and canonical forms
---------------------------
* ``gs1`` — a GS1 trade item (GTIN) plus its serial number (AI 21):
  ``gs1:(01){gtin14}(21){serial}``.

  - The GTIN may be a GTIN-8, -12, -13 or -14; it is left-padded with zeros to
    14 digits, so ``036000291452`` and ``00036000291452`` are one item. Its
    last digit must be the GS1 mod-10 check digit; all zeros is refused.
  - The serial is 1 to 20 characters of GS1's character set 82 (``!"%&'()*+,-./``,
    digits, ``:;<=>?``, upper and lower case letters, ``_``). It is case-sensitive.
  - Accepted spellings: ``(01)09506000134352(21)ABC123`` (any GTIN length),
    ``0109506000134352 21ABC123`` style element strings without brackets (the
    GTIN is then 14 digits; spaces between the elements are ignored), and the
    canonical form.
* ``imei`` — a mobile device's IMEI: ``imei:{15 digits}``. The 15th digit must be
  the Luhn check digit of the first 14. Spaces and hyphens between digit groups
  (``35-209900-176148-1``) are ignored. A 14-digit IMEI without its check digit
  is refused rather than completed: the check digit is the only defence
  against a mistyped IMEI, and completing it would license whichever device the
  typo names. Sources that really hold 14 digits (network signalling) compute
  it explicitly with :func:`imei_check_digit`. A 16-digit IMEISV is refused.
* ``serial`` — a manufacturer's own serial numbers under a namespace it owns:
  ``serial:{namespace}:{serial}``. The namespace is 1 to 64 characters,
  lower-case letters and digits in dot- or hyphen-separated labels (``acme``,
  ``com.example.phones``); input is lower-cased. The serial is 1 to 64
  characters from ``A-Z a-z 0-9 - . _ ~`` (URI-unreserved, so it never needs
  escaping) and case-sensitive. Accepted: ``{namespace}:{serial}`` and the
  canonical form. The path keys of the Digital Links below (``01``, ``10``,
  ``21``, ``22``, ``imei``, ``serial``) are reserved and refused as namespaces:
  ``serial:imei:{imei}`` would otherwise link to ``…/serial/imei/{imei}``, which
  names the IMEI device ``imei:{imei}``.

Input is at most ``MAX_INPUT_LENGTH`` ASCII characters; surrounding whitespace is ignored.
The limit holds the longest link (``LINK_PATH_MAX_LENGTH``) under the longest resolver base
:func:`digital_link` accepts (``RESOLVER_BASE_MAX_LENGTH``), so every link made here parses.

Digital Link URIs
-----------------
:func:`digital_link` renders a device as a URI under a resolver base
(``https://id.example.org``, optionally with a path prefix, at most
``RESOLVER_BASE_MAX_LENGTH`` ASCII characters):

* GS1: ``{base}/01/{gtin14}/21/{serial}`` — GS1 Digital Link, the serial
  percent-encoded (``!"%&'()*+,/:;<=>?`` become ``%XX`` with upper-case hex).
* IMEI: ``{base}/imei/{imei}``; serial scheme: ``{base}/serial/{namespace}/{serial}``.
  These two paths are this service's extension in the same style; GS1 defines no
  key for them.

:func:`parse_digital_link` reads any of these under any http(s) host and path
prefix. For GS1 it also accepts a GTIN of 8, 12 or 13 digits, the qualifiers
``/22/{cpv}`` and ``/10/{lot}`` before ``/21/`` (dropped: the GTIN and serial
already name the item), lower-case hex escapes, a trailing slash, and any query
or fragment (Digital Link attributes, ignored). The shape is read from the path's
last segments (GS1 first, then IMEI, then serial), so the prefix may hold any
segments, path keys included; as no namespace is a path key, the segment before
a serial link's last is never ``21`` or ``imei``, and every link
:func:`digital_link` makes parses back to its own device.

Invariants: ``parse_device_id(d.scheme, d.canonical) == d``,
``parse_canonical(d.canonical) == d`` and
``parse_digital_link(digital_link(d, base)) == d`` for every valid ``d``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final
from urllib.parse import quote, unquote, urlsplit

from exchange.kit.errors import ValidationFailed
from exchange.licenses.merkle import keccak256

GS1_SERIAL_MAX_LENGTH: Final = 20
SERIAL_MAX_LENGTH: Final = 64
NAMESPACE_MAX_LENGTH: Final = 64
#: The Digital Link path keys, which no namespace may be (see ``serial`` above).
RESERVED_NAMESPACES: Final = frozenset({"01", "10", "21", "22", "imei", "serial"})
#: The longest link path: ``/serial/{namespace}/{serial}`` (GS1: ``/01/{14}/21/`` and a serial
#: of 20 characters, each percent-encoded at worst, is 82; IMEI: ``/imei/{15}`` is 21).
LINK_PATH_MAX_LENGTH: Final = max(
    len("/serial/") + NAMESPACE_MAX_LENGTH + len("/") + SERIAL_MAX_LENGTH,
    len("/01/") + 14 + len("/21/") + 3 * GS1_SERIAL_MAX_LENGTH,
    len("/imei/") + 15,
)
#: The longest resolver base (trailing slashes aside) :func:`digital_link` accepts.
RESOLVER_BASE_MAX_LENGTH: Final = 128
#: The longest input: any link :func:`digital_link` makes fits (265 characters).
MAX_INPUT_LENGTH: Final = RESOLVER_BASE_MAX_LENGTH + LINK_PATH_MAX_LENGTH

#: GS1 General Specifications, character set 82 (the characters of AI 21).
GS1_CSET82: Final = frozenset(
    "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
)

_DIGITS = re.compile(r"[0-9]+")
_NAMESPACE = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_SERIAL = re.compile(r"[A-Za-z0-9._~-]+")
_BRACKETED_GS1 = re.compile(r"\(01\)\s*([0-9]+)\s*\(21\)\s*(.*)", re.DOTALL)
_PLAIN_GS1 = re.compile(r"01([0-9]{14})\s*21(.*)", re.DOTALL)
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class InvalidDeviceId(ValidationFailed):
    """The text is not a valid device identifier; ``reason`` says why."""

    type_slug = "invalid-device-id"
    title = "Invalid device identifier"

    def __init__(self, reason: str, input: str) -> None:
        super().__init__(f"{reason} (in {input!r})", extra={"reason": reason, "input": input})
        self.reason = reason
        self.input = input


class DeviceScheme(StrEnum):
    """How a device is identified."""

    GS1 = "gs1"
    IMEI = "imei"
    SERIAL = "serial"


class DeviceId(ABC):
    """One device, in one scheme. Instances are valid by construction."""

    __slots__ = ()
    scheme: ClassVar[DeviceScheme]

    @property
    @abstractmethod
    def canonical(self) -> str:
        """The one string that names this device; its keccak256 is ``id_hash``."""

    @property
    @abstractmethod
    def link_path(self) -> str:
        """The Digital Link path (``/01/…/21/…``, ``/imei/…``, ``/serial/…/…``)."""

    @property
    def id_hash(self) -> bytes:
        """keccak256 of the canonical form: the on-chain ``deviceIdHash`` (32 bytes)."""
        return keccak256(self.canonical.encode("ascii"))

    def __str__(self) -> str:
        return self.canonical


@dataclass(frozen=True, slots=True)
class Gs1DeviceId(DeviceId):
    """A serialised GS1 trade item: GTIN-14 and AI 21 serial."""

    gtin: str
    serial: str
    scheme: ClassVar[DeviceScheme] = DeviceScheme.GS1

    def __post_init__(self) -> None:
        if len(self.gtin) != 14 or normalise_gtin(self.gtin) != self.gtin:
            raise InvalidDeviceId("a GS1 device id holds the GTIN as 14 digits", self.gtin)
        _check_gs1_serial(self.serial, self.serial)

    @property
    def canonical(self) -> str:
        return f"gs1:(01){self.gtin}(21){self.serial}"

    @property
    def link_path(self) -> str:
        return f"/01/{self.gtin}/21/{quote(self.serial, safe='')}"


@dataclass(frozen=True, slots=True)
class ImeiDeviceId(DeviceId):
    """A mobile device by its 15-digit IMEI."""

    imei: str
    scheme: ClassVar[DeviceScheme] = DeviceScheme.IMEI

    def __post_init__(self) -> None:
        _check_imei(self.imei, self.imei)

    @property
    def canonical(self) -> str:
        return f"imei:{self.imei}"

    @property
    def link_path(self) -> str:
        return f"/imei/{self.imei}"


@dataclass(frozen=True, slots=True)
class SerialDeviceId(DeviceId):
    """A manufacturer serial number under the manufacturer's namespace."""

    namespace: str
    serial: str
    scheme: ClassVar[DeviceScheme] = DeviceScheme.SERIAL

    def __post_init__(self) -> None:
        _check_namespace(self.namespace, self.namespace)
        _check_serial(self.serial, self.serial)

    @property
    def canonical(self) -> str:
        return f"serial:{self.namespace}:{self.serial}"

    @property
    def link_path(self) -> str:
        return f"/serial/{self.namespace}/{self.serial}"


# --- check digits ---------------------------------------------------------------------------------


def gs1_check_digit(body: str) -> str:
    """The GS1 mod-10 check digit of `body` (the GTIN without its last digit)."""
    total = sum(int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(reversed(body)))
    return str(-total % 10)


def imei_check_digit(body: str) -> str:
    """The Luhn check digit of a 14-digit IMEI body (TAC and serial number)."""
    if len(body) != 14 or not _DIGITS.fullmatch(body):
        raise InvalidDeviceId("an IMEI body has exactly 14 digits", body)
    total = 0
    for position, digit in enumerate(reversed(body)):
        value = int(digit) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


def normalise_gtin(raw: str) -> str:
    """A GTIN-8, -12, -13 or -14 as 14 digits, its check digit verified."""
    return _normalise_gtin(raw, raw)


def _normalise_gtin(digits: str, raw: str) -> str:
    if not _DIGITS.fullmatch(digits) or len(digits) not in (8, 12, 13, 14):
        raise InvalidDeviceId("a GTIN has 8, 12, 13 or 14 digits", raw)
    gtin = digits.zfill(14)
    if gtin == "0" * 14:
        raise InvalidDeviceId("a GTIN of zeros names no item", raw)
    expected = gs1_check_digit(gtin[:-1])
    if gtin[-1] != expected:
        raise InvalidDeviceId(f"wrong GTIN check digit: expected {expected}", raw)
    return gtin


# --- parsing -------------------------------------------------------------------------------------


def parse_device_id(scheme: DeviceScheme | str, raw: str) -> DeviceId:
    """Parse `raw` as a device id of `scheme`; raises :class:`InvalidDeviceId`."""
    text = _prepare(raw)
    try:
        parsed_scheme = DeviceScheme(scheme)
    except ValueError:
        raise InvalidDeviceId(f"unknown scheme {scheme!r}: expected gs1, imei or serial", raw) from None
    if parsed_scheme is DeviceScheme.GS1:
        return _parse_gs1(text, raw)
    if parsed_scheme is DeviceScheme.IMEI:
        return _parse_imei(text, raw)
    return _parse_serial(text, raw)


def parse_canonical(canonical: str) -> DeviceId:
    """Parse a canonical form (``gs1:…``, ``imei:…``, ``serial:…``), as stored."""
    scheme, colon, _ = _prepare(canonical).partition(":")
    if not colon or scheme not in {member.value for member in DeviceScheme}:
        raise InvalidDeviceId("a canonical device id starts with gs1:, imei: or serial:", canonical)
    device = parse_device_id(scheme, canonical)
    if device.canonical != canonical:
        raise InvalidDeviceId(f"not in canonical form; the canonical form is {device.canonical!r}", canonical)
    return device


def _prepare(raw: str) -> str:
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidDeviceId(f"longer than {MAX_INPUT_LENGTH} characters", raw[:MAX_INPUT_LENGTH] + "…")
    if not raw.isascii():
        raise InvalidDeviceId("device ids are ASCII", raw)
    text = raw.strip()
    if not text:
        raise InvalidDeviceId("empty device id", raw)
    return text


def _parse_gs1(text: str, raw: str) -> Gs1DeviceId:
    text = text.removeprefix("gs1:")
    bracketed = _BRACKETED_GS1.fullmatch(text)
    plain = None if bracketed else _PLAIN_GS1.fullmatch(text)
    match = bracketed or plain
    if match is None:
        raise InvalidDeviceId("a GS1 device id is (01){GTIN}(21){serial}", raw)
    gtin, serial = match.group(1), match.group(2)
    _check_gs1_serial(serial, raw)
    return Gs1DeviceId(_normalise_gtin(gtin, raw), serial)


def _parse_imei(text: str, raw: str) -> ImeiDeviceId:
    digits = re.sub(r"[\s-]", "", text.removeprefix("imei:"))
    _check_imei(digits, raw)
    return ImeiDeviceId(digits)


def _parse_serial(text: str, raw: str) -> SerialDeviceId:
    body = text.removeprefix("serial:") if text.count(":") == 2 else text
    namespace, colon, serial = body.partition(":")
    if not colon:
        raise InvalidDeviceId("a serial device id is {namespace}:{serial}", raw)
    namespace = namespace.lower()
    _check_namespace(namespace, raw)
    _check_serial(serial, raw)
    return SerialDeviceId(namespace, serial)


def _check_gs1_serial(serial: str, raw: str) -> None:
    if not 1 <= len(serial) <= GS1_SERIAL_MAX_LENGTH:
        raise InvalidDeviceId(f"a GS1 serial (AI 21) has 1 to {GS1_SERIAL_MAX_LENGTH} characters", raw)
    outside = sorted(set(serial) - GS1_CSET82)
    if outside:
        characters = "".join(outside)
        raise InvalidDeviceId(f"characters outside GS1 character set 82 in the serial: {characters!r}", raw)
    _check_not_a_dot_segment(serial, raw)


def _check_not_a_dot_segment(serial: str, raw: str) -> None:
    """A serial ``.`` or ``..`` would be a dot segment of its Digital Link's path, which browsers
    and HTTP clients remove before they send it (RFC 3986, 5.2.4; escaped too, by the URL
    standard): the device's label could never reach its licence."""
    if serial in (".", ".."):
        raise InvalidDeviceId(f"a serial of {serial!r} cannot travel in a link's path", raw)


def _check_imei(digits: str, raw: str) -> None:
    if not _DIGITS.fullmatch(digits):
        raise InvalidDeviceId("an IMEI is made of digits", raw)
    if len(digits) == 14:
        raise InvalidDeviceId("an IMEI has 15 digits; this one lacks its check digit", raw)
    if len(digits) != 15:
        raise InvalidDeviceId(f"an IMEI has 15 digits, not {len(digits)}", raw)
    expected = imei_check_digit(digits[:14])
    if digits[14] != expected:
        raise InvalidDeviceId(f"wrong IMEI check digit: expected {expected}", raw)


def _check_namespace(namespace: str, raw: str) -> None:
    if len(namespace) > NAMESPACE_MAX_LENGTH or not _NAMESPACE.fullmatch(namespace):
        raise InvalidDeviceId(
            f"a namespace is 1 to {NAMESPACE_MAX_LENGTH} lower-case letters and digits"
            " in labels separated by '.' or '-'",
            raw,
        )
    if namespace in RESERVED_NAMESPACES:
        reserved = ", ".join(sorted(RESERVED_NAMESPACES))
        raise InvalidDeviceId(
            f"the namespace {namespace!r} is reserved: Digital Link path keys ({reserved}) name no namespace",
            raw,
        )


def _check_serial(serial: str, raw: str) -> None:
    if len(serial) > SERIAL_MAX_LENGTH or not _SERIAL.fullmatch(serial):
        raise InvalidDeviceId(f"a serial is 1 to {SERIAL_MAX_LENGTH} characters of A-Z a-z 0-9 - . _ ~", raw)
    _check_not_a_dot_segment(serial, raw)


# --- Digital Link ---------------------------------------------------------------------------------


def digital_link(device: DeviceId, resolver_base: str) -> str:
    """The device's URI under `resolver_base` (``https://host`` with an optional path prefix).

    The base is refused (``ValueError``) unless every link under it parses back: ASCII, at most
    ``RESOLVER_BASE_MAX_LENGTH`` characters, its percent-escapes UTF-8."""
    base = resolver_base.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"a resolver base is http(s)://host[/prefix], not {resolver_base!r}")
    if len(base) > RESOLVER_BASE_MAX_LENGTH or not base.isascii():
        raise ValueError(
            f"a resolver base is at most {RESOLVER_BASE_MAX_LENGTH} ASCII characters, not {resolver_base!r}"
        )
    if _PERCENT.search(parts.path) or not _decodes(parts.path):
        raise ValueError(f"a resolver base holds UTF-8 percent-escapes only, not {resolver_base!r}")
    return base + device.link_path


def _decodes(path: str) -> bool:
    try:
        unquote(path, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def parse_digital_link(uri: str) -> DeviceId:
    """The device a Digital Link URI names; raises :class:`InvalidDeviceId`."""
    text = _prepare(uri)
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # a host in brackets that is no IPv6 address, or unbalanced brackets
        raise InvalidDeviceId(f"not a URI: {exc}", uri) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise InvalidDeviceId("a Digital Link is an http(s) URI with a host", uri)
    if _PERCENT.search(parts.path):
        raise InvalidDeviceId("a '%' that starts no percent-escape", uri)
    segments = parts.path.removesuffix("/").split("/")
    try:
        values = [unquote(segment, errors="strict") for segment in segments]
    except UnicodeDecodeError:
        raise InvalidDeviceId("percent-escapes that are not UTF-8", uri) from None
    for shape in (_link_gs1, _link_imei, _link_serial):
        device = shape(values, uri)
        if device is not None:
            return device
    raise InvalidDeviceId("no /01/{GTIN}/21/{serial}, /imei/{IMEI} or /serial/{namespace}/{serial} path", uri)


def _link_gs1(values: list[str], uri: str) -> DeviceId | None:
    if len(values) < 4 or values[-2] != "21":
        return None
    # /01/{gtin} then zero, one or two qualifier pairs (/22/{cpv}, /10/{lot}) before /21/{serial}.
    for qualifier_keys in ([], ["10"], ["22"], ["22", "10"]):
        start = len(values) - 4 - 2 * len(qualifier_keys)
        if start >= 0 and values[start] == "01" and values[start + 2 : -2][::2] == qualifier_keys:
            _check_gs1_serial(values[-1], uri)
            return Gs1DeviceId(_normalise_gtin(values[start + 1], uri), values[-1])
    return None


def _link_imei(values: list[str], uri: str) -> DeviceId | None:
    if len(values) < 2 or values[-2] != "imei":
        return None
    _check_imei(values[-1], uri)
    return ImeiDeviceId(values[-1])


def _link_serial(values: list[str], uri: str) -> DeviceId | None:
    if len(values) < 3 or values[-3] != "serial":
        return None
    _check_namespace(values[-2], uri)
    _check_serial(values[-1], uri)
    return SerialDeviceId(values[-2], values[-1])
