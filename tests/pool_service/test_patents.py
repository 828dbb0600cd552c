"""Patents through the HTTP API: registration, assessment, admission, retirement, expiry, public views."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import update

from exchange.chain.pool import Tier
from exchange.chain.runtime import ChainRuntime
from exchange.db.engine import create_engine_for_url
from exchange.pool.models import PatentRecord
from exchange.pool.patent_service import registration_refusals
from exchange.pool.patents import PatentSource
from tests.pool_service.conftest import ASSESSORS, REGISTRAR, Foundation, pool_settings, started_beside
from tests.pool_service.flows import (
    admit,
    admit_in_the_past,
    admit_patent,
    assess_and_decide,
    days_from_today,
    new_member,
    patent_body,
    register,
)

MINT_AT_100 = 1000 * 10**18  # the default mint policy: BPC base units for a score of 100


async def _detail(foundation: Foundation, patent_id: str) -> dict[str, Any]:
    reply = await foundation.client.get(f"/v1/admin/pool/patents/{patent_id}", headers=foundation.registrar)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_numbers_are_normalised_and_invalid_ones_refused_with_the_reason(
    foundation: Foundation,
) -> None:
    client, headers = foundation.client, foundation.registrar
    patent = await register(foundation, "ep 3,123,456 b1")
    assert (patent["patent_id"], patent["docdb"], patent["country"]) == ("EP3123456B1", "EP.3123456.B1", "EP")
    assert patent["status"] == "proposed"
    # The same patent in another spelling with the same data is the same registration.
    same = await client.post("/v1/admin/pool/patents", json=patent_body("EP.3123456.B1"), headers=headers)
    assert (same.status_code, same.json()["patent_id"]) == (200, "EP3123456B1")
    other = await client.post(
        "/v1/admin/pool/patents", json=patent_body("EP3123456B1", title="Another title"), headers=headers
    )
    assert other.status_code == 409

    for number, reason in [
        ("US 10,123,456", "kind code"),
        ("DD 123456 A1", "former state"),
        ("XX123456B1", "unknown"),
        ("EP 3123456 Z9", "not valid for EP"),
        ("WO 2016/123456.7 A1", "application number"),
    ]:
        reply = await client.post("/v1/admin/pool/patents", json=patent_body(number), headers=headers)
        assert reply.status_code == 422, (number, reply.text)
        problem = reply.json()
        assert problem["type"].endswith("/invalid-patent-number")
        assert reason in problem["reason"], (number, problem)
        assert problem["input"] == number

    contributed = await client.post(
        "/v1/admin/pool/patents", json=patent_body("US10123456B2", source="contributed"), headers=headers
    )
    assert contributed.status_code == 422
    assert "contributor" in contributed.json()["detail"]
    lapsed = await client.post(
        "/v1/admin/pool/patents",
        json=patent_body("US10123457B2", expires_on=days_from_today(0).isoformat()),
        headers=headers,
    )
    assert lapsed.status_code == 422


async def test_lifecycle_from_proposal_to_retirement(foundation: Foundation) -> None:
    client, contributor = foundation.client, (await new_member(foundation)).address
    supply_before = foundation.chain.pool.bpc_supply()
    patent = await register(
        foundation, "US 10,123,456 B2", source="contributed", contributor=contributor.lower()
    )
    patent_id = patent["patent_id"]
    assert patent["contributor"] == contributor

    # Assessing before the registrar starts the assessment is refused.
    early = await client.post(
        f"/v1/admin/pool/patents/{patent_id}/assessments",
        json={"score": 90, "core": True},
        headers=foundation.assessors[0],
    )
    assert early.status_code == 409
    assert early.json()["type"].endswith("/illegal-patent-transition")

    decision = await assess_and_decide(foundation, patent_id, scores=(81, 70))
    assert decision["admitted"] is True
    assert (decision["score"], decision["mean_score"]) == (75, "75 1/2")
    assert len(decision["reasons"]) == 3
    assert decision["patent"]["status"] == "in_pool"
    assert decision["patent"]["mint_policy_version"] == "2026.1"

    # The mint went out after the response: once, to the contributor, per the published policy.
    detail = await _detail(foundation, patent_id)
    mint = detail["mint"]
    expected_wei = MINT_AT_100 * 75 // 100
    assert (mint["status"], mint["amount_wei"], mint["recipient"]) == (
        "minted",
        str(expected_wei),
        contributor,
    )
    assert foundation.chain.pool.bpc_balance(contributor) == expected_wei
    assert foundation.chain.pool.bpc_supply() == supply_before + expected_wei
    assert [a["expert"] for a in detail["assessments"]] == [ASSESSORS[0].address, ASSESSORS[1].address]

    # Deciding again is a retry: same outcome, no second mint.
    retry = await client.post(f"/v1/admin/pool/patents/{patent_id}/decision", headers=foundation.registrar)
    assert retry.status_code == 200
    assert retry.json()["admitted"] is True
    assert retry.json()["mint"]["tx_hash"] == mint["tx_hash"]
    assert foundation.chain.pool.bpc_balance(contributor) == expected_wei

    retired = await client.post(
        f"/v1/admin/pool/patents/{patent_id}/retire",
        json={"reason": "non_core", "note": "committee review 2026"},
        headers=foundation.registrar,
    )
    assert retired.status_code == 200, retired.text
    assert (retired.json()["status"], retired.json()["retirement_reason"]) == ("retired", "non_core")
    events = (await _detail(foundation, patent_id))["events"]
    assert [(e["action"], e["to_status"]) for e in events] == [
        ("proposed", "proposed"),
        ("assessment_started", "under_assessment"),
        ("admitted", "in_pool"),
        ("retired", "retired"),
    ]
    assert {e["actor"] for e in events} == {REGISTRAR.address}
    assert events[-1]["reason"] == "non_core: committee review 2026"
    as_expired = await client.post(
        f"/v1/admin/pool/patents/{patent_id}/retire", json={"reason": "expired"}, headers=foundation.registrar
    )
    assert as_expired.status_code == 409

    audit = await client.get("/v1/admin/audit", params={"subject_id": patent_id}, headers=foundation.council)
    actions = [entry["action"] for entry in audit.json()["items"]]
    assert actions == [
        "patent.retire",
        "contribution.minted",
        "patent.decide",
        "patent.assess",
        "patent.assess",
        "patent.start_assessment",
        "patent.register",
    ]


async def test_assessments_are_once_per_expert_and_never_by_the_contributor(foundation: Foundation) -> None:
    client = foundation.client
    await admit(foundation, ASSESSORS[0])  # an expert whose organisation is a member
    own = await register(foundation, "EP 3123457 B1", source="contributed", contributor=ASSESSORS[0].address)
    path = f"/v1/admin/pool/patents/{own['patent_id']}"
    await client.post(f"{path}/start-assessment", json={"note": "batch 7"}, headers=foundation.registrar)
    refused = await client.post(
        f"{path}/assessments", json={"score": 100, "core": True}, headers=foundation.assessors[0]
    )
    assert refused.status_code == 422
    assert "contributed" in refused.json()["detail"]

    body = {"score": 64, "core": False, "notes": "prior art in claim 3"}
    first = await client.post(f"{path}/assessments", json=body, headers=foundation.assessors[1])
    assert first.status_code == 201
    again = await client.post(f"{path}/assessments", json=body, headers=foundation.assessors[1])
    assert again.status_code == 200
    revised = await client.post(
        f"{path}/assessments", json={**body, "score": 90}, headers=foundation.assessors[1]
    )
    assert revised.status_code == 409
    started = (await _detail(foundation, own["patent_id"]))["events"][1]
    assert (started["action"], started["reason"]) == (
        "assessment_started",
        "sent to the expert committee; batch 7",
    )
    for bad in ({"score": 101, "core": True}, {"score": "70", "core": True}, {"score": 70, "core": "yes"}):
        assert (
            await client.post(f"{path}/assessments", json=bad, headers=foundation.assessors[2])
        ).status_code == 422


async def test_experts_assess_independently_until_the_decision(foundation: Foundation) -> None:
    client = foundation.client
    patent_id = (await register(foundation, "EP 3123458 B1"))["patent_id"]
    path = f"/v1/admin/pool/patents/{patent_id}"
    await client.post(f"{path}/start-assessment", json={}, headers=foundation.registrar)
    for headers, score in zip(foundation.assessors, (91, 55), strict=False):
        reply = await client.post(f"{path}/assessments", json={"score": score, "core": True}, headers=headers)
        assert reply.status_code == 201, reply.text

    async def experts_seen_by(headers: dict[str, str]) -> list[tuple[str, int]]:
        reply = await client.get(path, headers=headers)
        assert reply.status_code == 200, reply.text
        return [(a["expert"], a["score"]) for a in reply.json()["assessments"]]

    both = [(ASSESSORS[0].address, 91), (ASSESSORS[1].address, 55)]
    assert await experts_seen_by(foundation.assessors[0]) == [both[0]]
    assert await experts_seen_by(foundation.assessors[1]) == [both[1]]
    assert await experts_seen_by(foundation.assessors[2]) == []
    assert await experts_seen_by(foundation.registrar) == both
    assert await experts_seen_by(foundation.council) == both

    decided = await client.post(f"{path}/decision", headers=foundation.registrar)
    assert decided.status_code == 200, decided.text
    assert await experts_seen_by(foundation.assessors[2]) == both


async def test_the_policy_rejects_and_nothing_is_minted(foundation: Foundation) -> None:
    contributor = (await new_member(foundation)).address
    patent = await register(foundation, "CN 112345678 A", source="contributed", contributor=contributor)
    decision = await assess_and_decide(foundation, patent["patent_id"], scores=(59, 60))
    assert decision["admitted"] is False
    assert decision["patent"]["status"] == "rejected"
    assert any("below the minimum of 60" in reason for reason in decision["reasons"])
    assert decision["mint"] is None
    assert foundation.chain.pool.bpc_balance(contributor) == 0


async def test_no_decision_before_the_committee_has_assessed(foundation: Foundation) -> None:
    """A decision is final: taken with fewer assessments than the policy needs, it could only
    reject. It is refused instead, and the patent waits for its experts."""
    client = foundation.client
    patent_id = (await register(foundation, "CN 112345679 A"))["patent_id"]
    path = f"/v1/admin/pool/patents/{patent_id}"
    assert (
        await client.post(f"{path}/start-assessment", json={}, headers=foundation.registrar)
    ).status_code == 200
    for assessed, headers in enumerate([None, *foundation.assessors[:1]]):
        if headers is not None:
            scored = await client.post(
                f"{path}/assessments", json={"score": 95, "core": True, "notes": "n"}, headers=headers
            )
            assert scored.status_code == 201, scored.text
        early = await client.post(f"{path}/decision", headers=foundation.registrar)
        assert early.status_code == 409, early.text
        assert (early.json()["assessments"], early.json()["needed"]) == (assessed, 2)
        assert f"has {assessed} of the 2 assessments" in early.json()["detail"]
        shown = (await client.get(path, headers=foundation.registrar)).json()
        assert shown["patent"]["status"] == "under_assessment"
    scored = await client.post(
        f"{path}/assessments", json={"score": 95, "core": True, "notes": "n"}, headers=foundation.assessors[1]
    )
    assert scored.status_code == 201, scored.text
    decided = await client.post(f"{path}/decision", headers=foundation.registrar)
    assert (decided.status_code, decided.json()["admitted"]) == (200, True)
    again = await client.post(f"{path}/decision", headers=foundation.registrar)  # a retry: the same answer
    assert again.status_code == 200
    fields = ("admitted", "reasons", "score", "mean_score")
    assert {name: again.json()[name] for name in fields} == {name: decided.json()[name] for name in fields}
    assert decided.json()["mean_score"] == "95"
    # A patent the registrar means to reject before its experts have assessed it (found invalid,
    # withdrawn): `close=true` decides on the assessments there are.
    other = (await register(foundation, "CN 112345680 A"))["patent_id"]
    started = await client.post(
        f"/v1/admin/pool/patents/{other}/start-assessment", json={}, headers=foundation.registrar
    )
    assert started.status_code == 200
    closed = await client.post(
        f"/v1/admin/pool/patents/{other}/decision", params={"close": "true"}, headers=foundation.registrar
    )
    assert (closed.status_code, closed.json()["patent"]["status"]) == (200, "rejected"), closed.text
    assert "0 assessment(s) is below the minimum of 2" in closed.json()["reasons"][0]


async def test_expired_patents_leave_the_pool_on_their_expiry_date(
    foundation: Foundation, database_url: str, chain_runtime: ChainRuntime
) -> None:
    today = days_from_today(0)
    due = await admit_in_the_past(database_url, "US 9,000,001 B1", expires_on=today)
    lapsed_earlier = await admit_in_the_past(database_url, "US 9,000,002 B1", expires_on=days_from_today(-2))
    in_force = await admit_in_the_past(database_url, "US 9,000,003 B1", expires_on=days_from_today(1))

    swept = await foundation.client.post("/v1/admin/pool/expiry-sweep", headers=foundation.registrar)
    assert swept.status_code == 200, swept.text
    assert swept.json() == {"today": today.isoformat(), "retired": sorted([due, lapsed_earlier])}
    for patent_id, expires_on in ((due, today), (lapsed_earlier, days_from_today(-2))):
        patent = (await _detail(foundation, patent_id))["patent"]
        assert (patent["status"], patent["retirement_reason"]) == ("retired", "expired")
        # It left the pool on the day it lapsed, even though the sweep ran later.
        assert date.fromisoformat(patent["left_pool_on"]) == expires_on
    assert (await _detail(foundation, in_force))["patent"]["status"] == "in_pool"
    again = await foundation.client.post("/v1/admin/pool/expiry-sweep", headers=foundation.registrar)
    assert again.json()["retired"] == []

    # A service starting up sweeps too.
    late = await admit_in_the_past(database_url, "US 9,000,004 B1", expires_on=today)
    async with started_beside(pool_settings(database_url), chain_runtime):
        pass
    assert (await _detail(foundation, late))["patent"]["status"] == "retired"
    audit = await foundation.client.get(
        "/v1/admin/audit", params={"action": "patent.expire"}, headers=foundation.registrar
    )
    assert {entry["subject_id"] for entry in audit.json()["items"]} == {due, lapsed_earlier, late}
    assert {entry["actor"] for entry in audit.json()["items"]} == {REGISTRAR.address, "system:expiry-sweep"}


async def test_public_views_filter_paginate_and_count(foundation: Foundation) -> None:
    client = foundation.client
    first, second = (await new_member(foundation)).address, (await new_member(foundation)).address
    await admit_patent(foundation, "US 10,000,001 B2", source="contributed", contributor=first)
    await admit_patent(foundation, "US 10,000,002 B2", source="contributed", contributor=first, field="ai")
    await admit_patent(foundation, "EP 3000003 B1", source="contributed", contributor=second)
    await admit_patent(foundation, "JP 2017-123456 A", field="ai")  # purchased: no contributor
    await register(foundation, "DE 10 2015 123 456 A1")  # proposed only

    everything = await client.get("/v1/pool/patents")
    assert [p["patent_id"] for p in everything.json()["items"]] == [
        "EP3000003B1",
        "JP2017123456A",
        "US10000001B2",
        "US10000002B2",
    ]
    ai = await client.get("/v1/pool/patents", params={"field": "ai"})
    assert [p["patent_id"] for p in ai.json()["items"]] == ["JP2017123456A", "US10000002B2"]
    us = await client.get("/v1/pool/patents", params={"country": "us"})
    assert len(us.json()["items"]) == 2
    proposed = await client.get("/v1/pool/patents", params={"status": "proposed"})
    assert [p["patent_id"] for p in proposed.json()["items"]] == ["DE102015123456A1"]

    seen, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/pool/patents", params=params)).json()
        seen += [p["patent_id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [p["patent_id"] for p in everything.json()["items"]]
    assert (await client.get("/v1/pool/patents", params={"cursor": "nonsense"})).status_code == 422
    assert (await client.get("/v1/pool/patents", params={"field": "alchemy"})).status_code == 422

    public = await client.get("/v1/pool/patents/US10000001B2")
    assert public.json()["assessments"] is None  # experts' notes are for the foundation
    assert (await client.get("/v1/pool/patents/US99999999B2")).status_code == 404

    stats = (await client.get("/v1/pool/stats")).json()
    assert stats["live_patents"] == 4
    assert stats["live_patents_by_field"] == {"ai": 2, "blockchain": 2}
    assert stats["live_patents_by_country"] == {"EP": 1, "JP": 1, "US": 2}
    assert stats["contributors"] == 2
    assert stats["bpc_supply_wei"] == str(foundation.chain.pool.bpc_supply())
    assert stats["last_traded_price"] is None
    policies = (await client.get("/v1/pool/policies")).json()
    assert policies["admission"]["min_assessments"] == 2
    assert "2026.1" in policies["mint"]["description"]


async def test_text_no_database_stores_is_refused_naming_the_field(foundation: Foundation) -> None:
    """PostgreSQL takes no NUL in a text parameter and UTF-8 no lone surrogate (which JSON can
    spell): either is a 422 naming the field, and nothing is stored or queried."""
    client, registrar = foundation.client, foundation.registrar
    path = "/v1/admin/pool/patents/EP3123456B1"
    for url, headers, body, field in [
        ("/v1/admin/pool/patents", registrar, patent_body("EP3123456B1", title="Ledger\0"), "title"),
        ("/v1/admin/pool/patents", registrar, patent_body("EP3123456B1", owner="Ledger \ud800"), "owner"),
        ("/v1/admin/pool/patents", registrar, patent_body("EP3123456B1", family_id="F\0"), "family_id"),
        (f"{path}/start-assessment", registrar, {"note": "\0"}, "note"),
        (f"{path}/assessments", foundation.assessors[0], {"score": 80, "core": True, "notes": "\0"}, "notes"),
        (f"{path}/retire", registrar, {"reason": "non_core", "note": "\ud800"}, "note"),
    ]:
        reply = await client.post(
            url, content=json.dumps(body), headers={**headers, "content-type": "application/json"}
        )
        assert reply.status_code == 422, (url, field, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert [error["loc"] for error in reply.json()["errors"]] == [["body", field]]
    assert (await client.get("/v1/pool/patents", params={"status": "proposed"})).json()["items"] == []

    nul = base64.urlsafe_b64encode(json.dumps("\0").encode()).decode().rstrip("=")
    refused = await client.get("/v1/pool/patents", params={"cursor": nul})
    assert refused.status_code == 422, refused.text
    assert "cursor" in refused.json()["detail"]


async def test_an_over_long_family_id_is_refused_counting_characters(foundation: Foundation) -> None:
    client = foundation.client
    reply = await client.post(
        "/v1/admin/pool/patents",
        json=patent_body("EP3123456B1", family_id="F" * 65),
        headers=foundation.registrar,
    )
    assert reply.status_code == 422, reply.text
    (error,) = reply.json()["errors"]
    assert (error["loc"], error["type"]) == (["body", "family_id"], "string_too_long")
    assert "at most 64 characters" in error["msg"]
    assert (await client.get("/v1/pool/patents", params={"status": "proposed"})).json()["items"] == []


async def test_a_field_no_body_names_is_refused_not_dropped(foundation: Foundation) -> None:
    """As the order bodies: an unknown field is a 422 ``extra_forbidden`` naming it, and nothing is
    registered, moved or stored."""
    client, registrar = foundation.client, foundation.registrar
    patent = await register(foundation, "EP 3300100 B1")
    path = f"/v1/admin/pool/patents/{patent['patent_id']}"
    for url, headers, body, field in [
        ("/v1/admin/pool/patents", registrar, patent_body("EP3123456B1", country="EP"), "country"),
        ("/v1/admin/pool/patents", registrar, patent_body("EP3123456B1", bogus=1), "bogus"),
        (f"{path}/start-assessment", registrar, {"note": "x", "urgent": True}, "urgent"),
        (f"{path}/retire", registrar, {"reason": "non_core", "by": "x"}, "by"),
        (
            "/v1/admin/royalties/runs",
            foundation.council,
            {"period_id": "X1", "starts_on": "2026-01-01", "ends_on": "2026-01-31", "tokens": []},
            "tokens",
        ),
    ]:
        reply = await client.post(url, json=body, headers=headers)
        assert reply.status_code == 422, (url, field, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert [(error["loc"], error["type"]) for error in reply.json()["errors"]] == [
            (["body", field], "extra_forbidden")
        ]
    assert (await client.get("/v1/admin/pool/patents/EP3123456B1", headers=registrar)).status_code == 404
    assert (await _detail(foundation, patent["patent_id"]))["patent"]["status"] == "proposed"
    assert (await client.get("/v1/admin/royalties/runs", headers=foundation.council)).json() == []


async def _audit_entries(foundation: Foundation) -> list[dict[str, Any]]:
    reply = await foundation.client.get("/v1/admin/audit", headers=foundation.council)
    assert reply.status_code == 200, reply.text
    items: list[dict[str, Any]] = reply.json()["items"]
    return items


async def _change_member(foundation: Foundation, address: str, action: str) -> None:
    headers = foundation.council if action == "expel" else foundation.registrar
    reply = await foundation.client.post(
        f"/v1/admin/members/{address}/{action}", json={"reason": "test"}, headers=headers
    )
    assert reply.status_code == 200, reply.text


async def _mints(foundation: Foundation) -> list[dict[str, Any]]:
    reply = await foundation.client.get("/v1/admin/pool/mints", headers=foundation.registrar)
    assert reply.status_code == 200, reply.text
    items: list[dict[str, Any]] = reply.json()["items"]
    return items


async def test_a_contribution_is_registered_only_from_an_active_member(foundation: Foundation) -> None:
    """Members contribute patents and receive BPC for them: anyone else is refused and nothing is
    stored. A retry of a registration already stored answers as before, whatever happened since."""
    client, registrar = foundation.client, foundation.registrar
    suspended, expelled, active = [await new_member(foundation) for _ in range(3)]
    await _change_member(foundation, suspended.address, "suspend")
    await _change_member(foundation, expelled.address, "expel")
    before = await _audit_entries(foundation)
    for contributor, status in [
        (Account.create().address, None),
        (suspended.address, "suspended"),
        (expelled.address, "expelled"),
    ]:
        body = patent_body("EP 3123456 B1", source="contributed", contributor=contributor)
        reply = await client.post("/v1/admin/pool/patents", json=body, headers=registrar)
        assert reply.status_code == 422, (status, reply.text)
        problem = reply.json()
        assert problem["type"].endswith("/invalid-patent-record")
        assert (problem["contributor"], problem["member_status"]) == (contributor, status)
        standing = "is not a pool member" if status is None else f"is a {status} pool member"
        assert problem["detail"] == (
            f"the contributor {contributor} {standing}: patents are contributed by active members"
        )
    assert (await client.get("/v1/admin/pool/patents/EP3123456B1", headers=registrar)).status_code == 404
    assert await _audit_entries(foundation) == before

    body = patent_body("EP 3123456 B1", source="contributed", contributor=active.address)
    assert (await client.post("/v1/admin/pool/patents", json=body, headers=registrar)).status_code == 201
    await _change_member(foundation, active.address, "suspend")
    retried = await client.post("/v1/admin/pool/patents", json=body, headers=registrar)
    assert (retried.status_code, retried.json()["contributor"]) == (200, active.address)


async def _assessed(foundation: Foundation, number: str, contributor: str) -> str:
    """A contribution of ``contributor`` registered and assessed well enough to be admitted."""
    patent = await register(foundation, number, source="contributed", contributor=contributor)
    path = f"/v1/admin/pool/patents/{patent['patent_id']}"
    started = await foundation.client.post(f"{path}/start-assessment", json={}, headers=foundation.registrar)
    assert started.status_code == 200, started.text
    for headers in foundation.assessors[:2]:
        reply = await foundation.client.post(
            f"{path}/assessments", json={"score": 80, "core": True}, headers=headers
        )
        assert reply.status_code == 201, reply.text
    patent_id: str = patent["patent_id"]
    return patent_id


async def test_a_contribution_is_admitted_only_while_its_contributor_is_an_active_member(
    foundation: Foundation,
) -> None:
    """No BPC is minted to a non-member: a suspended contributor holds the decision up (409, nothing
    changed) until reinstated; an expelled one has the patent rejected, saying why."""
    client, pool = foundation.client, foundation.chain.pool
    member = await new_member(foundation)
    patent_id = await _assessed(foundation, "US 10,555,001 B2", member.address)
    await _change_member(foundation, member.address, "suspend")
    before = await _audit_entries(foundation)
    waiting = await client.post(f"/v1/admin/pool/patents/{patent_id}/decision", headers=foundation.registrar)
    assert waiting.status_code == 409, waiting.text
    assert waiting.headers["content-type"].startswith("application/problem+json")
    assert waiting.json()["member_status"] == "suspended"
    assert f"{member.address} is a suspended pool member" in waiting.json()["detail"]
    assert (await _detail(foundation, patent_id))["patent"]["status"] == "under_assessment"
    assert await _mints(foundation) == []
    assert await _audit_entries(foundation) == before

    await _change_member(foundation, member.address, "reinstate")
    admitted = await client.post(f"/v1/admin/pool/patents/{patent_id}/decision", headers=foundation.registrar)
    assert admitted.status_code == 200, admitted.text
    assert (admitted.json()["admitted"], admitted.json()["patent"]["status"]) == (True, "in_pool")
    assert [mint["recipient"] for mint in await _mints(foundation)] == [member.address]
    assert pool.bpc_balance(member.address) == MINT_AT_100 * 80 // 100

    expelled = await new_member(foundation)
    rejected_id = await _assessed(foundation, "US 10,555,002 B2", expelled.address)
    await _change_member(foundation, expelled.address, "expel")
    rejected = await client.post(
        f"/v1/admin/pool/patents/{rejected_id}/decision", headers=foundation.registrar
    )
    assert rejected.status_code == 200, rejected.text
    decided = rejected.json()
    assert (decided["admitted"], decided["patent"]["status"], decided["mint"]) == (False, "rejected", None)
    assert decided["reasons"][0] == f"its contributor {expelled.address} was expelled from the pool"
    events = (await _detail(foundation, rejected_id))["events"]
    assert events[-1]["reason"].startswith(f"its contributor {expelled.address} was expelled from the pool; ")
    assert [mint["recipient"] for mint in await _mints(foundation)] == [member.address]
    assert pool.bpc_balance(expelled.address) == 0


async def _rewrite_patent(database_url: str, patent_id: str, **values: object) -> None:
    """Change a stored patent behind the service's back (what an earlier version stored, or time)."""
    engine = create_engine_for_url(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(PatentRecord).where(PatentRecord.patent_id == patent_id).values(**values)
            )
    finally:
        await engine.dispose()


async def test_a_contribution_whose_contributor_is_not_on_the_register_is_rejected_not_held(
    foundation: Foundation, database_url: str
) -> None:
    """A contribution stored before registration required a member names a contributor that may
    never be one: its decision rejects it, saying why, rather than waiting for good (409)."""
    member = await new_member(foundation)
    patent_id = await _assessed(foundation, "US 10,555,003 B2", member.address)
    outsider = Account.create().address
    await _rewrite_patent(database_url, patent_id, contributor=outsider)
    decided = await foundation.client.post(
        f"/v1/admin/pool/patents/{patent_id}/decision", headers=foundation.registrar
    )
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert (body["admitted"], body["patent"]["status"], body["mint"]) == (False, "rejected", None)
    assert body["reasons"][0] == f"its contributor {outsider} is not a pool member"
    assert await _mints(foundation) == []


async def test_a_contributor_on_the_chains_register_but_not_indexed_yet_holds_the_decision_up(
    foundation: Foundation, database_url: str
) -> None:
    """The index lags behind the chain (or is being rebuilt): a contributor it does not know yet
    is asked of the chain before the patent is rejected for good, and the decision waits (409,
    nothing changed)."""
    member = await new_member(foundation)
    patent_id = await _assessed(foundation, "US 10,555,005 B2", member.address)
    admitted_meanwhile = Account.create().address
    foundation.chain.pool.admit(admitted_meanwhile, Tier.SMALL)  # on chain, not indexed
    await _rewrite_patent(database_url, patent_id, contributor=admitted_meanwhile)
    before = await _audit_entries(foundation)
    waiting = await foundation.client.post(
        f"/v1/admin/pool/patents/{patent_id}/decision", headers=foundation.registrar
    )
    assert waiting.status_code == 409, waiting.text
    assert "is not indexed yet" in waiting.json()["detail"]
    assert (await _detail(foundation, patent_id))["patent"]["status"] == "under_assessment"
    assert await _audit_entries(foundation) == before


async def test_a_lapsed_contribution_of_a_suspended_contributor_is_rejected_as_lapsed(
    foundation: Foundation, database_url: str
) -> None:
    """The rules reject it whatever its contributor's standing: no 409 waiting for a reinstatement
    after which it would be rejected anyway."""
    member = await new_member(foundation)
    patent_id = await _assessed(foundation, "US 10,555,004 B2", member.address)
    await _change_member(foundation, member.address, "suspend")
    await _rewrite_patent(database_url, patent_id, expires_on=days_from_today(-2))
    decided = await foundation.client.post(
        f"/v1/admin/pool/patents/{patent_id}/decision", headers=foundation.registrar
    )
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert (body["admitted"], body["patent"]["status"]) == (False, "rejected")
    assert body["reasons"][0].startswith("lapsed on ")


@pytest.mark.parametrize(
    ("dates", "field", "reason"),
    [
        (
            {"filing_date": date(2030, 1, 1), "grant_date": None},
            "filing_date",
            "the filing date 2030-01-01 is in the future",
        ),
        ({"grant_date": date(2030, 1, 1)}, "grant_date", "the grant date 2030-01-01 is in the future"),
        (
            {"filing_date": date(1995, 1, 1), "grant_date": date(1999, 1, 1), "expires_on": date(2030, 1, 2)},
            "expires_on",
            "the expiry date 2030-01-02 is more than 35 years after the filing date",
        ),
        (
            {"filing_date": None, "expires_on": date(9999, 12, 31)},
            "expires_on",
            "the expiry date 9999-12-31 is more than 35 years after today",
        ),
    ],
)
def test_dates_no_patent_can_have_are_refused(dates: dict[str, date | None], field: str, reason: str) -> None:
    values: dict[str, Any] = {
        "publication_number": "EP 3123456 B1",
        "title": "Proof of storage",
        "owner": "Ledger Labs GmbH",
        "family_id": None,
        "source": PatentSource.PURCHASED,
        "contributor": None,
        "filing_date": date(2015, 6, 1),
        "grant_date": date(2018, 6, 1),
        "expires_on": date(2035, 6, 1),
        "at": datetime(2026, 12, 5, tzinfo=UTC),
    }
    assert registration_refusals(**values) == []
    refusals = registration_refusals(**{**values, **dates})
    assert [refusal.field for refusal in refusals] == [field]
    assert str(refusals[0].error).startswith(reason)
    assert registration_refusals(**{**values, "filing_date": None, "expires_on": date(2061, 12, 5)}) == []
    # A grant dated tomorrow by an office east of UTC; a 25.5-year term (a paediatric extension).
    assert registration_refusals(**{**values, "grant_date": date(2026, 12, 6)}) == []
    assert registration_refusals(**{**values, "expires_on": date(2040, 12, 1)}) == []
