"""Membership through the HTTP API: application to expulsion, with the register and the database agreeing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from exchange.chain.pool import LicenceKind, MemberStatus, PoolChain, Tier
from exchange.pool import repository as pool_repository
from tests.pool_service.conftest import COUNCIL, REGISTRAR, Foundation
from tests.pool_service.flows import admit, application_body, apply, assert_register_agrees
from tests.support.addresses import mistyped
from tests.support.auth import bearer_headers, embedded_account


async def _audit(foundation: Foundation, **filters: str) -> list[dict[str, Any]]:
    reply = await foundation.client.get("/v1/admin/audit", params=filters, headers=foundation.council)
    assert reply.status_code == 200, reply.text
    items: list[dict[str, Any]] = reply.json()["items"]
    return items


async def test_lifecycle_keeps_the_register_and_the_database_in_agreement(foundation: Foundation) -> None:
    client, applicant = foundation.client, embedded_account(3)
    headers = await bearer_headers(client, applicant)

    submitted = await client.post("/v1/membership/applications", json=application_body(), headers=headers)
    assert submitted.status_code == 201, submitted.text
    application = submitted.json()
    assert (application["wallet"], application["status"]) == (applicant.address, "submitted")
    # A retried submission returns the same application; a different one while it is open is refused.
    again = await client.post("/v1/membership/applications", json=application_body(), headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, application["id"])
    other = await client.post(
        "/v1/membership/applications", json=application_body(organisation="Else"), headers=headers
    )
    assert other.status_code == 409
    assert await assert_register_agrees(foundation, applicant.address) is None

    path = f"/v1/admin/membership/applications/{application['id']}"
    too_early = await client.post(f"{path}/approve", json={"tier": "small"}, headers=foundation.council)
    assert too_early.status_code == 409
    assert "review" in too_early.json()["detail"]
    reviewed = await client.post(
        f"{path}/review", json={"note": "evidence checked"}, headers=foundation.registrar
    )
    assert (reviewed.status_code, reviewed.json()["status"]) == (200, "under_review")
    not_non_profit = await client.post(
        f"{path}/approve", json={"tier": "non_profit"}, headers=foundation.council
    )
    assert not_non_profit.status_code == 422

    approved = await client.post(f"{path}/approve", json={"tier": "small"}, headers=foundation.council)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["application"]["status"] == "approved"
    assert body["member"]["status"] == "active"
    assert body["member"]["last_tx_hash"] == body["application"]["admit_tx_hash"]
    assert foundation.chain.pool.member(applicant.address).status is MemberStatus.ACTIVE
    await assert_register_agrees(foundation, applicant.address)
    # Approving again (a retry) sends nothing and returns the same result.
    retried = await client.post(f"{path}/approve", json={"tier": "small"}, headers=foundation.council)
    assert retried.status_code == 200
    assert retried.json()["application"]["admit_tx_hash"] == body["application"]["admit_tx_hash"]
    conflicting = await client.post(f"{path}/approve", json={"tier": "large"}, headers=foundation.council)
    assert conflicting.status_code == 409

    member_path = f"/v1/admin/members/{applicant.address}"
    steps: list[tuple[str, dict[str, object], dict[str, str], tuple[Tier, MemberStatus]]] = [
        (
            "tier",
            {"tier": "medium", "reason": "grew"},
            foundation.registrar,
            (Tier.MEDIUM, MemberStatus.ACTIVE),
        ),
        ("suspend", {"reason": "dues"}, foundation.registrar, (Tier.MEDIUM, MemberStatus.SUSPENDED)),
        ("reinstate", {"reason": "paid"}, foundation.registrar, (Tier.MEDIUM, MemberStatus.ACTIVE)),
        ("expel", {"reason": "breach"}, foundation.council, (Tier.MEDIUM, MemberStatus.EXPELLED)),
    ]
    for action, payload, role_headers, (tier, status) in steps:
        reply = await client.post(f"{member_path}/{action}", json=payload, headers=role_headers)
        assert reply.status_code == 200, (action, reply.text)
        change = reply.json()
        assert change["changed"] is True
        assert len(change["tx_hashes"]) == 1
        on_chain = foundation.chain.pool.member(applicant.address)
        assert (on_chain.tier, on_chain.status) == (tier, status)
        await assert_register_agrees(foundation, applicant.address)
        entries = await _audit(foundation, action=f"member.{'set_tier' if action == 'tier' else action}")
        assert entries[0]["tx_hashes"] == change["tx_hashes"]
        assert entries[0]["before"]["status"] != entries[0]["after"]["status"] or action == "tier"

    # Expulsion is final.
    for action in ("reinstate", "suspend"):
        refused = await client.post(
            f"{member_path}/{action}", json={"reason": "x"}, headers=foundation.registrar
        )
        assert refused.status_code == 409
    await assert_register_agrees(foundation, applicant.address)

    mine = await client.get("/v1/membership/applications/mine", headers=headers)
    assert [a["status"] for a in mine.json()] == ["approved"]


async def test_asking_for_the_current_state_changes_nothing(foundation: Foundation) -> None:
    account = Account.create()
    await admit(foundation, account)
    before = await _audit(foundation)
    reply = await foundation.client.post(
        f"/v1/admin/members/{account.address}/reinstate", json={"reason": "x"}, headers=foundation.registrar
    )
    assert reply.status_code == 200
    assert (reply.json()["changed"], reply.json()["tx_hashes"]) == (False, [])
    same_tier = await foundation.client.post(
        f"/v1/admin/members/{account.address}/tier",
        json={"tier": "small", "reason": "x"},
        headers=foundation.registrar,
    )
    assert same_tier.json()["changed"] is False
    assert await _audit(foundation) == before
    await assert_register_agrees(foundation, account.address)


async def _licensed_non_profit(
    foundation: Foundation, member: LocalAccount
) -> tuple[LocalAccount, PoolChain]:
    """`member` admitted as a non-profit, holding its free licence (it sends its own transaction)."""
    await admit(foundation, member, tier="non_profit", non_profit=True, enterprise_size="medium")
    pool = foundation.chain.pool
    pool.acquire(0, sender=member.address)
    return member, pool


async def test_expulsion_revokes_the_licence(foundation: Foundation) -> None:
    member, pool = await _licensed_non_profit(foundation, embedded_account(4))
    assert pool.licence(member.address).kind is LicenceKind.NON_PROFIT

    reply = await foundation.client.post(
        f"/v1/admin/members/{member.address}/expel", json={"reason": "fraud"}, headers=foundation.council
    )
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["tx_hashes"]) == 2  # expel, then revoke
    assert pool.bpr_balance(member.address) == 0
    assert not pool.is_licensed(member.address)
    await assert_register_agrees(foundation, member.address)
    entry = (await _audit(foundation, action="member.expel"))[0]
    assert entry["actor"] == COUNCIL.address
    assert entry["reason"] == "fraud"
    assert entry["tx_hashes"] == reply.json()["tx_hashes"]


async def test_leaving_the_non_profit_tier_ends_the_free_licence(foundation: Foundation) -> None:
    """Non-profits are licensed free; a member re-tiered to a paid tier must lock BPC for its licence."""
    member, pool = await _licensed_non_profit(foundation, embedded_account(4))
    path = f"/v1/admin/members/{member.address}/tier"

    reply = await foundation.client.post(
        path, json={"tier": "medium", "reason": "grew"}, headers=foundation.registrar
    )
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["tx_hashes"]) == 2  # setTier, then revoke
    assert not pool.is_licensed(member.address)
    assert pool.bpr_balance(member.address) == 0
    [entry] = await _audit(foundation, action="member.set_tier")
    assert entry["tx_hashes"] == reply.json()["tx_hashes"]
    await assert_register_agrees(foundation, member.address)


async def test_a_re_tier_whose_revocation_was_lost_is_finished_by_its_retry(foundation: Foundation) -> None:
    member, pool = await _licensed_non_profit(foundation, embedded_account(5))
    moved = pool.set_tier(member.address, Tier.SMALL)  # mined; the request failed before revoking
    retried = await foundation.client.post(
        f"/v1/admin/members/{member.address}/tier",
        json={"tier": "small", "reason": "grew"},
        headers=foundation.registrar,
    )
    assert retried.status_code == 200, retried.text
    assert len(retried.json()["tx_hashes"]) == 1  # the revocation only
    assert not pool.is_licensed(member.address)
    [entry] = await _audit(foundation, action="member.set_tier")
    assert entry["tx_hashes"] == ["0x" + bytes(moved["transactionHash"]).hex(), *retried.json()["tx_hashes"]]


async def _admitted_before_its_approval_was_recorded(
    foundation: Foundation, account: LocalAccount
) -> tuple[str, TxReceipt]:
    """An application of `account`, reviewed, and the wallet admitted as large on the registry
    without the service recording an approval: the application's path and the admission."""
    application = await apply(foundation, account, enterprise_size="large")
    path = f"/v1/admin/membership/applications/{application['id']}"
    await foundation.client.post(f"{path}/review", json={}, headers=foundation.registrar)
    return path, foundation.chain.pool.admit(account.address, Tier.LARGE)


async def test_an_approval_interrupted_after_its_transaction_completes_without_another(
    foundation: Foundation,
) -> None:
    account = Account.create()
    # The admission went out, then the service stopped before recording the approval.
    path, receipt = await _admitted_before_its_approval_was_recorded(foundation, account)
    head = foundation.chain.w3.eth.block_number

    approved = await foundation.client.post(
        f"{path}/approve", json={"tier": "large"}, headers=foundation.council
    )
    assert approved.status_code == 200, approved.text
    assert foundation.chain.w3.eth.block_number == head  # nothing more was sent
    body = approved.json()
    assert body["application"]["status"] == "approved"
    # The admission was indexed before the approval was recorded: the member links to it all the same.
    assert body["member"]["application_id"] == body["application"]["id"]
    assert body["member"]["last_tx_hash"] == "0x" + bytes(receipt["transactionHash"]).hex()
    assert body["application"]["admit_tx_hash"] == body["member"]["last_tx_hash"]
    [entry] = await _audit(foundation, action="membership.approve")
    assert entry["tx_hashes"] == [body["member"]["last_tx_hash"]]  # the admission it completes
    await assert_register_agrees(foundation, account.address)
    # The same wallet admitted with another tier than the council approves is a conflict.
    other = Account.create()
    second = await apply(foundation, other)
    second_path = f"/v1/admin/membership/applications/{second['id']}"
    await foundation.client.post(f"{second_path}/review", json={}, headers=foundation.registrar)
    foundation.chain.pool.admit(other.address, Tier.MEDIUM)
    clash = await foundation.client.post(
        f"{second_path}/approve", json={"tier": "small"}, headers=foundation.council
    )
    assert clash.status_code == 409
    assert clash.json()["member_status"] == "active"


async def test_an_application_whose_approval_reached_the_chain_is_not_rejected(
    foundation: Foundation,
) -> None:
    account = Account.create()
    # The approval's admission was mined, but its answer never came back (a timeout).
    path, _ = await _admitted_before_its_approval_was_recorded(foundation, account)
    before = await _audit(foundation)

    refused = await foundation.client.post(f"{path}/reject", json={"reason": "x"}, headers=foundation.council)
    assert refused.status_code == 409, refused.text
    assert refused.json()["member_status"] == "active"
    assert "Approve it with that tier" in refused.json()["detail"]
    assert await _audit(foundation) == before
    mine = await foundation.client.get(
        "/v1/membership/applications/mine", headers=await bearer_headers(foundation.client, account)
    )
    assert [a["status"] for a in mine.json()] == ["under_review"]
    approved = await foundation.client.post(
        f"{path}/approve", json={"tier": "large"}, headers=foundation.council
    )
    assert approved.status_code == 200, approved.text
    await assert_register_agrees(foundation, account.address)

    # Admitted, then suspended: still a member (it may be reinstated), so still not rejected.
    # Admitted, then expelled: final, no longer approvable, so it can be rejected.
    reject = {"reason": "x"}
    for change, code in (("suspend", 409), ("expel", 200)):
        applicant = Account.create()
        path, _ = await _admitted_before_its_approval_was_recorded(foundation, applicant)
        getattr(foundation.chain.pool, change)(applicant.address)
        answer = await foundation.client.post(f"{path}/reject", json=reject, headers=foundation.council)
        assert answer.status_code == code, (change, answer.text)


async def test_rejection_and_unknown_members(foundation: Foundation) -> None:
    application = await apply(foundation, Account.create())
    path = f"/v1/admin/membership/applications/{application['id']}"
    rejected = await foundation.client.post(
        f"{path}/reject", json={"reason": "no evidence"}, headers=foundation.council
    )
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected")
    assert rejected.json()["decided_by"] == COUNCIL.address
    again = await foundation.client.post(
        f"{path}/reject", json={"reason": "no evidence"}, headers=foundation.council
    )
    assert (again.status_code, again.json()) == (200, rejected.json())  # a retry
    other = await foundation.client.post(
        f"{path}/reject", json={"reason": "no dues paid"}, headers=foundation.council
    )
    assert other.status_code == 409  # not silently the first rejection, as an approval's other tier
    assert other.json()["decision_note"] == "no evidence"
    late = await foundation.client.post(f"{path}/review", json={}, headers=foundation.registrar)
    assert late.status_code == 409
    stranger = Account.create().address
    for action in ("suspend", "reinstate"):
        missing = await foundation.client.post(
            f"/v1/admin/members/{stranger}/{action}", json={"reason": "x"}, headers=foundation.registrar
        )
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
    bad = await foundation.client.post(
        "/v1/admin/members/0x1234/suspend", json={"reason": "x"}, headers=foundation.registrar
    )
    assert bad.status_code == 422
    typo = await foundation.client.post(
        f"/v1/admin/members/{mistyped(stranger)}/suspend",
        json={"reason": "x"},
        headers=foundation.registrar,
    )
    assert typo.status_code == 422  # not "no such member": the address itself is wrong
    assert "EIP-55 checksum" in typo.json()["detail"]
    listed = await foundation.client.get(
        "/v1/admin/membership/applications", params={"status": "rejected"}, headers=foundation.registrar
    )
    assert [a["id"] for a in listed.json()["items"]] == [application["id"]]
    assert REGISTRAR.address != COUNCIL.address


@pytest.mark.parametrize("reviewed", [False, True])
async def test_a_rejected_application_is_said_to_be_decided_when_approved(
    foundation: Foundation, reviewed: bool
) -> None:
    applicant = Account.create()
    application = await apply(foundation, applicant)
    path = f"/v1/admin/membership/applications/{application['id']}"
    if reviewed:
        review = await foundation.client.post(f"{path}/review", json={}, headers=foundation.registrar)
        assert review.status_code == 200, review.text
    rejected = await foundation.client.post(
        f"{path}/reject", json={"reason": "x"}, headers=foundation.council
    )
    assert rejected.status_code == 200, rejected.text
    before = await _audit(foundation)

    refused = await foundation.client.post(
        f"{path}/approve", json={"tier": "small"}, headers=foundation.council
    )
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    detail = refused.json()["detail"]
    assert detail == (
        f"application {application['id']} was already rejected and cannot be approved (a decision is final)"
    )
    assert "review" not in detail
    assert await _audit(foundation) == before
    assert foundation.chain.pool.member(applicant.address).status is MemberStatus.NONE
    assert await assert_register_agrees(foundation, applicant.address) is None


async def test_an_application_filed_twice_at_once_is_a_conflict_that_a_retry_resolves(
    foundation: Foundation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second of two identical submissions looked for an open application before the first
    committed its own (staged: the lookup misses it), and its insert meets the first's row."""
    client, applicant = foundation.client, Account.create()
    headers = await bearer_headers(client, applicant)
    first = await client.post("/v1/membership/applications", json=application_body(), headers=headers)
    assert first.status_code == 201, first.text

    async def before_the_first_committed(session: object, wallet: str) -> None:
        return None

    with monkeypatch.context() as staged:
        staged.setattr(pool_repository, "open_application", before_the_first_committed)
        raced = await client.post("/v1/membership/applications", json=application_body(), headers=headers)
    assert raced.status_code == 409, raced.text
    assert raced.headers["content-type"].startswith("application/problem+json")
    assert "retry" in raced.json()["detail"]
    retried = await client.post("/v1/membership/applications", json=application_body(), headers=headers)
    assert (retried.status_code, retried.json()["id"]) == (200, first.json()["id"])


async def test_a_member_change_whose_answer_was_lost_is_audited_by_its_retry(foundation: Foundation) -> None:
    member = Account.create()
    await admit(foundation, member)
    # The suspension was mined, but the request failed before its audit entry was committed.
    receipt = foundation.chain.pool.suspend(member.address)
    path = f"/v1/admin/members/{member.address}/suspend"

    retried = await foundation.client.post(path, json={"reason": "unpaid dues"}, headers=foundation.registrar)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["changed"], retried.json()["tx_hashes"]) == (False, [])
    [entry] = await _audit(foundation, action="member.suspend")
    assert entry["actor"] == REGISTRAR.address
    assert entry["tx_hashes"] == ["0x" + bytes(receipt["transactionHash"]).hex()]
    assert entry["reason"].startswith("unpaid dues (found done on chain already")
    assert entry["after"]["status"] == "suspended"

    again = await foundation.client.post(path, json={"reason": "unpaid dues"}, headers=foundation.registrar)
    assert again.status_code == 200, again.text
    assert len(await _audit(foundation, action="member.suspend")) == 1  # recorded once


async def test_a_found_change_is_audited_only_as_the_change_it_was(foundation: Foundation) -> None:
    """An unaudited admission is not recorded by a no-op of another kind; an expulsion found done
    while its licence revocation was still to send is recorded once, with both transactions."""
    applicant = Account.create()
    path, admission = await _admitted_before_its_approval_was_recorded(foundation, applicant)
    reinstate = await foundation.client.post(
        f"/v1/admin/members/{applicant.address}/reinstate", json={"reason": "x"}, headers=foundation.registrar
    )
    assert (reinstate.status_code, reinstate.json()["changed"]) == (200, False), reinstate.text
    assert await _audit(foundation, action="member.reinstate") == []
    approved = await foundation.client.post(
        f"{path}/approve", json={"tier": "large"}, headers=foundation.council
    )
    assert approved.status_code == 200, approved.text
    [entry] = await _audit(foundation, action="membership.approve")
    assert entry["tx_hashes"] == ["0x" + bytes(admission["transactionHash"]).hex()]

    member, pool = await _licensed_non_profit(foundation, embedded_account(5))
    expelled = pool.expel(member.address)  # mined; the request failed before revoking the licence
    path = f"/v1/admin/members/{member.address}/expel"
    retried = await foundation.client.post(path, json={"reason": "fraud"}, headers=foundation.council)
    assert retried.status_code == 200, retried.text
    assert len(retried.json()["tx_hashes"]) == 1  # the revocation only
    assert not pool.is_licensed(member.address)
    [entry] = await _audit(foundation, action="member.expel")
    assert entry["tx_hashes"] == [
        "0x" + bytes(expelled["transactionHash"]).hex(),
        *retried.json()["tx_hashes"],
    ]
    again = await foundation.client.post(path, json={"reason": "fraud"}, headers=foundation.council)
    assert (again.status_code, again.json()["changed"]) == (200, False)
    assert len(await _audit(foundation, action="member.expel")) == 1


async def test_text_no_database_stores_is_refused_naming_the_field(foundation: Foundation) -> None:
    """PostgreSQL takes no NUL in a text parameter and UTF-8 no lone surrogate (which JSON can
    spell): either is a 422 naming the field, and nothing is stored or queried."""
    client, applicant = foundation.client, Account.create()
    signed_in = await bearer_headers(client, applicant)
    member = f"/v1/admin/members/{Account.create().address}"
    applications = "/v1/admin/membership/applications"
    for url, headers, body, field in [
        ("/v1/membership/applications", signed_in, application_body(organisation="Ledger\0"), "organisation"),
        ("/v1/membership/applications", signed_in, application_body(size_evidence="\ud800"), "size_evidence"),
        ("/v1/membership/applications", signed_in, application_body(contact_name="\0"), "contact_name"),
        (
            "/v1/membership/applications",
            signed_in,
            application_body(contact_email="a\0@b.example"),
            "contact_email",
        ),
        (f"{applications}/1/review", foundation.registrar, {"note": "\0"}, "note"),
        (f"{applications}/1/approve", foundation.council, {"tier": "small", "note": "\0"}, "note"),
        (f"{applications}/1/reject", foundation.council, {"reason": "\0"}, "reason"),
        (f"{member}/suspend", foundation.registrar, {"reason": "late\0"}, "reason"),
        (f"{member}/tier", foundation.registrar, {"tier": "small", "reason": "\ud800"}, "reason"),
        # Nothing but white space where something must be said, and a boolean that is no boolean.
        ("/v1/membership/applications", signed_in, application_body(organisation="   "), "organisation"),
        ("/v1/membership/applications", signed_in, application_body(contact_name="\t"), "contact_name"),
        ("/v1/membership/applications", signed_in, application_body(non_profit="yes"), "non_profit"),
        (f"{applications}/1/reject", foundation.council, {"reason": " "}, "reason"),
        (f"{member}/suspend", foundation.registrar, {"reason": "\n"}, "reason"),
    ]:
        reply = await client.post(
            url, content=json.dumps(body), headers={**headers, "content-type": "application/json"}
        )
        assert reply.status_code == 422, (url, field, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert [error["loc"] for error in reply.json()["errors"]] == [["body", field]]
    assert (await client.get("/v1/membership/applications/mine", headers=signed_in)).json() == []

    nul = base64.urlsafe_b64encode(json.dumps("\0").encode()).decode().rstrip("=")
    refused = await client.get("/v1/admin/members", params={"cursor": nul}, headers=foundation.registrar)
    assert refused.status_code == 422, refused.text
    assert "cursor" in refused.json()["detail"]
