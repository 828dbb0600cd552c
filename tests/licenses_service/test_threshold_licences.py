"""Threshold licences through the API: thresholds and status read from chain, and unsigned transactions
that the member signs and sends itself."""

from __future__ import annotations

from typing import Any

from exchange.chain.pool import Tier
from tests.chain.nodes import advance_time
from tests.licenses_service.conftest import BPC, SMALL_THRESHOLD, Service, account, configure_small_tier
from tests.support.addresses import mistyped


async def transactions(
    service: Service, headers: dict[str, str], action: str, body: dict[str, Any] | None = None
) -> Any:
    return await service.client.post(f"/v1/licences/transactions/{action}", json=body, headers=headers)


async def test_thresholds_follow_the_reference_addresses(licensing: Service) -> None:
    before = (await licensing.client.get("/v1/licences/thresholds")).json()
    tiers = {tier["tier"]: tier for tier in before["tiers"]}
    assert tiers["non_profit"] == {"tier": "non_profit", "configured": True, "threshold_wei": "0"}
    assert tiers["small"]["configured"] is False
    assert tiers["small"]["threshold_wei"] is None
    assert before["fee_licence"] == {"offered": False, "price_wei": "0", "term_s": 0}
    assert before["licence_gate"] == licensing.pool.gate.address

    configure_small_tier(licensing.pool)
    licensing.pool.mint_bpc(account(9).address, 5 * BPC)
    licensing.pool.set_fee_licence_terms(30 * BPC, 86_400)
    after = (await licensing.client.get("/v1/licences/thresholds")).json()
    small = next(tier for tier in after["tiers"] if tier["tier"] == "small")
    assert small == {"tier": "small", "configured": True, "threshold_wei": str(SMALL_THRESHOLD + 5 * BPC)}
    assert after["fee_licence"] == {"offered": True, "price_wei": str(30 * BPC), "term_s": 86_400}
    assert after["block"] > before["block"]


async def test_acquire_and_release_with_the_members_own_key(licensing: Service) -> None:
    pool, member = licensing.pool, account(2)
    configure_small_tier(pool)
    pool.admit(member.address, Tier.SMALL)
    pool.mint_bpc(member.address, 500 * BPC)
    headers = await licensing.sign_in(member)

    status = (await licensing.client.get(f"/v1/licences/{member.address.lower()}")).json()
    assert status["licensed"] is False
    assert status["kind"] == "none"

    plan = await transactions(licensing, headers, "acquire")
    assert plan.status_code == 200, plan.text
    steps = plan.json()["transactions"]
    assert [step["to"] for step in steps] == [pool.bpc.address, pool.gate.address]
    assert steps[0]["gas"] > 0
    assert steps[1]["gas"] is None
    receipts = licensing.send(member, steps)

    status = (await licensing.client.get(f"/v1/licences/{member.address}")).json()
    assert status["licensed"] is True
    assert status["kind"] == "locked"
    assert status["tier"] == "small"
    assert status["locked_bpc_wei"] == str(SMALL_THRESHOLD)
    assert status["since_block"] == receipts[-1]["blockNumber"]
    # At the block before the licence, it was not there.
    earlier = (
        await licensing.client.get(f"/v1/licences/{member.address}?block={status['since_block'] - 1}")
    ).json()
    assert earlier["licensed"] is False

    again = await transactions(licensing, headers, "acquire")
    assert again.status_code == 409
    assert "already holds" in again.json()["detail"]

    release = await transactions(licensing, headers, "release")
    assert release.status_code == 200
    (step,) = release.json()["transactions"]
    assert step["gas"] > 0  # simulated: the contract would accept it
    licensing.send(member, [step])
    assert pool.bpc_balance(member.address) == 500 * BPC
    assert (await licensing.client.get(f"/v1/licences/{member.address}")).json()["licensed"] is False


async def test_acquire_with_an_allowance_is_one_simulated_step(licensing: Service) -> None:
    pool, member = licensing.pool, account(3)
    configure_small_tier(pool)
    pool.admit(member.address, Tier.SMALL)
    pool.mint_bpc(member.address, 500 * BPC)
    pool.approve_bpc(pool.gate.address, 200 * BPC, sender=member.address)
    headers = await licensing.sign_in(member)
    plan = (await transactions(licensing, headers, "acquire", {"amount_wei": str(150 * BPC)})).json()
    (step,) = plan["transactions"]
    assert step["to"] == pool.gate.address
    assert step["gas"] > 0
    licensing.send(member, [step])
    assert pool.licence(member.address).locked_bpc_wei == 150 * BPC


async def test_refusals_come_before_any_gas_is_spent(licensing: Service) -> None:
    pool, member = licensing.pool, account(4)
    headers = await licensing.sign_in(member)
    assert (await licensing.client.post("/v1/licences/transactions/acquire")).status_code == 401
    not_member = await transactions(licensing, headers, "acquire")
    assert not_member.status_code == 409
    assert "not an active pool member" in not_member.json()["detail"]
    configure_small_tier(pool)
    pool.admit(member.address, Tier.SMALL)
    below = await transactions(licensing, headers, "acquire", {"amount_wei": str(SMALL_THRESHOLD - 1)})
    assert below.status_code == 422
    assert below.json()["threshold_wei"] == str(SMALL_THRESHOLD)
    poor = await transactions(licensing, headers, "acquire")
    assert poor.status_code == 409
    assert poor.json()["needed_wei"] == str(SMALL_THRESHOLD)
    nothing = await transactions(licensing, headers, "release")
    assert nothing.status_code == 409
    unknown = await transactions(licensing, headers, "steal")
    assert unknown.status_code == 422
    bad_address = await licensing.client.get("/v1/licences/0x1234")
    assert bad_address.status_code == 422
    typo = await licensing.client.get(f"/v1/licences/{mistyped(member.address)}")
    assert typo.status_code == 422
    assert "EIP-55 checksum" in typo.json()["detail"]
    future = await licensing.client.get(f"/v1/licences/{member.address}?block=99999999")
    assert future.status_code == 422


async def test_fee_licences_bought_and_renewed_by_non_members(licensing: Service) -> None:
    pool, buyer = licensing.pool, account(5)
    headers = await licensing.sign_in(buyer)
    unavailable = await transactions(licensing, headers, "buy-fee")
    assert unavailable.status_code == 409
    pool.set_fee_licence_terms(30 * BPC, 3_600)
    pool.mint_bpc(buyer.address, 100 * BPC)
    steps = (await transactions(licensing, headers, "buy-fee")).json()["transactions"]
    assert len(steps) == 2
    licensing.send(buyer, steps)
    status = (await licensing.client.get(f"/v1/licences/{buyer.address}")).json()
    assert status["kind"] == "fee"
    assert status["licensed"] is True
    assert status["tier"] is None  # bought by a non-member: no tier
    first_expiry = status["expires_at"]

    advance_time(licensing.w3, 4_000)
    assert (await licensing.client.get(f"/v1/licences/{buyer.address}")).json()["licensed"] is False
    renewal = (await transactions(licensing, headers, "renew")).json()["transactions"]
    licensing.send(buyer, renewal)
    renewed = (await licensing.client.get(f"/v1/licences/{buyer.address}")).json()
    assert renewed["licensed"] is True
    assert renewed["expires_at"] > first_expiry + 3_600
    assert pool.bpc_balance(buyer.address) == 40 * BPC

    # Admitted since, the buyer can no longer renew: refused before it pays for an approval.
    pool.admit(buyer.address, Tier.SMALL)
    refused = await transactions(licensing, headers, "renew")
    assert refused.status_code == 409, refused.text
    assert "non-members" in refused.json()["detail"]
