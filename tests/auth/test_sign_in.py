"""Sign-In with Ethereum through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct

from exchange.auth.siwe import SiweMessage
from tests.support.auth import signed_login


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
    issued = (await service.post("/v1/auth/nonce")).json()
    text = SiweMessage(
        domain=issued["domain"],
        address=account.address,
        uri="http://x/",
        chain_id=issued["chain_id"],
        nonce=issued["nonce"],
        issued_at=datetime.now(UTC).replace(microsecond=0),
    ).render()
    forged = other.sign_message(encode_defunct(text=text)).signature.hex()
    reply = await service.post(
        "/v1/auth/login", json={"message": text, "signature": "0x" + forged.removeprefix("0x")}
    )
    assert reply.status_code == 401
    assert "signature" in reply.json()["detail"]
    garbage = await service.post("/v1/auth/login", json={"message": text, "signature": "0x1234"})
    assert garbage.status_code == 401
    not_hex = await service.post("/v1/auth/login", json={"message": text, "signature": "nothex"})
    assert not_hex.status_code == 422
    # The nonce survived the failed attempts and still works once.
    good = account.sign_message(encode_defunct(text=text)).signature.hex()
    ok = await service.post(
        "/v1/auth/login", json={"message": text, "signature": "0x" + good.removeprefix("0x")}
    )
    assert ok.status_code == 200


async def test_protected_routes_need_a_token(service: httpx.AsyncClient) -> None:
    assert (await service.get("/v1/auth/me")).status_code == 401
    assert (await service.get("/v1/auth/me", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await service.post("/v1/auth/logout")).status_code == 401


async def test_contracts_route_shows_the_deployment(service: httpx.AsyncClient) -> None:
    body = (await service.get("/v1/contracts")).json()
    names = {c["name"] for c in body["contracts"]}
    assert {"PoolRegistry", "BPC", "BPR", "Fund", "LicenseGate"} <= names
    assert body["embedded"] is True
    assert body["head_block"] >= body["deploy_block"]
    health = (await service.get("/health")).json()
    assert health["checks"]["chain"]["ok"] is True
