"""EIP-4361 message parsing and checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.auth.siwe import SiweError, SiweMessage, check_message, parse_message

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ADDRESS = "0x2B5AD5c4795c026514f8317c7a215E218DcCD6cF"


def message(**changes: object) -> SiweMessage:
    base = SiweMessage(
        domain="exchange.example",
        address=ADDRESS,
        statement="Sign in to the patent-pool exchange.",
        uri="https://exchange.example/login",
        chain_id=31337,
        nonce="a1b2c3d4e5f6a7b8",
        issued_at=NOW,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_reference_message_parses() -> None:
    text = (
        "exchange.example wants you to sign in with your Ethereum account:\n"
        f"{ADDRESS}\n\nSign in to the patent-pool exchange.\n\n"
        "URI: https://exchange.example/login\nVersion: 1\nChain ID: 31337\n"
        "Nonce: a1b2c3d4e5f6a7b8\nIssued At: 2026-11-21T12:00:00Z\n"
        "Expiration Time: 2026-11-21T12:10:00Z\nResources:\n- https://exchange.example/terms"
    )
    parsed = parse_message(text)
    assert parsed.chain_id == 31337
    assert parsed.expiration_time == NOW + timedelta(minutes=10)
    assert parsed.resources == ("https://exchange.example/terms",)
    assert parsed.render() == text


@given(
    statement=st.one_of(
        st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=60)
    ),
    chain_id=st.integers(1, 2**63),
    nonce=st.text("abcdefABCDEF0123456789", min_size=8, max_size=32),
    expires=st.one_of(st.none(), st.integers(1, 10**6)),
    resources=st.lists(st.just("https://exchange.example/r"), max_size=3),
)
def test_render_parse_round_trip(
    statement: str | None, chain_id: int, nonce: str, expires: int | None, resources: list[str]
) -> None:
    original = message(
        statement=statement,
        chain_id=chain_id,
        nonce=nonce,
        expiration_time=None if expires is None else NOW + timedelta(seconds=expires),
        resources=tuple(resources),
    )
    assert parse_message(original.render()) == original


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("hello", "too few lines"),
        (message().render().replace(ADDRESS, ADDRESS.lower()), "EIP-55"),
        (message().render().replace("Version: 1", "Version: 2"), "unsupported version"),
        (message().render().replace("Nonce: a1b2c3d4e5f6a7b8", "Nonce: short"), "nonce"),
        (message().render().replace("Chain ID: 31337", "Chain ID: x1"), "chain id"),
        (message().render().replace("Issued At: 2026-11-21T12:00:00Z", "Issued At: yesterday"), "RFC 3339"),
        (message().render().replace("\nVersion: 1", ""), "missing field"),
        (message().render() + "\nBogus: 1", "unexpected line"),
        (message().render().replace("URI: ", "URI:  "), "RFC 3986"),
        (message().render().replace("Chain ID: 31337", "Chain ID: 3133\u00b2"), "chain id"),
        (message().render().replace("2026-11-21T12:00:00Z", "2026-11-21 12:00:00Z"), "RFC 3339"),
        (message().render().replace("2026-11-21T12:00:00Z", "2026-13-21T12:00:00Z"), "RFC 3339"),
        (message().render().replace("2026-11-21T12:00:00Z", "2026-11-21T12:00:00"), "RFC 3339"),
        (message().render().replace("Chain ID: 31337", "Chain ID: 031337"), "canonical"),
    ],
)
def test_malformed_messages_are_refused(text: str, reason: str) -> None:
    with pytest.raises(SiweError, match=reason):
        parse_message(text)


@pytest.mark.parametrize("empty_lines", ["\n\n\n", "\n\n"], ids=["grammar", "one-empty-line"])
def test_a_message_without_a_statement_is_taken_as_written(empty_lines: str) -> None:
    # The grammar (and siwe-js) puts two empty lines between the address and the URI when there
    # is no statement: the statement's and its own. Some signers write one.
    text = (
        f"exchange.example wants you to sign in with your Ethereum account:\n{ADDRESS}{empty_lines}"
        "URI: https://exchange.example/login\nVersion: 1\nChain ID: 31337\n"
        "Nonce: a1b2c3d4e5f6a7b8\nIssued At: 2026-11-21T12:00:00Z"
    )
    parsed = parse_message(text)
    assert parsed.statement is None
    assert parsed.render() == text
    assert message(statement=None).render().count("\n\n\n") == 1  # rendered as the grammar says


@pytest.mark.parametrize(
    "written",
    [
        "2026-11-21T12:00:00.123Z",  # JavaScript's toISOString, as siwe-js writes it
        "2026-11-21T12:00:00.123456789Z",
        "2026-11-21T12:00:00+00:00",
        "2026-11-21T13:00:00+01:00",
        "2026-11-21t12:00:00z",
    ],
)
def test_every_rfc_3339_spelling_of_a_time_is_taken_and_rendered_as_written(written: str) -> None:
    text = message(expiration_time=NOW).render().replace("2026-11-21T12:00:00Z", written)
    parsed = parse_message(text)
    assert parsed.render() == text  # the signed text, whatever the spelling
    assert abs(parsed.issued_at - NOW) < timedelta(seconds=1)
    assert parsed.expiration_time == parsed.issued_at


def test_checks_domain_chain_and_time_window() -> None:
    check_message(message(), domain="exchange.example", chain_id=31337, now=NOW)
    with pytest.raises(SiweError, match="domain"):
        check_message(message(), domain="evil.example", chain_id=31337, now=NOW)
    with pytest.raises(SiweError, match="chain"):
        check_message(message(), domain="exchange.example", chain_id=1, now=NOW)
    with pytest.raises(SiweError, match="expired"):
        check_message(message(expiration_time=NOW), domain="exchange.example", chain_id=31337, now=NOW)
    with pytest.raises(SiweError, match="future"):
        check_message(
            message(issued_at=NOW + timedelta(hours=1)), domain="exchange.example", chain_id=31337, now=NOW
        )
    with pytest.raises(SiweError, match="not valid yet"):
        check_message(
            message(not_before=NOW + timedelta(hours=1)), domain="exchange.example", chain_id=31337, now=NOW
        )


def _check(siwe: SiweMessage, domain: str = "exchange.example") -> None:
    check_message(siwe, domain=domain, chain_id=31337, now=NOW)


@pytest.mark.parametrize("scheme", ["http", "ftp", "chrome-extension"])
def test_a_scheme_other_than_https_is_refused(scheme: str) -> None:
    for taken in (None, "https", "HTTPS"):  # EIP-4361: no scheme means https
        _check(message(scheme=taken))
    with pytest.raises(SiweError, match=f"scheme '{scheme}', this service takes https"):
        _check(message(scheme=scheme))


@pytest.mark.parametrize("domain", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "app.localhost"])
def test_http_is_taken_only_on_a_loopback_domain(domain: str) -> None:
    # A local run is served over plain http on this machine; no one else can be in the middle.
    _check(message(scheme="http", domain=domain, uri=f"http://{domain}/"), domain=domain)
    _check(message(domain=domain, uri=f"https://{domain}/login"), domain=domain)
    with pytest.raises(SiweError, match="scheme 'ftp', this service takes http or https"):
        _check(message(scheme="ftp", domain=domain, uri=f"http://{domain}/"), domain=domain)


@pytest.mark.parametrize(
    "uri",
    [
        "https://attacker.example/",
        "https://exchange.example.attacker.example/login",
        "https://exchange.example@attacker.example/",
        "https://attacker.example/?next=https://exchange.example/",
        "https://exchange.example:8443/",
        "urn:exchange.example",
        "https://[exchange.example/",
    ],
)
def test_a_uri_off_the_sign_in_domain_is_refused(uri: str) -> None:
    with pytest.raises(SiweError, match="URI"):
        _check(message(uri=uri))


def test_a_uri_may_write_its_schemes_default_port() -> None:
    _check(message(uri="https://exchange.example:443/login"))
    check_message(
        message(domain="exchange.example:443", uri="https://exchange.example/"),
        domain="exchange.example:443",
        chain_id=31337,
        now=NOW,
    )
    with pytest.raises(SiweError, match="URI"):  # http's default port is not https's
        _check(message(uri="https://exchange.example:80/"))


def test_http_is_taken_off_loopback_only_when_allowed() -> None:
    domain = "192.168.1.20:8000"  # a development server on a private network
    lan = message(scheme="http", domain=domain, uri=f"http://{domain}/")
    with pytest.raises(SiweError, match="scheme 'http', this service takes https"):
        check_message(lan, domain=domain, chain_id=31337, now=NOW)
    check_message(lan, domain=domain, chain_id=31337, now=NOW, allow_http=True)
    with pytest.raises(SiweError, match="must use http or https"):
        check_message(
            message(domain=domain, uri=f"ftp://{domain}/"),
            domain=domain,
            chain_id=31337,
            now=NOW,
            allow_http=True,
        )


@pytest.mark.parametrize("uri", ["http://exchange.example/login", "ftp://exchange.example/"])
def test_a_uri_on_the_domain_by_another_scheme_is_refused(uri: str) -> None:
    _check(message(uri="https://EXCHANGE.example/login"))  # hosts are case-insensitive
    with pytest.raises(SiweError, match="must use https"):
        _check(message(uri=uri))


def test_a_uri_elsewhere_is_refused_on_a_loopback_domain_too() -> None:
    # Plain http is this local run's scheme, yet the session asked for is another site's.
    local = "127.0.0.1:8000"
    with pytest.raises(SiweError, match="not on this service's domain"):
        _check(message(scheme="http", domain=local, uri="https://attacker.example/"), domain=local)
