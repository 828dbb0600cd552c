"""Threshold licensing through the Python chain layer, on both chain backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from exchange.chain.errors import ContractReverted
from exchange.chain.pool import LicenceKind, MemberStatus, Tier
from tests.chain.conftest import Chain
from tests.chain.nodes import advance_time

BPC = 10**18


def observable_state(chain: Chain) -> dict[str, Any]:
    """Everything a forbidden action must leave unchanged."""
    pool = chain.pool
    accounts = chain.accounts[:8]
    return {
        "bpc": [pool.bpc_balance(a) for a in [*accounts, pool.gate.address, pool.fund.address]],
        "supply": pool.bpc_supply(),
        "licences": [pool.licence(a) for a in accounts],
        "members": [pool.member(a) for a in accounts],
        "fee_terms": pool.fee_licence_terms(),
    }


def assert_refused(
    chain: Chain, action: Callable[[], object], error: str, **args: object
) -> ContractReverted:
    before = observable_state(chain)
    with pytest.raises(ContractReverted) as caught:
        action()
    assert caught.value.error_name == error, str(caught.value)
    for key, value in args.items():
        assert caught.value.error_args[key] == value, (key, caught.value.error_args)
    assert observable_state(chain) == before
    return caught.value


@pytest.fixture
def funded(chain: Chain) -> Chain:
    """Tier references funded (Small 100 BPC, Medium 400, Large 1000) and members with BPC."""
    pool = chain.pool
    refs = chain.accounts[7:10]
    for tier, ref, amount in zip((Tier.SMALL, Tier.MEDIUM, Tier.LARGE), refs, (100, 400, 1000), strict=True):
        pool.set_tier_reference(tier, ref)
        pool.mint_bpc(ref, amount * BPC)
    for account in chain.accounts[1:6]:
        pool.mint_bpc(account, 2_000 * BPC)
    return chain


def test_threshold_follows_bpc_at_reference_address(funded: Chain) -> None:
    pool = funded.pool
    small_ref = funded.accounts[7]
    member, other = funded.accounts[1], funded.accounts[2]
    pool.admit(member, Tier.SMALL)
    pool.admit(other, Tier.SMALL)
    assert pool.threshold(Tier.SMALL) == 100 * BPC
    assert pool.threshold(Tier.MEDIUM) == 400 * BPC
    assert pool.threshold(Tier.NON_PROFIT) == 0

    pool.acquire(100 * BPC, sender=member)
    # The foundation raises the Small threshold by moving BPC to the reference address.
    pool.mint_bpc(small_ref, 50 * BPC)
    assert pool.threshold(Tier.SMALL) == 150 * BPC
    assert_refused(
        funded,
        lambda: pool.acquire(100 * BPC, sender=other),
        "GateBelowThreshold",
        amount=100 * BPC,
        threshold=150 * BPC,
    )
    pool.acquire(150 * BPC, sender=other)
    # Existing licences are not affected by the move.
    assert pool.licence(member).licensed
    assert pool.licence(member).locked_bpc_wei == 100 * BPC
    # Lowering it: the reference address moves BPC away.
    pool.transfer_bpc(funded.accounts[3], 120 * BPC, sender=small_ref)
    assert pool.threshold(Tier.SMALL) == 30 * BPC


def test_lock_release_returns_exactly_the_locked_bpc(funded: Chain) -> None:
    pool = funded.pool
    member = funded.accounts[1]
    pool.admit(member, Tier.MEDIUM)
    start = pool.bpc_balance(member)
    receipt = pool.acquire(437 * BPC + 1, sender=member)
    licence = pool.licence(member)
    assert licence.kind is LicenceKind.LOCKED
    assert licence.tier is Tier.MEDIUM
    assert licence.locked_bpc_wei == 437 * BPC + 1
    assert licence.since_block == receipt["blockNumber"]
    assert licence.licensed
    assert pool.bpr_balance(member) == 1
    assert pool.bpc_balance(pool.gate.address) == 437 * BPC + 1
    assert pool.bpc_balance(member) == start - (437 * BPC + 1)

    assert_refused(
        funded, lambda: pool.acquire(500 * BPC, sender=member), "GateAlreadyLicensed", account=member
    )

    pool.release(sender=member)
    assert pool.bpc_balance(member) == start
    assert pool.bpc_balance(pool.gate.address) == 0
    assert pool.bpr_balance(member) == 0
    assert not pool.is_licensed(member)
    assert_refused(funded, lambda: pool.release(sender=member), "GateNotLicensed", account=member)


def test_non_profit_member_is_licensed_free(funded: Chain) -> None:
    pool = funded.pool
    member = funded.accounts[1]
    pool.admit(member, Tier.NON_PROFIT)
    assert_refused(
        funded, lambda: pool.acquire(1, sender=member), "GateUnexpectedLock", account=member, amount=1
    )
    before = pool.bpc_balance(member)
    pool.acquire(0, sender=member)
    licence = pool.licence(member)
    assert licence.kind is LicenceKind.NON_PROFIT
    assert licence.locked_bpc_wei == 0
    assert licence.licensed
    assert pool.bpc_balance(member) == before
    pool.release(sender=member)
    assert not pool.is_licensed(member)


def test_fee_licence_for_non_member_expires_and_renews(funded: Chain) -> None:
    pool = funded.pool
    buyer = funded.accounts[4]
    assert_refused(funded, lambda: pool.buy_fee_licence(sender=buyer), "GateFeeLicenceUnavailable")
    pool.set_fee_licence_terms(25 * BPC, 30 * 86_400)
    fund_before = pool.bpc_balance(pool.fund.address)
    pool.buy_fee_licence(sender=buyer)
    licence = pool.licence(buyer)
    assert licence.kind is LicenceKind.FEE
    assert licence.licensed
    assert pool.bpc_balance(pool.fund.address) == fund_before + 25 * BPC
    assert_refused(funded, lambda: pool.release(sender=buyer), "GateFeeLicenceNotReleasable", account=buyer)

    advance_time(funded.w3, 30 * 86_400 + 1)
    assert not pool.is_licensed(buyer)
    assert pool.bpr_balance(buyer) == 1  # the token stays, the right does not

    pool.renew_fee_licence(sender=buyer)
    renewed = pool.licence(buyer)
    assert renewed.licensed
    assert renewed.expires_at > licence.expires_at + 30 * 86_400
    assert pool.bpc_balance(pool.fund.address) == fund_before + 50 * BPC

    # Members cannot buy fee licences; they use the threshold.
    member = funded.accounts[1]
    pool.admit(member, Tier.SMALL)
    assert_refused(
        funded,
        lambda: pool.buy_fee_licence(sender=member),
        "GateFeeLicenceForNonMembersOnly",
        account=member,
        status=int(MemberStatus.ACTIVE),
    )


def test_expired_fee_licence_can_be_bought_again(funded: Chain) -> None:
    pool = funded.pool
    buyer = funded.accounts[4]
    pool.set_fee_licence_terms(10 * BPC, 3_600)
    pool.buy_fee_licence(sender=buyer)
    first = pool.licence(buyer)
    assert_refused(funded, lambda: pool.buy_fee_licence(sender=buyer), "GateAlreadyLicensed", account=buyer)
    advance_time(funded.w3, 3_601)
    pool.buy_fee_licence(sender=buyer)
    second = pool.licence(buyer)
    assert second.licensed
    assert second.token_id != first.token_id
    assert pool.bpr_balance(buyer) == 1


def test_expelled_member_is_revoked_and_gets_its_bpc_back(funded: Chain) -> None:
    pool = funded.pool
    member = funded.accounts[1]
    pool.admit(member, Tier.LARGE)
    start = pool.bpc_balance(member)
    pool.acquire(1_000 * BPC, sender=member)
    assert_refused(
        funded,
        lambda: pool.revoke(member),
        "GateNotExpelled",
        account=member,
        status=int(MemberStatus.ACTIVE),
    )
    pool.suspend(member)
    assert_refused(funded, lambda: pool.revoke(member), "GateNotExpelled", status=int(MemberStatus.SUSPENDED))
    pool.expel(member)
    assert pool.member(member).status is MemberStatus.EXPELLED
    pool.revoke(member)
    assert not pool.is_licensed(member)
    assert pool.bpr_balance(member) == 0
    assert pool.bpc_balance(member) == start
    assert_refused(funded, lambda: pool.revoke(member), "GateNotLicensed", account=member)
    assert_refused(
        funded,
        lambda: pool.acquire(1_000 * BPC, sender=member),
        "GateNotActiveMember",
        account=member,
        status=int(MemberStatus.EXPELLED),
    )


def test_forbidden_actions_are_refused_without_state_change(funded: Chain) -> None:
    pool = funded.pool
    council = funded.accounts[0]
    member, outsider = funded.accounts[1], funded.accounts[2]
    pool.admit(member, Tier.SMALL)

    # Roles: nobody but the registrar admits, nobody but the council configures.
    refused = assert_refused(
        funded, lambda: pool.admit(outsider, Tier.LARGE, sender=outsider), "AccessControlUnauthorizedAccount"
    )
    assert refused.error_args["account"] == outsider
    assert_refused(
        funded, lambda: pool.mint_bpc(outsider, BPC, sender=outsider), "AccessControlUnauthorizedAccount"
    )
    assert_refused(
        funded,
        lambda: pool.set_fee_licence_terms(1, 1, sender=member),
        "AccessControlUnauthorizedAccount",
        account=member,
    )
    assert_refused(funded, lambda: pool.revoke(member, sender=member), "AccessControlUnauthorizedAccount")
    assert_refused(
        funded,
        lambda: pool.set_tier_reference(Tier.SMALL, outsider, sender=outsider),
        "AccessControlUnauthorizedAccount",
    )

    # Membership transitions.
    assert_refused(funded, lambda: pool.admit(member, Tier.LARGE), "RegistryAlreadyMember", account=member)
    assert_refused(funded, lambda: pool.suspend(outsider), "RegistryNotMember", account=outsider)
    assert_refused(funded, lambda: pool.reinstate(member), "RegistryInvalidTransition", account=member)
    assert_refused(funded, lambda: pool.set_tier(member, Tier.SMALL), "RegistryTierUnchanged", account=member)

    # Licences.
    assert_refused(
        funded, lambda: pool.acquire(100 * BPC, sender=outsider), "GateNotActiveMember", account=outsider
    )
    assert_refused(funded, lambda: pool.acquire(0, sender=member), "GateBelowThreshold", amount=0)
    pool.suspend(member)
    assert_refused(
        funded,
        lambda: pool.acquire(100 * BPC, sender=member),
        "GateNotActiveMember",
        status=int(MemberStatus.SUSPENDED),
    )
    pool.reinstate(member)
    pool.set_tier_reference(Tier.MEDIUM, "0x" + "00" * 20)
    pool.set_tier(member, Tier.MEDIUM)
    assert_refused(
        funded, lambda: pool.acquire(500 * BPC, sender=member), "GateTierUnconfigured", tier=int(Tier.MEDIUM)
    )
    # BPC itself: OpenZeppelin's errors.
    assert_refused(
        funded,
        lambda: pool.transfer_bpc(council, 10**30, sender=outsider),
        "ERC20InsufficientBalance",
        sender=outsider,
    )
    # BPR cannot move.
    pool.set_tier(member, Tier.SMALL)
    pool.acquire(100 * BPC, sender=member)
    token_id = pool.licence(member).token_id
    assert_refused(
        funded,
        lambda: pool.bpr.transact("transferFrom", member, outsider, token_id, sender=member),
        "BPRNonTransferable",
        tokenId=token_id,
    )
