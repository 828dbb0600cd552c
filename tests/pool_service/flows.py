"""Steps the pool service tests share: applying and admitting members, registering and admitting patents."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from eth_account.signers.local import LocalAccount

from exchange.chain.pool import MemberStatus
from exchange.pool.indexer import STATE_NAMES, TIER_NAMES
from tests.pool_service.conftest import MIN_ASSESSMENTS, Foundation
from tests.support.auth import bearer_headers


def application_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "organisation": "Ledger Labs GmbH",
        "country": "DE",
        "enterprise_size": "small",
        "size_evidence": "42 employees, EUR 6m turnover (Handelsregister extract 2026)",
        "non_profit": False,
        "contact_name": "Ada Example",
        "contact_email": "ada@ledger-labs.example",
    }
    body.update(overrides)
    return body


async def apply(foundation: Foundation, account: LocalAccount, **overrides: object) -> dict[str, Any]:
    headers = await bearer_headers(foundation.client, account)
    reply = await foundation.client.post(
        "/v1/membership/applications", json=application_body(**overrides), headers=headers
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def admit(
    foundation: Foundation, account: LocalAccount, *, tier: str = "small", **overrides: object
) -> dict[str, Any]:
    """Apply as ``account``, review and approve with ``tier``; the member as the API shows it."""
    application = await apply(foundation, account, **overrides)
    client = foundation.client
    reviewed = await client.post(
        f"/v1/admin/membership/applications/{application['id']}/review", json={}, headers=foundation.registrar
    )
    assert reviewed.status_code == 200, reviewed.text
    approved = await client.post(
        f"/v1/admin/membership/applications/{application['id']}/approve",
        json={"tier": tier},
        headers=foundation.council,
    )
    assert approved.status_code == 200, approved.text
    member: dict[str, Any] = approved.json()["member"]
    return member


async def assert_register_agrees(foundation: Foundation, address: str) -> dict[str, Any] | None:
    """The service's member record equals the PoolRegistry's; returns the record (None: not a member)."""
    on_chain = foundation.chain.pool.member(address)
    reply = await foundation.client.get(f"/v1/admin/members/{address}", headers=foundation.registrar)
    if on_chain.status is MemberStatus.NONE:
        assert reply.status_code == 404, reply.text
        return None
    assert reply.status_code == 200, reply.text
    member: dict[str, Any] = reply.json()
    assert (member["tier"], member["status"]) == (
        TIER_NAMES[on_chain.tier].value,
        STATE_NAMES[on_chain.status].value,
    )
    assert datetime.fromisoformat(member["admitted_at"]) == datetime.fromtimestamp(on_chain.admitted_at, UTC)
    return member


def patent_body(number: str, **overrides: object) -> dict[str, object]:
    today = datetime.now(UTC).date()
    body: dict[str, object] = {
        "publication_number": number,
        "title": "Method for ordering transactions in a permissioned ledger",
        "owner": "Ledger Labs GmbH",
        "family_id": "F-1001",
        "field": "blockchain",
        "source": "purchased",
        "filing_date": (today - timedelta(days=3000)).isoformat(),
        "grant_date": (today - timedelta(days=1500)).isoformat(),
        "expires_on": (today + timedelta(days=4000)).isoformat(),
    }
    body.update(overrides)
    return body


async def register(foundation: Foundation, number: str, **overrides: object) -> dict[str, Any]:
    reply = await foundation.client.post(
        "/v1/admin/pool/patents", json=patent_body(number, **overrides), headers=foundation.registrar
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def assess_and_decide(
    foundation: Foundation, patent_id: str, scores: tuple[int, ...] = (80, 70), core: bool = True
) -> dict[str, Any]:
    """Send to the experts, let ``len(scores)`` assessors score it, apply the policy."""
    client = foundation.client
    started = await client.post(
        f"/v1/admin/pool/patents/{patent_id}/start-assessment", json={}, headers=foundation.registrar
    )
    assert started.status_code == 200, started.text
    for headers, score in zip(foundation.assessors, scores, strict=False):
        reply = await client.post(
            f"/v1/admin/pool/patents/{patent_id}/assessments",
            json={"score": score, "core": core, "notes": "reviewed claims 1-12"},
            headers=headers,
        )
        assert reply.status_code == 201, reply.text
    decided = await client.post(f"/v1/admin/pool/patents/{patent_id}/decision", headers=foundation.registrar)
    assert decided.status_code == 200, decided.text
    body: dict[str, Any] = decided.json()
    return body


async def admit_patent(
    foundation: Foundation, number: str, *, scores: tuple[int, ...] = (80, 70), **overrides: object
) -> dict[str, Any]:
    """Register and admit a patent; the decision as the API returned it."""
    assert len(scores) >= MIN_ASSESSMENTS
    patent = await register(foundation, number, **overrides)
    decision = await assess_and_decide(foundation, patent["patent_id"], scores)
    assert decision["admitted"], decision
    return decision


def days_from_today(days: int) -> date:
    return datetime.now(UTC).date() + timedelta(days=days)
