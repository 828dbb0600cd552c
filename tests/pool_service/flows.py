"""Steps the pool service tests share: applying and admitting members, registering and admitting patents."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from exchange.chain.pool import MemberStatus
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.pool import patent_service
from exchange.pool.indexer import STATE_NAMES, TIER_NAMES
from exchange.pool.patent_service import PatentData
from exchange.pool.patents import FieldOfTechnology, PatentSource
from exchange.pool.service import PoolPolicies
from tests.pool_service.conftest import ASSESSORS, MIN_ASSESSMENTS, REGISTRAR, Foundation, pool_settings
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


async def new_member(foundation: Foundation, *, tier: str = "small") -> LocalAccount:
    """A new account, admitted through the API as an active pool member: patents are contributed
    by members."""
    account = Account.create()
    await admit(foundation, account, tier=tier)
    return account


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


async def _not_asked(address: str) -> bool:
    raise AssertionError(f"the chain's register was asked about {address}, an indexed member")


async def admit_in_the_past(
    database_url: str,
    number: str,
    *,
    expires_on: date,
    admitted_days_ago: int = 7,
    contributor: str | None = None,
) -> str:
    """Register and admit a patent as the service would have done ``admitted_days_ago`` days ago.

    Through the service functions (the API only acts now): a patent that expires
    today or earlier can only have entered the pool in the past.
    """
    settings = pool_settings(database_url)
    policies = PoolPolicies.from_settings(settings)
    engine = create_engine_for_url(database_url)
    now = datetime.now(UTC)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            data = PatentData(
                publication_number=number,
                title="Sharded state channel settlement",
                owner="Chain Research Ltd",
                field=FieldOfTechnology.BLOCKCHAIN,
                source=PatentSource.CONTRIBUTED if contributor else PatentSource.PURCHASED,
                contributor=contributor,
                expires_on=expires_on,
            )
            at = now - timedelta(days=admitted_days_ago + 3)
            row, _ = await patent_service.register_patent(session, data=data, actor=REGISTRAR.address, at=at)
            await patent_service.start_assessment(
                session, patent_id=row.patent_id, actor=REGISTRAR.address, note=None, at=at
            )
            for expert in ASSESSORS[:MIN_ASSESSMENTS]:
                await patent_service.assess(
                    session,
                    patent_id=row.patent_id,
                    expert=expert.address,
                    score=75,
                    core=True,
                    notes="",
                    at=at,
                )
            decided = await patent_service.decide(
                session,
                patent_id=row.patent_id,
                policies=policies,
                actor=REGISTRAR.address,
                at=now - timedelta(days=admitted_days_ago),
                on_register=_not_asked,  # the contributor, if any, is an indexed member
            )
            assert decided.patent.status == "in_pool"
            return row.patent_id
    finally:
        await engine.dispose()
