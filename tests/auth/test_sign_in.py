"""Sign-In with Ethereum through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.auth import repository
from exchange.auth.models import AuthNonce, AuthSession
from exchange.auth.siwe import SiweMessage
from exchange.chain.runtime import ChainRuntime
from exchange.main import build_app
from exchange.settings import Settings
from tests.support.auth import embedded_account, signed_login
from tests.support.wallets import deploy_wallet

STRICT_BURST = 3


@pytest.fixture
async def strict_app(settings: Settings, chain_runtime: ChainRuntime) -> AsyncIterator[FastAPI]:
    """The whole service, allowing ``STRICT_BURST`` sign-in requests per IP and refilling hardly at all."""
    strict = settings.model_copy(update={"auth_rate_ip_per_s": 0.01, "auth_rate_ip_burst": STRICT_BURST})
    app = build_app(strict, chain=chain_runtime)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def public_service(settings: Settings, chain_runtime: ChainRuntime) -> AsyncIterator[httpx.AsyncClient]:
    """The whole service signing in for ``exchange.example``, a domain served over https only."""
    app = build_app(settings.model_copy(update={"siwe_domain": "exchange.example"}), chain=chain_runtime)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://exchange.example"
        ) as client,
    ):
        yield client


async def _from_ip(app: FastAPI, host: str, stack: AsyncExitStack) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://testserver")
    )


def _assert_rate_limited(reply: httpx.Response) -> None:
    assert reply.status_code == 429, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(reply.headers["retry-after"]) <= 100
    body = reply.json()
    assert body["status"] == 429
    assert body["type"].endswith("/rate-limited")
    assert body["retry_after_seconds"] == int(reply.headers["retry-after"])


async def _message_naming(service: httpx.AsyncClient, address: str) -> str:
    """A sign-in message naming ``address``, with a fresh nonce."""
    issued = (await service.post("/v1/auth/nonce")).json()
    return SiweMessage(
        domain=issued["domain"],
        address=address,
        uri=f"http://{issued['domain']}/",
        chain_id=issued["chain_id"],
        nonce=issued["nonce"],
        issued_at=datetime.now(UTC).replace(microsecond=0),
    ).render()


async def _login(service: httpx.AsyncClient, text: str, signer: LocalAccount) -> httpx.Response:
    """``text`` signed by ``signer``, sent to the login route."""
    signature = signer.sign_message(encode_defunct(text=text)).signature.hex()
    return await service.post(
        "/v1/auth/login", json={"message": text, "signature": "0x" + signature.removeprefix("0x")}
    )


async def test_sign_in_me_and_sign_out(service: httpx.AsyncClient) -> None:
    account = Account.create()
    reply, _ = await signed_login(service, account)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["address"] == account.address
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    me = await service.get("/v1/auth/me", headers=headers)
    assert me.json()["address"] == account.address
    assert (await service.post("/v1/auth/logout", headers=headers)).status_code == 204
    after = await service.get("/v1/auth/me", headers=headers)
    assert after.status_code == 401
    assert after.headers["content-type"].startswith("application/problem+json")


async def test_nonce_is_single_use(service: httpx.AsyncClient) -> None:
    account = Account.create()
    first, text = await signed_login(service, account)
    assert first.status_code == 200
    signature = account.sign_message(encode_defunct(text=text)).signature.hex()
    replay = await service.post(
        "/v1/auth/login", json={"message": text, "signature": "0x" + signature.removeprefix("0x")}
    )
    assert replay.status_code == 401
    assert "already used" in replay.json()["detail"]


async def test_a_message_issued_before_its_nonce_is_refused_and_the_nonce_stays_usable(
    service: httpx.AsyncClient,
) -> None:
    """A message cannot have been written before the nonce it holds was issued: an Issued At
    further back than the clock skew allows is refused, and the same nonce signs in once the
    message says when it was written."""
    account = Account.create()
    issued = (await service.post("/v1/auth/nonce")).json()

    def message(issued_at: datetime) -> str:
        return SiweMessage(
            domain=issued["domain"],
            address=account.address,
            uri=f"http://{issued['domain']}/",
            chain_id=issued["chain_id"],
            nonce=issued["nonce"],
            issued_at=issued_at,
        ).render()

    now = datetime.now(UTC).replace(microsecond=0)
    stale = await _login(service, message(datetime(2000, 1, 1, tzinfo=UTC)), account)
    assert stale.status_code == 401, stale.text
    assert "Issued At is before its nonce was issued" in stale.json()["detail"]
    far = await _login(service, message(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))), account)
    assert far.status_code == 401, far.text  # before year 1 in UTC: out of range, not a server error
    assert "Issued At is out of range" in far.json()["detail"]
    behind = await _login(service, message(now - timedelta(minutes=1)), account)  # a wallet's slow clock
    assert behind.status_code == 200, behind.text


async def test_refusals(service: httpx.AsyncClient) -> None:
    account, other = Account.create(), Account.create()
    wrong_domain, _ = await signed_login(service, account, domain="evil.example")
    assert wrong_domain.status_code == 401
    assert "domain" in wrong_domain.json()["detail"]
    wrong_chain, _ = await signed_login(service, account, chain_id=1)
    assert "chain" in wrong_chain.json()["detail"]
    unknown_nonce, _ = await signed_login(service, account, nonce="zzzzzzzzzzzzzzzz")
    assert "nonce" in unknown_nonce.json()["detail"]
    expired, _ = await signed_login(
        service, account, expiration_time=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert "expired" in expired.json()["detail"]
    # Someone else's signature over a message naming `account`.
    text = await _message_naming(service, account.address)
    reply = await _login(service, text, other)
    assert reply.status_code == 401
    assert "signature" in reply.json()["detail"]
    garbage = await service.post("/v1/auth/login", json={"message": text, "signature": "0x1234"})
    assert garbage.status_code == 401
    not_hex = await service.post("/v1/auth/login", json={"message": text, "signature": "nothex"})
    assert not_hex.status_code == 422
    # The nonce survived the failed attempts and still works once.
    assert (await _login(service, text, account)).status_code == 200


@pytest.mark.parametrize("signature", ["0x" + "00" * 65, "0x" + "ff" * 65], ids=["zeros", "ones"])
async def test_bytes_no_key_can_have_signed_are_refused_not_a_server_error(
    service: httpx.AsyncClient, signature: str
) -> None:
    account = Account.create()
    text = await _message_naming(service, account.address)
    reply = await service.post("/v1/auth/login", json={"message": text, "signature": signature})
    _assert_refused(reply, f"the signature is not {account.address}'s")


async def test_a_message_as_javascript_wallets_write_it_signs_in(service: httpx.AsyncClient) -> None:
    # siwe-js writes its times with JavaScript's toISOString: milliseconds and a Z.
    now = datetime.now(UTC)
    written = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    reply, text = await signed_login(
        service, Account.create(), issued_at=now, written_times=(written, None, None)
    )
    assert f"Issued At: {written}" in text
    assert reply.status_code == 200, reply.text


async def test_a_chain_id_of_other_digits_is_refused_not_a_server_error(service: httpx.AsyncClient) -> None:
    account = Account.create()
    text = re.sub(r"Chain ID: [0-9]+", "Chain ID: \u00b2", await _message_naming(service, account.address))
    reply = await _login(service, text, account)
    assert reply.status_code == 401, reply.text
    assert "chain id" in reply.json()["detail"]


async def test_a_signature_no_key_made_asks_the_embedded_chain_on_its_own_thread(
    service: httpx.AsyncClient, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Such a signature may be a contract wallet's (ERC-1271): the address's code is read. The
    # in-process EVM is not thread-safe, so that read must not come from a worker thread.
    threads: list[int] = []
    get_code = chain_runtime.w3.eth.get_code

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return get_code(*args, **kwargs)

    monkeypatch.setattr(chain_runtime.w3.eth, "get_code", recorded)
    text = await _message_naming(service, Account.create().address)
    reply = await _login(service, text, Account.create())
    assert reply.status_code == 401, reply.text
    assert threads == [threading.get_ident()]


def _assert_refused(reply: httpx.Response, reason: str) -> None:
    assert reply.status_code == 401, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["type"].endswith("/unauthorized")
    assert reason in reply.json()["detail"]


async def test_a_message_for_a_uri_elsewhere_is_refused(service: httpx.AsyncClient) -> None:
    # Correctly signed with a fresh nonce, over this local run's http, but for another site.
    account = Account.create()
    issued = (await service.post("/v1/auth/nonce")).json()
    reply, _ = await signed_login(
        service, account, scheme="http", uri="https://attacker.example/", nonce=issued["nonce"]
    )
    _assert_refused(reply, "not on this service's domain")
    # The nonce was not taken by the refusal.
    again, _ = await signed_login(service, account, scheme="http", nonce=issued["nonce"])
    assert again.status_code == 200, again.text


async def test_a_domain_not_on_this_machine_is_signed_in_to_over_https_only(
    public_service: httpx.AsyncClient,
) -> None:
    account = Account.create()
    over_http, _ = await signed_login(public_service, account, scheme="http", uri="https://exchange.example/")
    _assert_refused(over_http, "scheme 'http', this service takes https")
    http_uri, _ = await signed_login(public_service, account, uri="http://exchange.example/")
    _assert_refused(http_uri, "must use https")
    for scheme in (None, "https"):
        reply, _ = await signed_login(public_service, account, scheme=scheme, uri="https://exchange.example/")
        assert reply.status_code == 200, reply.text


def _erc1271_wallet(chain: ChainRuntime, owner: str) -> str:
    """The address of a contract wallet on ``chain`` that takes ``owner``'s signatures as its own."""
    return str(deploy_wallet(chain.w3, "ERC1271Wallet", owner, sender=embedded_account(0).address).address)


async def test_a_made_up_nonce_costs_no_chain_call(
    service: httpx.AsyncClient, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A contract wallet's signature is asked of its code (ERC-1271): an unknown nonce must be
    # refused before that, and a refused signature must leave a known nonce usable. The nonce is
    # taken only after the wallet answered: a transaction open across the call would hold
    # SQLite's write lock (or a PostgreSQL connection) for as long as the chain takes.
    owner, stranger = Account.create(), Account.create()
    wallet = _erc1271_wallet(chain_runtime, owner.address)
    calls: list[str] = []
    statements: list[str] = []

    def executed(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(Engine, "before_cursor_execute", executed)
    for name in ("get_code", "call"):
        method = getattr(chain_runtime.w3.eth, name)

        def recorded(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            if any(statement.startswith("UPDATE auth_nonces") for statement in statements):
                calls.append("after the nonce was taken")
            return _method(*args, **kwargs)

        monkeypatch.setattr(chain_runtime.w3.eth, name, recorded)

    try:
        await _made_up_then_signed(service, owner, stranger, wallet, calls)
    finally:
        event.remove(Engine, "before_cursor_execute", executed)


async def _made_up_then_signed(
    service: httpx.AsyncClient, owner: LocalAccount, stranger: LocalAccount, wallet: str, calls: list[str]
) -> None:
    made_up, _ = await signed_login(service, owner, address=wallet, nonce="zzzzzzzzzzzzzzzz")
    _assert_refused(made_up, "nonce is unknown")
    assert calls == []

    text = await _message_naming(service, wallet)
    _assert_refused(await _login(service, text, stranger), "signature")
    assert calls == ["get_code", "call"]
    signed_in = await _login(service, text, owner)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["address"] == wallet


async def test_a_node_that_cannot_ask_the_wallet_is_a_503_and_the_nonce_stays_usable(
    service: httpx.AsyncClient, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = Account.create()
    wallet = _erc1271_wallet(chain_runtime, owner.address)
    text = await _message_naming(service, wallet)
    asked = chain_runtime.w3.eth.call

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("the node went away")

    monkeypatch.setattr(chain_runtime.w3.eth, "call", unreachable)
    reply = await _login(service, text, owner)
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["type"].endswith("/chain-unavailable")

    monkeypatch.setattr(chain_runtime.w3.eth, "call", asked)  # the node is back: the same message
    signed_in = await _login(service, text, owner)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["address"] == wallet


async def test_protected_routes_need_a_token(service: httpx.AsyncClient) -> None:
    # Every 401 names the scheme (RFC 9110); a token that is no session's says so (RFC 6750).
    for anonymous in (await service.get("/v1/auth/me"), await service.post("/v1/auth/logout")):
        assert (anonymous.status_code, anonymous.headers["www-authenticate"]) == (401, "Bearer")
    for path in ("/v1/auth/me", "/v1/orders", "/v1/account/balances"):
        unknown = await service.get(path, headers={"Authorization": "Bearer nope"})
        challenge = unknown.headers["www-authenticate"]
        assert (unknown.status_code, challenge) == (401, 'Bearer error="invalid_token"'), path


async def test_contracts_route_shows_the_deployment(service: httpx.AsyncClient) -> None:
    body = (await service.get("/v1/contracts")).json()
    names = {c["name"] for c in body["contracts"]}
    assert {"PoolRegistry", "BPC", "BPR", "Fund", "LicenseGate"} <= names
    assert body["embedded"] is True
    assert body["head_block"] >= body["deploy_block"]
    health = (await service.get("/health")).json()
    assert health["checks"]["chain"]["ok"] is True


async def test_nonces_are_rate_limited_per_client_ip(strict_app: FastAPI) -> None:
    async with AsyncExitStack() as stack:
        client = await _from_ip(strict_app, "198.51.100.7", stack)
        for _ in range(STRICT_BURST):
            assert (await client.post("/v1/auth/nonce")).status_code == 201
        _assert_rate_limited(await client.post("/v1/auth/nonce"))
        other = await _from_ip(strict_app, "198.51.100.8", stack)
        assert (await other.post("/v1/auth/nonce")).status_code == 201


async def test_an_ipv6_client_is_limited_by_its_64_bit_prefix(strict_app: FastAPI) -> None:
    """A host owns a whole /64: the addresses it can rotate through share one bucket."""
    async with AsyncExitStack() as stack:
        for index in range(STRICT_BURST):
            rotating = await _from_ip(strict_app, f"2001:db8:1:2::{index + 1:x}", stack)
            assert (await rotating.post("/v1/auth/nonce")).status_code == 201
        last = await _from_ip(strict_app, "2001:db8:1:2:ffff:ffff:ffff:ffff", stack)
        _assert_rate_limited(await last.post("/v1/auth/nonce"))
        mapped = await _from_ip(strict_app, "::ffff:198.51.100.9", stack)  # an IPv4 client: its own
        assert (await mapped.post("/v1/auth/nonce")).status_code == 201
        other = await _from_ip(strict_app, "2001:db8:1:3::1", stack)
        assert (await other.post("/v1/auth/nonce")).status_code == 201


async def test_logins_are_rate_limited_per_client_ip(strict_app: FastAPI) -> None:
    text = SiweMessage(
        domain="testserver",
        address=Account.create().address,
        uri="http://testserver/",
        chain_id=1,
        nonce="zzzzzzzzzzzzzzzz",
        issued_at=datetime.now(UTC).replace(microsecond=0),
    ).render()
    attempt = {"message": text, "signature": "0x" + "11" * 65}
    async with AsyncExitStack() as stack:
        client = await _from_ip(strict_app, "198.51.100.7", stack)
        for _ in range(STRICT_BURST):
            assert (await client.post("/v1/auth/login", json=attempt)).status_code == 401
        _assert_rate_limited(await client.post("/v1/auth/login", json=attempt))
        other = await _from_ip(strict_app, "198.51.100.8", stack)
        assert (await other.post("/v1/auth/login", json=attempt)).status_code == 401


async def test_sign_in_routes_document_their_429(service: httpx.AsyncClient) -> None:
    paths = (await service.get("/openapi.json")).json()["paths"]
    for path in ("/v1/auth/nonce", "/v1/auth/login"):
        assert "rate-limited" in paths[path]["post"]["responses"]["429"]["description"]


async def test_session_routes_document_their_401(service: httpx.AsyncClient) -> None:
    paths = (await service.get("/openapi.json")).json()["paths"]
    for path, method in (("/v1/auth/me", "get"), ("/v1/auth/logout", "post")):
        documented = paths[path][method]["responses"]["401"]
        assert "unauthorized" in documented["description"]
        assert "application/problem+json" in documented["content"]
        sent = await service.request(method.upper(), path, headers={"Authorization": "Bearer unknown"})
        _assert_refused(sent, "unknown, expired or revoked")


async def _nonces(sessionmaker: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessionmaker() as session:
        return set(await session.scalars(select(AuthNonce.nonce)))


async def test_issuing_a_nonce_deletes_unused_nonces_expired_beyond_the_grace(
    service: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    account = Account.create()
    signed_in, _ = await signed_login(service, account)
    assert signed_in.status_code == 200
    headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    waiting = (await service.post("/v1/auth/nonce")).json()["nonce"]
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        for index in range(3):
            await repository.add_nonce(
                session, f"stale-{index}", now - timedelta(hours=2), now - timedelta(hours=1)
            )
        await repository.add_nonce(
            session, "just-expired", now - timedelta(minutes=5), now - timedelta(seconds=1)
        )
        # The session's nonce expired long ago too, but the session refers to it.
        await session.execute(
            update(AuthNonce)
            .where(AuthNonce.used_at.is_not(None))
            .values(expires_at=now - timedelta(hours=1))
        )
        used = set(await session.scalars(select(AuthNonce.nonce).where(AuthNonce.used_at.is_not(None))))
    assert len(used) == 1

    fresh = (await service.post("/v1/auth/nonce")).json()["nonce"]

    assert await _nonces(sessionmaker) == {fresh, waiting, "just-expired", *used}
    assert (await service.get("/v1/auth/me", headers=headers)).status_code == 200
    later, _ = await signed_login(service, Account.create(), nonce=waiting)
    assert later.status_code == 200, later.text


async def test_one_purge_deletes_at_most_its_batch(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        for index in range(3):
            await repository.add_nonce(
                session, f"stale-{index}", now - timedelta(hours=2), now - timedelta(hours=1)
            )
        assert await repository.purge_expired_nonces(session, now, limit=2) == 2
    assert len(await _nonces(sessionmaker)) == 1


async def _sessions(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[int, str]:
    async with sessionmaker() as session:
        return {
            row.id: row.nonce for row in (await session.execute(select(AuthSession.id, AuthSession.nonce)))
        }


async def test_signing_in_deletes_sessions_expired_beyond_the_grace_with_their_nonces(
    service: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for _ in range(3):
        assert (await signed_login(service, Account.create()))[0].status_code == 200
    live, _ = await signed_login(service, Account.create())
    headers = {"Authorization": f"Bearer {live.json()['access_token']}"}
    before = await _sessions(sessionmaker)
    stale, just_expired = sorted(before)[:2], sorted(before)[2]
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(AuthSession).where(AuthSession.id.in_(stale)).values(expires_at=now - timedelta(hours=1))
        )
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == just_expired)
            .values(expires_at=now - timedelta(seconds=1))
        )

    newest, _ = await signed_login(service, Account.create())
    assert newest.status_code == 200, newest.text

    after = await _sessions(sessionmaker)
    assert set(before) - set(after) == set(stale)
    nonces = await _nonces(sessionmaker)
    assert not nonces & {before[id_] for id_ in stale}
    assert before[just_expired] in nonces
    assert (await service.get("/v1/auth/me", headers=headers)).status_code == 200


async def test_one_session_purge_deletes_at_most_its_batch(
    service: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    for _ in range(3):
        assert (await signed_login(service, Account.create()))[0].status_code == 200
    now = datetime.now(UTC)
    async with sessionmaker() as session, session.begin():
        await session.execute(update(AuthSession).values(expires_at=now - timedelta(hours=1)))
        assert await repository.purge_expired_sessions(session, now, limit=2) == 2
    assert len(await _sessions(sessionmaker)) == 1
