"""Licence certificates: EIP-712 signatures by keys and ERC-1271 wallets, every failure reason, QR codes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from exchange.chain.pool import PoolChain, Tier
from exchange.chain.signatures import eip191_hash
from exchange.licenses import routes
from exchange.licenses.barcodes import decode_one
from exchange.licenses.certificates import Certificate
from tests.chain.nodes import advance_time
from tests.licenses_service.conftest import BPC, Service, account, licensed_member
from tests.support.wallets import act_as, deploy_wallet


def now(service: Service) -> int:
    return int(service.w3.eth.get_block("latest")["timestamp"])


def certificate(service: Service, holder: str, **changes: Any) -> Certificate:
    fields: dict[str, Any] = {
        "chain_id": service.w3.eth.chain_id,
        "verifying_contract": service.pool.bpr.address,
        "holder": holder,
        "pool": service.pool.registry.address,
        "statement": "holds a licence to every patent in the pool",
        "issued_at": now(service) - 60,
        "expires_at": now(service) + 3_600,
        "nonce": 1,
    }
    fields.update(changes)
    return Certificate(**fields)


def signed(signer: LocalAccount, cert: Certificate) -> dict[str, Any]:
    signature = signer.sign_message(cert.signable()).signature
    return {"certificate": cert.typed_data(), "signature": "0x" + bytes(signature).hex()}


async def verify(service: Service, body: dict[str, Any], block: int | None = None) -> dict[str, Any]:
    reply = await service.client.post("/v1/licences/certificates/verify", json={**body, "block": block})
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def codes(result: dict[str, Any]) -> list[str]:
    return [reason["code"] for reason in result["reasons"]]


async def test_a_licensed_holders_certificate_is_valid(licensing: Service) -> None:
    holder = account(1)
    licensed_member(licensing.pool, holder)
    draft = await licensing.client.get("/v1/licences/certificates/draft", params={"holder": holder.address})
    typed = draft.json()
    cert = Certificate.from_typed_data(typed)
    assert cert.verifying_contract == licensing.pool.bpr.address
    signature = holder.sign_typed_data(full_message=typed).signature
    result = await verify(licensing, {"certificate": typed, "signature": "0x" + bytes(signature).hex()})
    assert result["valid"] is True, result
    assert result["reasons"] == []
    assert result["signer"] == holder.address
    assert result["licence"]["kind"] == "locked"
    # The compact form verifies the same way.
    compact = await verify(licensing, {"compact": result["compact"]})
    assert compact["valid"] is True
    assert compact["certificate"] == result["certificate"]
    # At a block before the licence was acquired, the same certificate fails for that reason.
    since = result["licence"]["since_block"]
    earlier = await verify(licensing, {"compact": result["compact"]}, block=since - 1)
    assert earlier["valid"] is False
    # That block may also be older than the certificate's issue time (a second apart): not yet valid.
    assert set(codes(earlier)) in ({"holder_not_licensed"}, {"holder_not_licensed", "not_yet_valid"}), earlier
    [unlicensed] = [reason for reason in earlier["reasons"] if reason["code"] == "holder_not_licensed"]
    assert f"at block {since - 1}" in unlicensed["message"]


async def test_a_draft_holds_at_once_on_a_chain_whose_blocks_lag_the_clock(
    licensing: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = account(1)
    licensed_member(licensing.pool, holder)
    latest = now(licensing)
    # The server's clock two hours past the latest block, as on an idle chain that mines on demand.
    monkeypatch.setattr(routes, "time", SimpleNamespace(time=lambda: latest + 7_200.5))
    draft = await licensing.client.get(
        "/v1/licences/certificates/draft", params={"holder": holder.address, "valid_for_s": 3_600}
    )
    typed = draft.json()
    cert = Certificate.from_typed_data(typed)
    assert (cert.issued_at, cert.expires_at) == (latest, latest + 7_200 + 3_600)  # 3,600 s from now
    signature = holder.sign_typed_data(full_message=typed).signature
    body = {"certificate": typed, "signature": "0x" + bytes(signature).hex()}
    result = await verify(licensing, body)
    assert result["valid"] is True, result
    advance_time(licensing.w3, 7_200)  # the next block, mined at the clock's time: still valid
    assert (await verify(licensing, body))["valid"] is True


async def test_every_failure_reason(licensing: Service) -> None:
    holder, other = account(1), account(2)
    licensed_member(licensing.pool, holder)
    cases: dict[str, tuple[LocalAccount, Certificate]] = {
        "signer_not_holder": (other, certificate(licensing, holder.address)),
        "wrong_chain": (holder, certificate(licensing, holder.address, chain_id=1)),
        "wrong_pool": (holder, certificate(licensing, holder.address, verifying_contract=other.address)),
        "not_yet_valid": (holder, certificate(licensing, holder.address, issued_at=now(licensing) + 600)),
        "expired": (
            holder,
            certificate(
                licensing, holder.address, issued_at=now(licensing) - 600, expires_at=now(licensing) - 1
            ),
        ),
        "holder_not_licensed": (other, certificate(licensing, other.address)),
    }
    for expected, (signer, cert) in cases.items():
        result = await verify(licensing, signed(signer, cert))
        assert result["valid"] is False
        assert codes(result) == [expected], (expected, result["reasons"])
    wrong_registry = await verify(
        licensing, signed(holder, certificate(licensing, holder.address, pool=other.address))
    )
    assert codes(wrong_registry) == ["wrong_pool"]

    body = signed(holder, certificate(licensing, holder.address))
    truncated = await verify(licensing, {**body, "signature": body["signature"][:40]})
    assert codes(truncated) == ["bad_signature"]
    # A signature over other fields is not the holder's signature of these.
    tampered = {**body, "certificate": certificate(licensing, holder.address, nonce=2).typed_data()}
    assert codes(await verify(licensing, tampered))[0] in {"signer_not_holder", "bad_signature"}
    # Several reasons at once are all reported.
    many = await verify(licensing, signed(other, certificate(licensing, other.address, chain_id=5)))
    assert codes(many) == ["wrong_chain", "holder_not_licensed"]


@pytest.mark.parametrize(
    "signature",
    [bytes(65), b"\xff" * 65, bytes(32) + bytes(31) + b"\x01" + b"\x1b", b""],
    ids=["zeros", "ones", "r-zero", "empty"],
)
async def test_bytes_no_key_can_have_signed_are_a_bad_signature_not_a_server_error(
    licensing: Service, signature: bytes
) -> None:
    """65 bytes whose r or s is out of range, or no bytes at all, recover to no key."""
    holder = account(1)
    licensed_member(licensing.pool, holder)
    cert = certificate(licensing, holder.address)
    compact = await verify(licensing, {"compact": cert.to_compact(signature)})
    assert compact["valid"] is False
    assert codes(compact) == ["bad_signature"]
    assert compact["signer"] is None
    typed = await verify(licensing, {"certificate": cert.typed_data(), "signature": "0x" + signature.hex()})
    assert codes(typed) == ["bad_signature"]


async def test_expired_fee_licence(licensing: Service) -> None:
    pool, buyer = licensing.pool, account(5)
    pool.set_fee_licence_terms(10 * BPC, 600)
    pool.mint_bpc(buyer.address, 10 * BPC)
    pool.buy_fee_licence(sender=buyer.address)
    body = signed(buyer, certificate(licensing, buyer.address, expires_at=now(licensing) + 86_400))
    assert (await verify(licensing, body))["valid"] is True
    advance_time(licensing.w3, 700)
    later = await verify(licensing, body)
    assert codes(later) == ["fee_licence_expired"]


async def test_an_expelled_holders_certificate_fails_before_its_licence_is_revoked(
    licensing: Service,
) -> None:
    """Expulsion and revocation are two transactions: from the expulsion on, the certificate
    fails, though the licence is still live until the revocation lands. Suspension keeps it."""
    pool, holder = licensing.pool, account(1)
    licensed_member(pool, holder)
    body = signed(holder, certificate(licensing, holder.address))
    pool.suspend(holder.address)
    suspended = await verify(licensing, body)
    assert suspended["valid"] is True, suspended
    expelled_at = int(pool.expel(holder.address)["blockNumber"])
    assert pool.is_licensed(holder.address)  # not revoked yet
    expelled = await verify(licensing, body)
    assert expelled["valid"] is False
    assert codes(expelled) == ["holder_expelled"]
    assert f"at block {expelled_at}" in expelled["reasons"][0]["message"]
    assert expelled["licence"]["licensed"] is True
    # Judged at the block before, the same certificate held.
    assert (await verify(licensing, body, block=expelled_at - 1))["valid"] is True
    pool.revoke(holder.address)
    assert codes(await verify(licensing, body)) == ["holder_not_licensed", "holder_expelled"]


def licensed_wallet(pool: PoolChain, contract: str, owner: str) -> tuple[Contract, int]:
    """A test wallet (`contract`, owned by `owner`) deployed on `pool`'s chain, admitted as a
    non-profit member, holding the (free) licence it took itself; and the block it was deployed at."""
    wallet = deploy_wallet(pool.w3, contract, owner)
    deployed = int(pool.w3.eth.block_number)
    pool.admit(wallet.address, Tier.NON_PROFIT)
    act_as(wallet, owner, pool.gate.contract, "acquire", 0)
    return wallet, deployed


async def test_contract_wallets_sign_through_erc1271(licensing: Service) -> None:
    owner, stranger = account(6), account(7)
    wallet, _ = licensed_wallet(licensing.pool, "ERC1271Wallet", owner.address)
    wallet_address = wallet.address
    assert licensing.pool.is_licensed(wallet_address)

    cert = certificate(licensing, wallet_address)
    by_owner = await verify(licensing, signed(owner, cert))
    assert by_owner["valid"] is True, by_owner
    assert by_owner["signer"] == owner.address  # the key behind the wallet
    by_stranger = await verify(licensing, signed(stranger, cert))
    assert codes(by_stranger) == ["signer_not_holder"]


async def test_a_contract_wallets_approval_is_judged_at_the_block_checked(licensing: Service) -> None:
    """The wallet's ERC-1271 answer is asked at the block the licence is read at: a signature the
    wallet approved only later, or stopped approving since, is judged as the wallet judged it then."""
    owner, w3 = account(8), licensing.w3
    wallet, deployed = licensed_wallet(licensing.pool, "ERC1271ApprovingWallet", owner.address)
    wallet_address = wallet.address
    # Issued no later than the block before the wallet, which is checked too.
    cert = certificate(licensing, wallet_address, issued_at=int(w3.eth.get_block(deployed - 1)["timestamp"]))
    body = signed(owner, cert)
    digest = eip191_hash(cert.signable())

    def set_approval(approval: bool) -> int:
        sent = wallet.functions.setApproval(digest, approval).transact({"from": owner.address})
        return int(w3.eth.wait_for_transaction_receipt(sent)["blockNumber"])

    licensed = int(w3.eth.block_number)
    assert codes(await verify(licensing, body)) == ["signer_not_holder"]  # not approved yet
    approved = set_approval(True)
    assert approved > licensed
    now_valid = await verify(licensing, body)
    assert now_valid["valid"] is True, now_valid
    assert now_valid["licence"]["block"] == approved
    # Before the approval the wallet did not vouch for the signature, though licensed then.
    before = await verify(licensing, body, block=licensed)
    assert codes(before) == ["signer_not_holder"], before
    assert before["licence"]["kind"] == "non_profit"
    assert before["signer"] == owner.address
    withdrawn = set_approval(False)
    assert codes(await verify(licensing, body)) == ["signer_not_holder"]
    # While approved it did, though it no longer does.
    assert (await verify(licensing, body, block=withdrawn - 1))["valid"] is True
    assert (await verify(licensing, body, block=approved))["valid"] is True
    # Before the wallet existed nobody at its address could sign, nor held a licence.
    assert codes(await verify(licensing, body, block=deployed - 1)) == [
        "signer_not_holder",
        "holder_not_licensed",
    ]


async def test_a_block_before_the_pool_was_deployed_is_refused(licensing: Service) -> None:
    """No pool contract answers there: a 422 naming the first block that can be asked, which is
    the block of the last contract creation (the deployment spans blocks from its deploy_block)."""
    holder = account(1)
    licensed_member(licensing.pool, holder)

    async def status(block: int) -> httpx.Response:
        return await licensing.client.get(f"/v1/licences/{holder.address}", params={"block": block})

    before = await status(0)
    assert before.status_code == 422, before.text
    first = before.json()["first_block"]
    # Issued before the first block's time (the shared chain's clock has moved on since), so that
    # at that block the only failure is the licence the holder did not hold yet.
    deployed_at = int(licensing.w3.eth.get_block(first)["timestamp"])
    body = signed(holder, certificate(licensing, holder.address, issued_at=deployed_at - 60))

    async def verified(block: int) -> httpx.Response:
        return await licensing.client.post("/v1/licences/certificates/verify", json={**body, "block": block})

    assert first > licensing.pool.deployment.deploy_block  # contracts are created block by block here
    for block in (0, licensing.pool.deployment.deploy_block, first - 1):
        for reply in (await status(block), await verified(block)):
            assert reply.status_code == 422, reply.text
            assert reply.headers["content-type"].startswith("application/problem+json")
            problem = reply.json()
            assert (problem["field"], problem["first_block"]) == ("block", first)
            assert f"block {block} is before block {first}" in problem["detail"]
    assert (await status(first)).status_code == 200
    assert codes(await verify(licensing, body, block=first)) == ["holder_not_licensed"]


async def test_qr_code_round_trip(licensing: Service) -> None:
    holder = account(1)
    licensed_member(licensing.pool, holder)
    body = signed(holder, certificate(licensing, holder.address))
    png = await licensing.client.post("/v1/licences/certificates/qr", json={**body, "format": "png"})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    text = decode_one(png.content)
    assert text.startswith("BPCERT1:")
    assert (await verify(licensing, {"compact": text}))["valid"] is True
    svg = await licensing.client.post("/v1/licences/certificates/qr", json=body)
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.content.startswith(b"<?xml")


async def test_a_certificate_too_long_for_a_qr_code_is_refused(licensing: Service) -> None:
    holder = account(1)
    body = {**signed(holder, certificate(licensing, holder.address)), "signature": "0x" + "ab" * 2000}
    reply = await licensing.client.post("/v1/licences/certificates/qr", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert "more than a QR code holds" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"primaryType": "Order"}, "primaryType"),
        ({"types": {"EIP712Domain": []}}, "types"),
        ({"message": {"holder": "0x12"}}, "fields"),
    ],
)
async def test_malformed_certificates_are_refused(
    licensing: Service, change: dict[str, Any], reason: str
) -> None:
    holder = account(1)
    body = signed(holder, certificate(licensing, holder.address))
    reply = await licensing.client.post(
        "/v1/licences/certificates/verify", json={**body, "certificate": {**body["certificate"], **change}}
    )
    assert reply.status_code == 422
    assert reason in reply.json()["detail"]
    both = await licensing.client.post(
        "/v1/licences/certificates/verify", json={**body, "compact": "BPCERT1:AA"}
    )
    assert both.status_code == 422
    garbage = await licensing.client.post("/v1/licences/certificates/verify", json={"compact": "BPCERT1:AA"})
    assert garbage.status_code == 422
    assert "truncated" in garbage.json()["detail"]


@pytest.mark.parametrize("route", ["verify", "qr"])
async def test_a_statement_that_is_not_unicode_text_is_refused(licensing: Service, route: str) -> None:
    """JSON can spell a lone surrogate, which no UTF-8 (so no EIP-712) string holds."""
    holder = account(1)
    body = signed(holder, certificate(licensing, holder.address))
    body["certificate"]["message"]["statement"] = "holds a licence \ud800"
    reply = await licensing.client.post(
        f"/v1/licences/certificates/{route}",
        content=json.dumps(body),  # ASCII: the surrogate as the escape \ud800
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 422, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["type"].endswith("/invalid-certificate")
    assert "unpaired surrogate" in reply.json()["detail"]
