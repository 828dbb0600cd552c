"""The resolver: bulk answers equal single ones, Digital Link paths, JSON for clients, HTML for browsers."""

from __future__ import annotations

import asyncio
import html
import json
import random
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import pytest

from exchange.licenses.device_ids import (
    Gs1DeviceId,
    ImeiDeviceId,
    SerialDeviceId,
    digital_link,
    gs1_check_digit,
    imei_check_digit,
    parse_canonical,
)
from exchange.licenses.repository import DeviceReads, DeviceRow, Registry
from exchange.licenses.resolver import MAX_BULK_DEVICES, YIELD_EVERY, Resolver, per_device_answers
from exchange.licenses.schemas import DeviceQueryBatchedOut
from exchange.licenses.uploads import MAX_REPORTED_ERRORS, InvalidDeviceList, parse_references
from tests.licenses_service.conftest import Service, account
from tests.licenses_service.test_device_batches import on_chain_status, registered_batch, upload

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


def mixed_devices(rng: random.Random, count: int) -> list[str]:
    ids = []
    for n in range(count):
        kind = n % 3
        if kind == 0:
            body = f"{rng.randrange(1, 10**13):013d}"
            serial = "".join(rng.choices("ABCXYZ0123456789-/.%", k=rng.randint(1, 12)))
            if serial in (".", ".."):  # dot segments, which no link can carry: refused
                serial += "A"
            ids.append(Gs1DeviceId(body + gs1_check_digit(body), serial).canonical)
        elif kind == 1:
            body = f"35{rng.randrange(10**12):012d}"
            ids.append(ImeiDeviceId(body + imei_check_digit(body)).canonical)
        else:
            ids.append(SerialDeviceId("com.example", f"SN-{n}").canonical)
    return list(dict.fromkeys(ids))


async def single(service: Service, device_id: str) -> dict[str, Any]:
    scheme, _, _ = device_id.partition(":")
    reply = await service.client.get(f"/v1/devices/{scheme}/{quote(device_id, safe='')}")
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def test_bulk_answers_equal_single_answers(licensing: Service) -> None:
    rng = random.Random(7)
    registered = mixed_devices(rng, 40)
    batch, _ = await registered_batch(licensing, registered)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [1, 7])
    await licensing.catch_up()
    unknown = ["serial:com.example:never-made", "imei:490154203237518"]
    asked = [*registered, *unknown, registered[0]]  # repeats are answered again
    rng.shuffle(asked)
    reply = await licensing.client.post("/v1/devices/query", json={"devices": asked})
    assert reply.status_code == 200, reply.text
    bulk = reply.json()
    assert bulk["registry"] == licensing.pool.devices.address
    assert [answer["device_id"] for answer in bulk["devices"]] == asked
    for answer in bulk["devices"]:
        assert answer == await single(licensing, answer["device_id"])
    statuses = {answer["device_id"]: answer["status"] for answer in bulk["devices"]}
    assert statuses[registered[1]] == statuses[registered[7]] == "revoked"
    assert statuses[unknown[0]] == statuses[unknown[1]] == "unknown"
    assert sum(status == "licensed" for status in statuses.values()) == len(registered) - 2
    for answer in bulk["devices"]:
        expected = {"licensed": 0, "revoked": 5}.get(answer["status"])
        if expected is not None:
            assert on_chain_status(licensing, answer) == expected


async def test_batched_answers_are_the_per_device_answers(licensing: Service) -> None:
    rng = random.Random(11)
    first = mixed_devices(rng, 30)
    second = [SerialDeviceId("com.example", f"B2-{n}").canonical for n in range(9)]
    batch, _ = await registered_batch(licensing, first)
    other, _ = await registered_batch(licensing, second, member_index=2)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [0, 13])
    licensing.pool.devices.transact("suspendBatch", other["batch_id"])
    # Uploaded, never registered: found in the database, unknown to the chain.
    pending = [SerialDeviceId("com.example", f"P3-{n}").canonical for n in range(3)]
    await upload(licensing, await licensing.sign_in(account(1)), pending)
    await licensing.catch_up()
    unknown = ["serial:com.example:never-made", "imei:490154203237518", *pending]
    # A registered device named by its Digital Link is answered under its canonical id.
    link = digital_link(parse_canonical(second[3]), "http://id.example.org")
    asked = [*first, *second, *unknown, first[4], second[8], link]
    rng.shuffle(asked)
    for proofs in (True, False):
        body = {"devices": asked, "proofs": proofs}
        per_device = (await licensing.client.post("/v1/devices/query", json=body)).json()
        reply = await licensing.client.post("/v1/devices/query", json={**body, "layout": "batches"})
        assert reply.status_code == 200, reply.text
        DeviceQueryBatchedOut.model_validate_json(reply.content)  # what the schema documents
        batched = reply.json()
        assert batched["proofs"] is proofs
        assert per_device_answers(batched) == per_device["devices"]
        assert batched["devices"][asked.index(link)]["device_id"] == second[3]
        # Each batch once, in order of first mention, with every node its devices need.
        assert [entry["batch_id"] for entry in batched["batches"]] == list(
            dict.fromkeys(answer["batch_id"] for answer in per_device["devices"] if answer["batch_id"])
        )
        for entry in batched["batches"]:
            if not proofs:
                assert entry["levels"] is None
                continue
            nodes = set()
            for level in entry["levels"]:
                assert level["indices"] == sorted(set(level["indices"]))  # each node of a level once
                assert len(level["nodes"]) == 2 + 64 * len(level["indices"])
                nodes |= {
                    "0x" + level["nodes"][start : start + 64] for start in range(2, len(level["nodes"]), 64)
                }
            taken = {
                node
                for answer in per_device["devices"]
                if answer["batch_id"] == entry["batch_id"]
                for node in answer["proof"]
            }
            assert taken <= nodes
    statuses = {answer["device_id"]: answer["status"] for answer in per_device_answers(batched)}
    assert set(statuses.values()) == {"licensed", "revoked", "suspended", "unknown"}
    assert all(statuses[device_id] == "unknown" for device_id in pending)
    # The chain agrees with the proofs rebuilt from the batched answer.
    expanded = per_device_answers(
        (
            await licensing.client.post("/v1/devices/query", json={"devices": asked, "layout": "batches"})
        ).json()
    )
    for answer in expanded:
        expected = {"licensed": 0, "revoked": 5, "suspended": 4}.get(answer["status"])
        if expected is not None:
            assert on_chain_status(licensing, answer) == expected, answer


async def test_digital_links_resolve_to_the_same_answer(licensing: Service) -> None:
    devices = [
        Gs1DeviceId("09506000134352", "A/1%x"),
        ImeiDeviceId("352099001761481"),
        SerialDeviceId("acme", "SN-1"),
    ]
    await registered_batch(licensing, [device.canonical for device in devices])
    for device in devices:
        link = digital_link(device, "http://testserver")
        reply = await licensing.client.get(link, headers={"Accept": "application/json"})
        assert reply.status_code == 200, (link, reply.text)
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["vary"] == "Accept"
        assert reply.json() == await single(licensing, device.canonical)
        assert reply.json()["status"] == "licensed"
    # GS1 qualifiers (/22/ and /10/) and a short GTIN name the same item.
    qualified = await licensing.client.get("/01/9506000134352/10/LOT7/21/A%2F1%25x")
    assert qualified.json()["device_id"] == devices[0].canonical


async def test_browsers_get_a_page_and_clients_get_json(licensing: Service) -> None:
    await registered_batch(licensing, ["serial:acme:SN-9"])
    page = await licensing.client.get("/serial/acme/SN-9", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>Licensed</h1>" in page.text
    assert "serial:acme:SN-9" in page.text
    assert licensing.pool.devices.address in page.text
    for accept in ("application/json", "*/*", "application/json, text/html;q=0.5"):
        reply = await licensing.client.get("/serial/acme/SN-9", headers={"Accept": accept})
        assert reply.headers["content-type"] == "application/json", accept
        assert reply.json()["status"] == "licensed"
    unknown = await licensing.client.get("/imei/490154203237518", headers={"Accept": BROWSER_ACCEPT})
    assert "<h1>Unknown</h1>" in unknown.text


async def test_page_escapes_what_it_shows(licensing: Service) -> None:
    # The GS1 character set allows <, > and & in serials: the page must show them as text.
    reply = await licensing.client.get("/01/09506000134352/21/%3Cscript%3E&", headers={"Accept": "text/html"})
    assert reply.status_code == 200, reply.text
    assert "<script>" not in reply.text
    assert "&lt;script&gt;&amp;" in reply.text


async def test_refusals_are_problems(licensing: Service) -> None:
    bad = await licensing.client.get("/v1/devices/imei/352099001761482")
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "check digit" in bad.json()["detail"]
    link = await licensing.client.get("/imei/12")
    assert link.status_code == 422
    too_many = await licensing.client.post(
        "/v1/devices/query", json={"devices": ["imei:352099001761481"] * 10_001}
    )
    assert too_many.status_code == 413
    assert too_many.json()["limit"] == 10_000
    invalid = await licensing.client.post(
        "/v1/devices/query",
        json={
            "devices": ["imei:352099001761481", "gs1:nonsense", "imei:1", "http://[x/imei/352099001761481"]
        },
    )
    assert invalid.status_code == 422
    assert [error["item"] for error in invalid.json()["errors"]] == [1, 2, 3]
    assert invalid.json()["error_count"] == 3
    exactly = await licensing.client.post(
        "/v1/devices/query", json={"devices": ["imei:352099001761481"] * 10_000}
    )
    assert exactly.status_code == 200
    assert len(exactly.json()["devices"]) == 10_000


async def test_browsers_get_a_page_for_a_refused_id(licensing: Service) -> None:
    """A scanned code that names no valid device: people see the reason on a page, with the
    problem's status; programs still get the problem document."""
    for path, reason in (
        ("/imei/12", "15 digits"),
        ("/v1/devices/imei/352099001761482", "check digit"),
        ("/01/0950600013435%3Cb%3E/21/x", "GTIN"),
    ):
        page = await licensing.client.get(path, headers={"Accept": BROWSER_ACCEPT})
        problem = await licensing.client.get(path, headers={"Accept": "application/json"})
        assert page.status_code == problem.status_code == 422, (path, page.text)
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert problem.headers["content-type"].startswith("application/problem+json")
        assert reason in problem.json()["detail"], problem.json()
        assert f"<h1>{problem.json()['title']}</h1>" in page.text
        assert html.escape(problem.json()["detail"]) in page.text
        assert "<b>" not in page.text


class LookupsSeen:
    """The resolver's reads, noting in `events` when a lookup is asked for and when it has read
    its rows. The second lookup of many devices returns only once a lookup of one device has read
    its row (``single_read``); after the `n`-th lookup of many has read (``bulk read n``) and
    before it returns, ``after_bulk[n - 1]`` is called."""

    def __init__(self, reads: DeviceReads, events: list[str], after_bulk: list[Callable[[], None]]) -> None:
        self.reads = reads
        self.events = events
        self.after_bulk = after_bulk
        self.bulk_reads = 0
        self.singles = 0
        self.single_read = asyncio.Event()

    async def lookup(
        self, registry: Registry, device_ids: Sequence[str]
    ) -> tuple[int | None, dict[str, DeviceRow]]:
        if len(device_ids) == 1:
            self.singles += 1
            number = self.singles
            self.events.append(f"single {number} asked")
            found = await self.reads.lookup(registry, device_ids)
            self.events.append(f"single {number} read")
            self.single_read.set()
            return found
        self.events.append(f"bulk asked {self.bulk_reads + 1}")
        found = await self.reads.lookup(registry, device_ids)
        self.bulk_reads += 1
        self.events.append(f"bulk read {self.bulk_reads}")
        if self.bulk_reads == 2:
            await self.single_read.wait()
        self.after_bulk[self.bulk_reads - 1]()
        return found

    async def tree(self, batch_pk: int) -> bytes | None:
        return await self.reads.tree(batch_pk)


async def test_single_queries_are_served_while_a_bulk_query_is_worked_on(licensing: Service) -> None:
    """Single queries arriving while a bulk query of 10,000 devices is worked on get their turn
    between its chunks of CPU work, and are answered before the bulk answer is done.

    One of the bulk query's strings is a Digital Link, so the bulk query reads its rows, parses
    every string (in chunks), reads again by canonical id, then renders proofs, answers and JSON
    (in chunks). A first single query starts when the first read returns: it reaches its lookup
    while the ids are parsed, before the second read is asked for. The second read returns once that query
    has read its row, so that it is answered while the bulk answer is still to be built, whatever
    the database's latency; a second single query starts then, and reaches its lookup while the
    proofs, answers and JSON are built. Every ordering asserted is one of steps both sides take
    on the event loop's thread; were the bulk work done in one go, each single query would reach
    its lookup only after that work."""
    ids = [SerialDeviceId("com.example", f"SN-{n}").canonical for n in range(MAX_BULK_DEVICES)]
    await registered_batch(licensing, ids)
    lone = ids[4_321]
    expected = await single(licensing, lone)  # also loads the batch's tree: no reads left but lookups
    asked = [digital_link(SerialDeviceId("com.example", "SN-0"), "http://testserver"), *ids[1:]]
    events: list[str] = []
    arrivals: list[asyncio.Task[dict[str, Any]]] = []

    def single_query() -> None:
        async def query(number: int) -> dict[str, Any]:
            answer = await single(licensing, lone)
            events.append(f"single {number} answered")
            return answer

        arrivals.append(asyncio.create_task(query(len(arrivals) + 1)))

    resolver: Resolver = licensing.app.state.resolver
    reads = resolver.reads
    resolver.reads = LookupsSeen(reads, events, [single_query, single_query])
    try:
        reply = await licensing.client.post("/v1/devices/query", json={"devices": asked})
        events.append("bulk answered")
        answers = [await arrival for arrival in arrivals]
    finally:
        resolver.reads = reads
    assert reply.status_code == 200, reply.text
    order = events.index
    assert order("bulk read 1") < order("single 1 asked") < order("bulk asked 2"), events
    assert order("single 1 read") < order("single 1 answered") < order("bulk answered"), events
    assert order("bulk read 2") < order("single 2 asked") < order("bulk answered"), events
    assert answers == [expected, expected]
    bulk = reply.json()
    assert bulk["devices"][4_321] == expected
    assert [device["device_id"] for device in bulk["devices"]] == ids


async def test_a_bulk_refusal_is_the_same_over_many_chunks(licensing: Service) -> None:
    """Ids are parsed a chunk at a time; the refusal still names the first errors of the whole
    list, in order, with the total."""
    asked = [f"serial:acme:SN-{n}" if n % 7 else f"acme-{n}" for n in range(3 * YIELD_EVERY + 11)]
    reply = await licensing.client.post("/v1/devices/query", json={"devices": asked})
    assert reply.status_code == 422, reply.text
    problem = reply.json()
    with pytest.raises(InvalidDeviceList) as whole:
        parse_references(asked)
    assert problem["error_count"] == whole.value.total == len(asked[::7])
    assert problem["errors"] == [error.as_json() for error in whole.value.errors]
    assert problem["errors"][-1]["item"] == 7 * (MAX_REPORTED_ERRORS - 1)
    assert problem["detail"] == whole.value.detail


async def test_strings_no_device_id_can_be_are_refused_without_failing_other_lookups(
    licensing: Service,
) -> None:
    """A lone surrogate (valid JSON, not encodable) or a string longer than any input is refused
    with a 422 problem; a single query looked up at the same moment is answered as usual."""
    ids = [SerialDeviceId("com.example", "SN-1").canonical]
    await registered_batch(licensing, ids)
    expected = await single(licensing, ids[0])
    for devices in (["\ud800"], [ids[0], "serial:com.example:\ud800"], ["serial:a:" + "x" * 300]):
        refused, answer = await asyncio.gather(
            licensing.client.post(
                "/v1/devices/query",
                content=json.dumps({"devices": devices}),  # escaped: JSON carries lone surrogates
                headers={"Content-Type": "application/json"},
            ),
            single(licensing, ids[0]),
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert answer == expected
