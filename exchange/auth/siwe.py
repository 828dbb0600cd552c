"""EIP-4361 (Sign-In with Ethereum) messages: parse, render, check. Pure: no I/O, no clock.

The message grammar (EIP-4361 ABNF, abridged)::

    [scheme "://"] domain " wants you to sign in with your Ethereum account:" LF
    address LF
    LF
    [statement LF]
    LF
    "URI: " uri LF
    "Version: 1" LF
    "Chain ID: " chain-id LF
    "Nonce: " nonce LF                      (at least 8 alphanumerics)
    "Issued At: " RFC 3339 date-time
    [LF "Expiration Time: " date-time]
    [LF "Not Before: " date-time]
    [LF "Request ID: " request-id]
    [LF "Resources:" *(LF "- " uri)]

``check_message`` enforces what a verifier must: the expected domain, scheme and
chain id, a URI naming this service, the validity window, and an EIP-55 address.
The nonce and the signature (EOA recovery or ERC-1271) are the caller's to check.

Schemes: the service is reached over ``https``, which a message without a scheme
means (EIP-4361's default); plain ``http`` is taken only when the sign-in domain is
a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``), as a local run is served.
The header's scheme and the URI's follow that rule, and the URI's authority must be
the sign-in domain itself: a session is for this service, not for a resource elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from eth_utils.address import is_checksum_address

_HEADER = re.compile(
    r"^(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+\-.]*)://)?(?P<domain>[^\s/?#]+) "
    r"wants you to sign in with your Ethereum account:$"
)
_NONCE = re.compile(r"^[a-zA-Z0-9]{8,}$")
_CHAIN_ID = re.compile(r"[0-9]+")
# RFC 3339 date-time: any number of fraction digits (JavaScript's toISOString writes milliseconds).
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_TAGGED = ("URI", "Version", "Chain ID", "Nonce", "Issued At", "Expiration Time", "Not Before", "Request ID")
_REQUIRED = ("URI", "Version", "Chain ID", "Nonce", "Issued At")
MAX_CLOCK_SKEW = timedelta(minutes=2)


class SiweError(ValueError):
    """The message is malformed, or fails a check; the text says which and why."""


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    scheme: str | None = None
    version: str = "1"
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default_factory=tuple)
    # The date-times as the signed text wrote them (parsed messages), rendered back verbatim:
    # RFC 3339 allows several spellings of one instant, and the signature covers the spelling.
    written_times: tuple[str | None, str | None, str | None] = field(
        default=(None, None, None), compare=False
    )
    # Without a statement the grammar has two empty lines before the URI; some signers write one.
    one_empty_line: bool = field(default=False, compare=False)

    def render(self) -> str:
        """The exact text a wallet signs."""
        issued, expires, not_before = self.written_times
        prefix = f"{self.scheme}://" if self.scheme else ""
        lines = [f"{prefix}{self.domain} wants you to sign in with your Ethereum account:", self.address, ""]
        if self.statement is not None:
            lines += [self.statement, ""]
        elif not self.one_empty_line:
            lines.append("")
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {issued or _format_time(self.issued_at)}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {expires or _format_time(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {not_before or _format_time(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines.append("Resources:")
            lines += [f"- {resource}" for resource in self.resources]
        return "\n".join(lines)


def _format_time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse_time(name: str, raw: str) -> datetime:
    refused = SiweError(f"{name} is not an RFC 3339 date-time with a time zone offset: {raw!r}")
    if not _DATE_TIME.fullmatch(raw):
        raise refused
    try:
        return datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError as exc:  # a month 13, a 25th hour
        raise refused from exc


def parse_message(text: str) -> SiweMessage:
    """Parse an EIP-4361 message; raise ``SiweError`` naming the first problem."""
    lines = text.split("\n")
    if len(lines) < 8:
        raise SiweError("not a Sign-In with Ethereum message: too few lines")
    header = _HEADER.match(lines[0])
    if header is None:
        raise SiweError("first line must be '<domain> wants you to sign in with your Ethereum account:'")
    address = lines[1]
    if not is_checksum_address(address):
        raise SiweError(f"address must be an EIP-55 checksummed address, got {address!r}")
    if lines[2] != "":
        raise SiweError("expected an empty line after the address")
    index = 3
    statement: str | None = None
    one_empty_line = lines[index].startswith("URI: ")
    if not one_empty_line:
        if lines[index] == "":
            index += 1
        else:
            statement = lines[index]
            if index + 1 >= len(lines) or lines[index + 1] != "":
                raise SiweError("expected an empty line after the statement")
            index += 2
    fields: dict[str, str] = {}
    resources: list[str] = []
    expected = iter(_TAGGED)
    while index < len(lines):
        line = lines[index]
        index += 1
        if line == "Resources:":
            resources = [r[2:] for r in lines[index:] if r.startswith("- ")]
            if len(resources) != len(lines) - index:
                raise SiweError("every resource line must start with '- '")
            break
        tag, separator, value = line.partition(": ")
        if not separator or tag not in _TAGGED:
            raise SiweError(f"unexpected line {line!r}")
        for candidate in expected:  # tags must appear in the grammar's order
            if candidate == tag:
                break
        else:
            raise SiweError(f"field {tag!r} is out of order or repeated")
        fields[tag] = value
    missing = [tag for tag in _REQUIRED if tag not in fields]
    if missing:
        raise SiweError(f"missing field(s): {', '.join(missing)}")
    if fields["Version"] != "1":
        raise SiweError(f"unsupported version {fields['Version']!r}")
    if not _CHAIN_ID.fullmatch(fields["Chain ID"]):
        raise SiweError(f"chain id must be a decimal integer, got {fields['Chain ID']!r}")
    if not fields["URI"] or any(char.isspace() for char in fields["URI"]):
        raise SiweError(f"URI must be an RFC 3986 URI, got {fields['URI']!r}")
    if not _NONCE.match(fields["Nonce"]):
        raise SiweError("nonce must be at least 8 alphanumeric characters")
    message = SiweMessage(
        scheme=header["scheme"],
        domain=header["domain"],
        address=address,
        statement=statement,
        uri=fields["URI"],
        version=fields["Version"],
        chain_id=int(fields["Chain ID"]),
        nonce=fields["Nonce"],
        issued_at=_parse_time("Issued At", fields["Issued At"]),
        expiration_time=_parse_time("Expiration Time", fields["Expiration Time"])
        if "Expiration Time" in fields
        else None,
        not_before=_parse_time("Not Before", fields["Not Before"]) if "Not Before" in fields else None,
        request_id=fields.get("Request ID"),
        resources=tuple(resources),
        written_times=(fields["Issued At"], fields.get("Expiration Time"), fields.get("Not Before")),
        one_empty_line=one_empty_line,
    )
    if message.render() != text:
        raise SiweError("message is not in canonical EIP-4361 form (whitespace or formatting differs)")
    return message


def _is_loopback(domain: str) -> bool:
    """Whether the host of ``domain`` (host[:port]) is this machine: a local run's sign-in domain."""
    try:
        host = urlsplit(f"//{domain}").hostname or ""
    except ValueError:  # an unbalanced IPv6 bracket
        return False
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: names of loopback
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return False


_DEFAULT_PORTS = {"https": ":443", "http": ":80"}


def _authority(netloc: str, scheme: str) -> str:
    """``netloc`` compared case-insensitively, the scheme's default port written or not."""
    netloc = netloc.lower()
    return netloc.removesuffix(_DEFAULT_PORTS.get(scheme, ""))


def _check_uri(uri: str, *, domain: str, schemes: frozenset[str]) -> None:
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise SiweError(f"URI {uri!r} is not a URI of this service") from exc
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise SiweError(f"URI {uri!r} must use {' or '.join(sorted(schemes))}")
    # The authority, user info included: `https://exchange.example@attacker.example/` is not ours.
    # Hosts are case-insensitive, so is the comparison; `https://exchange.example:443/` is ours.
    if _authority(parts.netloc, scheme) != _authority(domain, scheme):
        raise SiweError(f"URI {uri!r} is not on this service's domain {domain!r}")


def check_message(
    message: SiweMessage, *, domain: str, chain_id: int, now: datetime, allow_http: bool = False
) -> None:
    """Raise ``SiweError`` unless the message is for this service (domain, scheme, URI) and chain,
    and valid at `now`. ``http`` is taken on a loopback domain, or anywhere with ``allow_http``
    (a development server on a private network)."""
    if message.domain != domain:
        raise SiweError(f"message is for domain {message.domain!r}, this service is {domain!r}")
    schemes = frozenset({"https", "http"} if allow_http or _is_loopback(domain) else {"https"})
    if message.scheme is not None and message.scheme.lower() not in schemes:
        raise SiweError(
            f"message is for scheme {message.scheme!r}, this service takes {' or '.join(sorted(schemes))}"
        )
    _check_uri(message.uri, domain=domain, schemes=schemes)
    if message.chain_id != chain_id:
        raise SiweError(f"message is for chain {message.chain_id}, this service is on chain {chain_id}")
    if message.issued_at > now + MAX_CLOCK_SKEW:
        raise SiweError("message is issued in the future")
    if message.expiration_time is not None and message.expiration_time <= now:
        raise SiweError("message has expired")
    if message.not_before is not None and message.not_before > now + MAX_CLOCK_SKEW:
        raise SiweError("message is not valid yet")
