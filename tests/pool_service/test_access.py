"""Who may call what: every admin route against every role, and the council's management of roles."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from eth_account import Account
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.chain.runtime import ChainRuntime
from exchange.db.base import utc_now
from exchange.kit.errors import Conflict
from exchange.main import build_app
from exchange.pool import repository
from exchange.pool.models import FoundationRole
from exchange.pool.service import grant_role, revoke_role
from exchange.settings import Settings
from tests.pool_service.conftest import ASSESSORS, COUNCIL, REGISTRAR, Foundation, pool_settings
from tests.pool_service.flows import days_from_today
from tests.pool_service.test_royalties import until_a_transaction_waits_for_a_lock
from tests.support.addresses import mistyped
from tests.support.auth import bearer_headers

NOBODY = Account.create().address
ALL_ROLES = frozenset({"council", "registrar", "assessor"})
COUNCIL_OR_REGISTRAR = frozenset({"council", "registrar"})


@dataclass(frozen=True)
class Call:
    method: str
    template: str  # the route's path as declared
    path: str  # a concrete path to call
    allowed: frozenset[str]
    body: dict[str, object] | None = None


def _calls() -> list[Call]:
    app, member, patent, run = (
        "/v1/admin/membership/applications/999",
        f"/v1/admin/members/{NOBODY}",
        ("/v1/admin/pool/patents/EP3123456B1"),
        "/v1/admin/royalties/runs/999",
    )
    reason: dict[str, object] = {"reason": "test"}
    council, registrar, assessor = frozenset({"council"}), frozenset({"registrar"}), frozenset({"assessor"})
    future = days_from_today(30).isoformat()
    return [
        Call("GET", "/v1/admin/roles", "/v1/admin/roles", council),
        Call("POST", "/v1/admin/roles", "/v1/admin/roles", council, {"address": NOBODY, "role": "assessor"}),
        Call("DELETE", "/v1/admin/roles/{role}/{address}", f"/v1/admin/roles/registrar/{NOBODY}", council),
        # The log holds applicants' contact details and evidence: not for assessors.
        Call("GET", "/v1/admin/audit", "/v1/admin/audit", COUNCIL_OR_REGISTRAR),
        Call("GET", "/v1/admin/audit/export", "/v1/admin/audit/export", COUNCIL_OR_REGISTRAR),
        Call(
            "GET",
            "/v1/admin/membership/applications",
            "/v1/admin/membership/applications",
            COUNCIL_OR_REGISTRAR,
        ),
        Call("GET", "/v1/admin/membership/applications/{application_id}", app, COUNCIL_OR_REGISTRAR),
        Call(
            "POST",
            "/v1/admin/membership/applications/{application_id}/review",
            f"{app}/review",
            registrar,
            {},
        ),
        Call(
            "POST",
            "/v1/admin/membership/applications/{application_id}/approve",
            f"{app}/approve",
            council,
            {"tier": "small"},
        ),
        Call(
            "POST",
            "/v1/admin/membership/applications/{application_id}/reject",
            f"{app}/reject",
            council,
            reason,
        ),
        Call("GET", "/v1/admin/members", "/v1/admin/members", COUNCIL_OR_REGISTRAR),
        Call("GET", "/v1/admin/members/{address}", member, COUNCIL_OR_REGISTRAR),
        Call(
            "POST",
            "/v1/admin/members/{address}/tier",
            f"{member}/tier",
            registrar,
            {**reason, "tier": "large"},
        ),
        Call("POST", "/v1/admin/members/{address}/suspend", f"{member}/suspend", registrar, reason),
        Call("POST", "/v1/admin/members/{address}/reinstate", f"{member}/reinstate", registrar, reason),
        Call("POST", "/v1/admin/members/{address}/expel", f"{member}/expel", council, reason),
        Call(
            "POST",
            "/v1/admin/pool/patents",
            "/v1/admin/pool/patents",
            registrar,
            {"publication_number": "XX1"},
        ),
        Call("GET", "/v1/admin/pool/patents/{patent_id}", patent, ALL_ROLES),
        Call(
            "POST",
            "/v1/admin/pool/patents/{patent_id}/start-assessment",
            f"{patent}/start-assessment",
            registrar,
            {},
        ),
        Call(
            "POST",
            "/v1/admin/pool/patents/{patent_id}/assessments",
            f"{patent}/assessments",
            assessor,
            {"score": 70, "core": True},
        ),
        Call("POST", "/v1/admin/pool/patents/{patent_id}/decision", f"{patent}/decision", registrar),
        Call(
            "POST",
            "/v1/admin/pool/patents/{patent_id}/retire",
            f"{patent}/retire",
            registrar,
            {"reason": "non_core"},
        ),
        Call("POST", "/v1/admin/pool/expiry-sweep", "/v1/admin/pool/expiry-sweep", registrar),
        Call("GET", "/v1/admin/pool/mints", "/v1/admin/pool/mints", COUNCIL_OR_REGISTRAR),
        Call("POST", "/v1/admin/pool/mints/{mint_id}/process", "/v1/admin/pool/mints/999/process", registrar),
        Call(
            "POST",
            "/v1/admin/royalties/runs",
            "/v1/admin/royalties/runs",
            council,
            {"period_id": "P1", "starts_on": future, "ends_on": future},
        ),
        Call("GET", "/v1/admin/royalties/runs", "/v1/admin/royalties/runs", council),
        Call("GET", "/v1/admin/royalties/runs/{run_id}", run, council),
        Call("POST", "/v1/admin/royalties/runs/{run_id}/pay", f"{run}/pay", council),
        Call("GET", "/v1/admin/royalties/runs/{run_id}/statements", f"{run}/statements", council),
        Call(
            "GET",
            "/v1/admin/royalties/runs/{run_id}/statements/{contributor}",
            f"{run}/statements/{NOBODY}",
            council,
        ),
    ]


CALLS = _calls()


def test_the_table_covers_every_admin_route(settings: Settings, embedded_runtime: ChainRuntime) -> None:
    paths = build_app(settings, chain=embedded_runtime).openapi()["paths"]
    declared = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if any(tag.startswith("pool administration") for tag in operation.get("tags", ()))
        and path.startswith("/v1/admin")
    }
    assert declared == {(call.method, call.template) for call in CALLS}


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
async def test_every_admin_route_refuses_every_other_role(foundation: Foundation) -> None:
    # One backend: authorisation does not depend on the database, and the table is long.
    for call in CALLS:
        for role in ("council", "registrar", "assessor", "outsider", "anonymous"):
            reply = await foundation.client.request(
                call.method, call.path, json=call.body, headers=foundation.headers_of(role)
            )
            where = f"{role} {call.method} {call.path}: {reply.status_code} {reply.text[:200]}"
            assert reply.status_code < 500, where
            if role == "anonymous":
                assert reply.status_code == 401, where
            elif role in call.allowed:
                assert reply.status_code not in (401, 403), where
            else:
                assert reply.status_code == 403, where
                assert reply.headers["content-type"].startswith("application/problem+json"), where
                assert set(reply.json()["required_roles"]) == call.allowed, where


async def test_the_council_grants_and_revokes_roles(foundation: Foundation) -> None:
    client, newcomer = foundation.client, Account.create()
    headers = await bearer_headers(client, newcomer)
    assert (await client.get("/v1/admin/pool/mints", headers=headers)).status_code == 403
    mine = await client.get("/v1/pool/roles/mine", headers=headers)
    assert mine.json() == {"address": newcomer.address, "roles": []}

    granted = await client.post(
        "/v1/admin/roles",
        json={"address": newcomer.address.lower(), "role": "registrar", "reason": "secretariat"},
        headers=foundation.council,
    )
    assert granted.status_code == 201, granted.text
    assert (granted.json()["address"], granted.json()["granted_by"]) == (newcomer.address, COUNCIL.address)
    again = await client.post(
        "/v1/admin/roles", json={"address": newcomer.address, "role": "registrar"}, headers=foundation.council
    )
    assert (again.status_code, again.json()["id"]) == (200, granted.json()["id"])
    assert (await client.get("/v1/admin/pool/mints", headers=headers)).status_code == 200

    revoked = await client.delete(
        f"/v1/admin/roles/registrar/{newcomer.address}", params={"reason": "left"}, headers=foundation.council
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_by"] == COUNCIL.address
    assert (await client.get("/v1/admin/pool/mints", headers=headers)).status_code == 403
    assert (
        await client.delete(f"/v1/admin/roles/registrar/{newcomer.address}", headers=foundation.council)
    ).status_code == 404

    audit = (
        await client.get("/v1/admin/audit", params={"actor": COUNCIL.address}, headers=foundation.council)
    ).json()
    assert [entry["action"] for entry in audit["items"]] == ["role.revoke", "role.grant"]
    assert audit["items"][0]["reason"] == "left"


async def test_a_grant_to_a_mistyped_address_is_refused(foundation: Foundation) -> None:
    newcomer = Account.create().address
    reply = await foundation.client.post(
        "/v1/admin/roles",
        json={"address": mistyped(newcomer), "role": "registrar"},
        headers=foundation.council,
    )
    assert reply.status_code == 422, reply.text
    assert [(error["loc"], error["type"]) for error in reply.json()["errors"]] == [
        (["body", "address"], "address_checksum")
    ]
    roles = await foundation.client.get("/v1/admin/roles", headers=foundation.council)
    assert {grant["address"] for grant in roles.json()} & {newcomer, mistyped(newcomer)} == set()


async def test_a_grants_reason_holding_a_nul_is_refused_and_nothing_granted(foundation: Foundation) -> None:
    newcomer = Account.create().address
    reply = await foundation.client.post(
        "/v1/admin/roles",
        json={"address": newcomer, "role": "registrar", "reason": "secretariat\0"},
        headers=foundation.council,
    )
    assert reply.status_code == 422, reply.text
    assert [error["loc"] for error in reply.json()["errors"]] == [["body", "reason"]]
    roles = await foundation.client.get("/v1/admin/roles", headers=foundation.council)
    assert newcomer not in {grant["address"] for grant in roles.json()}


async def test_a_revocations_reason_holding_a_nul_is_refused_and_the_role_kept(
    foundation: Foundation,
) -> None:
    newcomer = Account.create().address
    granted = await foundation.client.post(
        "/v1/admin/roles", json={"address": newcomer, "role": "registrar"}, headers=foundation.council
    )
    assert granted.status_code in (200, 201), granted.text
    reply = await foundation.client.delete(
        f"/v1/admin/roles/registrar/{newcomer}", params={"reason": "left\0"}, headers=foundation.council
    )
    assert reply.status_code == 422, reply.text
    assert [error["loc"] for error in reply.json()["errors"]] == [["query", "reason"]]
    roles = await foundation.client.get("/v1/admin/roles", headers=foundation.council)
    assert newcomer in {grant["address"] for grant in roles.json()}


async def test_the_last_council_member_cannot_be_removed(foundation: Foundation) -> None:
    reply = await foundation.client.delete(
        f"/v1/admin/roles/council/{COUNCIL.address}", headers=foundation.council
    )
    assert reply.status_code == 409
    assert "last council member" in reply.json()["detail"]


async def test_roles_follow_the_settings_at_start_up(database_url: str, chain_runtime: ChainRuntime) -> None:
    appointed = Account.create().address
    first = build_app(pool_settings(database_url), chain=chain_runtime)
    async with (
        first.router.lifespan_context(first),
        first.state.pool.sessionmaker() as session,
        session.begin(),
    ):
        await grant_role(
            session, address=appointed, role=FoundationRole.ASSESSOR, actor=COUNCIL.address, at=utc_now()
        )
    # The registrar and two assessors leave the settings; the role the council granted stays.
    second_settings = pool_settings(
        database_url, registrar_addresses=(), assessor_addresses=(ASSESSORS[0].address,)
    )
    second = build_app(second_settings, chain=chain_runtime)
    async with second.router.lifespan_context(second), second.state.pool.sessionmaker() as session:
        live = {(grant.address, grant.role) for grant in await repository.role_grants(session)}
        revoked = await repository.audit_page(session, before_id=None, limit=10, action="role.revoke")
    assert live == {(COUNCIL.address, "council"), (ASSESSORS[0].address, "assessor"), (appointed, "assessor")}
    assert {entry.subject_id for entry in revoked} == {
        f"registrar:{REGISTRAR.address}",
        f"assessor:{ASSESSORS[1].address}",
        f"assessor:{ASSESSORS[2].address}",
    }
    assert {entry.actor for entry in revoked} == {"settings"}


async def test_a_configured_role_the_council_revoked_stays_revoked(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    """The registrar's key is lost: the council revokes its role, and restarts with the settings
    unchanged do not grant it again, until the council itself does."""
    settings = pool_settings(database_url)

    async def live_registrars() -> set[str]:
        app = build_app(settings, chain=chain_runtime)
        async with app.router.lifespan_context(app), app.state.pool.sessionmaker() as session:
            grants = await repository.role_grants(session)
        return {grant.address for grant in grants if grant.role == "registrar"}

    async def the_council(change: Callable[..., Awaitable[object]]) -> None:
        app = build_app(settings, chain=chain_runtime)
        async with (
            app.router.lifespan_context(app),
            app.state.pool.sessionmaker() as session,
            session.begin(),
        ):
            await change(
                session,
                address=REGISTRAR.address,
                role=FoundationRole.REGISTRAR,
                actor=COUNCIL.address,
                at=utc_now(),
            )

    assert await live_registrars() == {REGISTRAR.address}
    await the_council(revoke_role)
    assert await live_registrars() == set()
    assert await live_registrars() == set()
    await the_council(grant_role)
    assert await live_registrars() == {REGISTRAR.address}


async def test_two_council_members_revoking_each_other_at_once_leave_one(
    database_backend: str, database_url: str, chain_runtime: ChainRuntime
) -> None:
    """The second revocation waits for the first's transaction, then finds its revoker the last
    council member (PostgreSQL: under SQLite one writer runs at a time)."""
    if database_backend != "postgresql":
        pytest.skip("SQLite transactions take the write lock when they begin: revocations never overlap")
    second = Account.create().address
    app = build_app(pool_settings(database_url), chain=chain_runtime)
    async with app.router.lifespan_context(app):
        sessionmaker = app.state.pool.sessionmaker
        async with sessionmaker() as session, session.begin():
            await grant_role(
                session, address=second, role=FoundationRole.COUNCIL, actor=COUNCIL.address, at=utc_now()
            )

        async def revoke(session: AsyncSession, address: str, actor: str) -> None:
            await revoke_role(
                session, address=address, role=FoundationRole.COUNCIL, actor=actor, at=utc_now()
            )

        async def the_other_revocation() -> None:
            async with sessionmaker() as session, session.begin():
                await revoke(session, COUNCIL.address, second)

        async with sessionmaker() as session, session.begin():
            await revoke(session, second, COUNCIL.address)
            other = asyncio.create_task(the_other_revocation())
            await until_a_transaction_waits_for_a_lock(app.state.pool, in_statement="foundation_roles")
        with pytest.raises(Conflict, match="last council member"):
            await other
        async with sessionmaker() as session:
            council = {
                grant.address for grant in await repository.role_grants(session) if grant.role == "council"
            }
    assert council == {COUNCIL.address}


async def test_the_last_council_member_stays_when_the_settings_drop_it(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    async def council_after_start(settings: Settings) -> set[str]:
        app = build_app(settings, chain=chain_runtime)
        async with app.router.lifespan_context(app), app.state.pool.sessionmaker() as session:
            return {
                grant.address for grant in await repository.role_grants(session) if grant.role == "council"
            }

    assert await council_after_start(pool_settings(database_url)) == {COUNCIL.address}
    # Nobody could grant roles again: the last council member is kept (and the start logs an error).
    assert await council_after_start(pool_settings(database_url, council_addresses=())) == {COUNCIL.address}


async def test_an_over_long_optional_text_is_refused_counting_characters(foundation: Foundation) -> None:
    """An optional text's limit is the string's own: the refusal counts characters (pydantic
    counted "items" when the limit was given on the optional field), and nothing changes."""
    holder, newcomer = Account.create().address, Account.create().address
    kept = await foundation.client.post(
        "/v1/admin/roles", json={"address": holder, "role": "registrar"}, headers=foundation.council
    )
    assert kept.status_code in (200, 201), kept.text
    granted = await foundation.client.post(
        "/v1/admin/roles",
        json={"address": newcomer, "role": "registrar", "reason": "x" * 2001},
        headers=foundation.council,
    )
    revoked = await foundation.client.delete(
        f"/v1/admin/roles/registrar/{holder}", params={"reason": "x" * 2001}, headers=foundation.council
    )
    listed = await foundation.client.get(
        "/v1/admin/audit", params={"actor": "x" * 129}, headers=foundation.council
    )
    for reply, where, limit in (
        (granted, ["body", "reason"], 2000),
        (revoked, ["query", "reason"], 2000),
        (listed, ["query", "actor"], 128),
    ):
        assert reply.status_code == 422, reply.text
        (error,) = reply.json()["errors"]
        assert (error["loc"], error["type"]) == (where, "string_too_long")
        assert f"at most {limit} characters" in error["msg"]
    roles = await foundation.client.get("/v1/admin/roles", headers=foundation.council)
    held = {(grant["address"], grant["role"]) for grant in roles.json()}
    assert (holder, "registrar") in held
    assert newcomer not in {address for address, _ in held}
