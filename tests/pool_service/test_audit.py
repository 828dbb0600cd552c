"""The audit log: who did what when, paged, exported, and refused any change by the database itself."""

from __future__ import annotations

import csv
import io
import json

import pytest
from eth_account import Account
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from exchange.db.engine import create_engine_for_url
from tests.pool_service.conftest import COUNCIL, REGISTRAR, Foundation
from tests.pool_service.flows import admit, register
from tests.support.addresses import mistyped


async def test_entries_page_newest_first_and_export(foundation: Foundation) -> None:
    client = foundation.client
    member = Account.create()
    await admit(foundation, member, tier="medium", enterprise_size="medium")
    await register(foundation, "EP 3400001 B1")
    await client.post(
        f"/v1/admin/members/{member.address}/suspend",
        json={"reason": "late dues"},
        headers=foundation.registrar,
    )

    everything = (
        await client.get("/v1/admin/audit", params={"limit": 500}, headers=foundation.registrar)
    ).json()
    assert everything["next_cursor"] is None
    entries = everything["items"]
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    assert [e["action"] for e in entries[:4]] == [
        "member.suspend",
        "patent.register",
        "membership.approve",
        "membership.review",
    ]
    suspend, _, approve, review = entries[:4]
    assert (suspend["actor"], suspend["subject_id"], suspend["reason"]) == (
        REGISTRAR.address,
        member.address,
        "late dues",
    )
    assert (suspend["before"]["status"], suspend["after"]["status"]) == ("active", "suspended")
    assert len(suspend["tx_hashes"]) == 1
    assert suspend["request_id"]
    assert approve["actor"] == COUNCIL.address
    assert approve["before"]["member"] is None
    assert approve["after"]["member"]["tier"] == "medium"
    assert approve["tx_hashes"] == [approve["after"]["application"]["admit_tx_hash"]]
    assert (review["before"]["status"], review["after"]["status"]) == ("submitted", "under_review")

    paged, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = (await client.get("/v1/admin/audit", params=params, headers=foundation.council)).json()
        paged += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == entries

    exported = await client.get("/v1/admin/audit/export", headers=foundation.registrar)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(row["id"]) for row in rows] == sorted(e["id"] for e in entries)  # oldest first
    last = rows[-1]
    assert (last["action"], last["actor"], last["tx_hashes"]) == (
        "member.suspend",
        REGISTRAR.address,
        suspend["tx_hashes"][0],
    )
    assert json.loads(last["after"])["status"] == "suspended"

    lines = await client.get(
        "/v1/admin/audit/export",
        params={"format": "jsonl", "action": "patent.register"},
        headers=foundation.council,
    )
    records = [json.loads(line) for line in lines.text.splitlines()]
    assert [record["subject_id"] for record in records] == ["EP3400001B1"]


async def test_the_database_refuses_to_change_or_delete_entries(
    foundation: Foundation, database_url: str
) -> None:
    await register(foundation, "EP 3400002 B1")
    engine = create_engine_for_url(database_url)
    try:
        for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as connection:
                    await connection.execute(text(statement))
        async with engine.connect() as connection:
            actors = set((await connection.execute(text("SELECT actor FROM audit_log"))).scalars())
    finally:
        await engine.dispose()
    assert "someone else" not in actors
    assert REGISTRAR.address in actors


async def test_a_filter_holding_a_nul_is_refused_naming_it(foundation: Foundation) -> None:
    """PostgreSQL takes no NUL in a text parameter: a 422 naming the filter, not a failed query."""
    for path in ("/v1/admin/audit", "/v1/admin/audit/export"):
        for name in ("action", "actor", "subject_id"):
            reply = await foundation.client.get(path, params={name: "member\0"}, headers=foundation.council)
            assert reply.status_code == 422, (path, name, reply.text)
            assert reply.headers["content-type"].startswith("application/problem+json")
            assert [error["loc"] for error in reply.json()["errors"]] == [["query", name]]


async def test_an_admin_action_with_the_longest_request_id_is_recorded(foundation: Foundation) -> None:
    request_id = "r" * 128  # the longest X-Request-ID the service takes
    newcomer = Account.create().address
    reply = await foundation.client.post(
        "/v1/admin/roles",
        json={"address": newcomer, "role": "assessor"},
        headers={**foundation.council, "X-Request-ID": request_id},
    )
    assert reply.status_code == 201, reply.text
    assert reply.headers["X-Request-ID"] == request_id
    audit = (
        await foundation.client.get(
            "/v1/admin/audit", params={"actor": COUNCIL.address}, headers=foundation.council
        )
    ).json()
    latest = audit["items"][0]
    assert (latest["action"], latest["subject_id"]) == ("role.grant", f"assessor:{newcomer}")
    assert latest["request_id"] == request_id


async def test_filters_find_an_address_or_a_patent_however_it_is_spelt(foundation: Foundation) -> None:
    newcomer = Account.create().address
    granted = await foundation.client.post(
        "/v1/admin/roles", json={"address": newcomer, "role": "assessor"}, headers=foundation.council
    )
    assert granted.status_code == 201, granted.text
    await register(foundation, "EP3400002B1")

    async def found(**params: str) -> list[tuple[str, str]]:
        for path in ("/v1/admin/audit", "/v1/admin/audit/export"):
            reply = await foundation.client.get(
                path, params={**params, "format": "jsonl"}, headers=foundation.council
            )
            assert reply.status_code == 200, (path, reply.text)
        records = [json.loads(line) for line in reply.text.splitlines()]
        page = await foundation.client.get("/v1/admin/audit", params=params, headers=foundation.council)
        assert [entry["id"] for entry in page.json()["items"]] == [
            record["id"] for record in reversed(records)
        ]
        return [(record["action"], record["subject_id"]) for record in records]

    as_logged = await found(actor=COUNCIL.address)
    assert ("role.grant", f"assessor:{newcomer}") in as_logged
    assert await found(actor=COUNCIL.address.lower()) == as_logged
    assert await found(actor="0x" + COUNCIL.address[2:].upper()) == as_logged
    assert await found(subject_id=f"assessor:{newcomer.lower()}") == [("role.grant", f"assessor:{newcomer}")]
    assert await found(subject_id="ep 3400002 b1") == [("patent.register", "EP3400002B1")]
    assert await found(actor="cli:nobody") == []  # anything else as it is
    for path in ("/v1/admin/audit", "/v1/admin/audit/export"):
        typo = await foundation.client.get(
            path, params={"actor": mistyped(COUNCIL.address)}, headers=foundation.council
        )
        assert typo.status_code == 422, typo.text
        assert "EIP-55 checksum" in typo.json()["detail"]


async def test_a_reason_a_spreadsheet_would_run_is_exported_as_text(foundation: Foundation) -> None:
    member = Account.create()
    await admit(foundation, member)
    reason = '=HYPERLINK("http://example.invalid","click")'
    suspended = await foundation.client.post(
        f"/v1/admin/members/{member.address}/suspend", json={"reason": reason}, headers=foundation.registrar
    )
    assert suspended.status_code == 200, suspended.text
    exported = await foundation.client.get(
        "/v1/admin/audit/export", params={"action": "member.suspend"}, headers=foundation.council
    )
    (row,) = list(csv.DictReader(io.StringIO(exported.text)))
    assert row["reason"] == "'" + reason
    page = await foundation.client.get(
        "/v1/admin/audit", params={"action": "member.suspend"}, headers=foundation.council
    )
    assert page.json()["items"][0]["reason"] == reason  # the log itself keeps what was written
