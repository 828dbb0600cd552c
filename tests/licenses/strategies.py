"""Hypothesis strategies for device ids, with check digits computed independently of the code under test."""

from __future__ import annotations

from hypothesis import strategies as st

from exchange.licenses.device_ids import (
    DeviceId,
    Gs1DeviceId,
    ImeiDeviceId,
    SerialDeviceId,
)

CSET82 = sorted("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
SERIAL_CHARACTERS = sorted("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
DIGITS = "0123456789"


def gtin_is_valid(gtin: str) -> bool:
    """GS1 General Specifications 7.9.1: weights 1, 3, 1, 3, ... from the right, check digit included."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(reversed(gtin)))
    return total % 10 == 0


def luhn_is_valid(number: str) -> bool:
    """ISO/IEC 7812 Luhn: double every second digit from the right, add the digits."""
    total = 0
    for i, d in enumerate(reversed(number)):
        value = int(d) * (2 if i % 2 else 1)
        total += value // 10 + value % 10
    return total % 10 == 0


def complete(body: str, is_valid: object) -> str:
    """`body` followed by the one digit that makes it valid."""
    assert callable(is_valid)
    (number,) = [body + d for d in DIGITS if is_valid(body + d)]
    return number


@st.composite
def gtins(draw: st.DrawFn) -> str:
    """A valid GTIN-8, -12, -13 or -14 (not all zeros), as written (unpadded)."""
    length = draw(st.sampled_from([8, 12, 13, 14]))
    body = draw(st.text(DIGITS, min_size=length - 1, max_size=length - 1).filter(lambda b: b.strip("0")))
    return complete(body, gtin_is_valid)


#: A link's path cannot carry a serial of "." or "..": both are refused (dot segments).
DOT_SEGMENTS = (".", "..")

gs1_serials = st.text(CSET82, min_size=1, max_size=20).filter(lambda serial: serial not in DOT_SEGMENTS)


@st.composite
def imeis(draw: st.DrawFn) -> str:
    return complete(draw(st.text(DIGITS, min_size=14, max_size=14)), luhn_is_valid)


#: The Digital Link path keys, which no namespace may be: a serial link's namespace sits where
#: the IMEI and GS1 shapes read their key (``/serial/imei/{imei}``, ``/01/…/21/{serial}``).
RESERVED_NAMESPACES = ("01", "10", "21", "22", "imei", "serial")

#: Well-formed namespaces, the reserved ones among them (a valid id refuses those).
namespaces = st.sampled_from(RESERVED_NAMESPACES) | st.from_regex(
    r"[a-z0-9]{1,10}([.-][a-z0-9]{1,10}){0,3}", fullmatch=True
)
valid_namespaces = namespaces.filter(lambda namespace: namespace not in RESERVED_NAMESPACES)
manufacturer_serials = st.text(SERIAL_CHARACTERS, min_size=1, max_size=64).filter(
    lambda serial: serial not in DOT_SEGMENTS
)

#: Resolver bases whose path ends in any segments, Digital Link path keys included.
resolver_bases = st.builds(
    lambda host, segments: host + "".join(f"/{segment}" for segment in segments),
    st.sampled_from(["https://id.example.org", "http://127.0.0.1:8000", "HTTPS://ID.EXAMPLE"]),
    st.lists(
        st.sampled_from([*RESERVED_NAMESPACES, "09506000134352", "490154203237518", "dl", "acme"]),
        max_size=5,
    ),
)


@st.composite
def device_ids(draw: st.DrawFn) -> DeviceId:
    """A valid device id of any scheme."""
    scheme = draw(st.sampled_from(["gs1", "imei", "serial"]))
    if scheme == "gs1":
        return Gs1DeviceId(draw(gtins()).zfill(14), draw(gs1_serials))
    if scheme == "imei":
        return ImeiDeviceId(draw(imeis()))
    return SerialDeviceId(draw(valid_namespaces), draw(manufacturer_serials))


def substitute_digit(number: str, position: int, replacement: str) -> str:
    return number[:position] + replacement + number[position + 1 :]
