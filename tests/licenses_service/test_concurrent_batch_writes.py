"""Device uploads and withdrawals that write at the same moment, and what an upload, a withdrawal
or a pending upload's transactions do when the indexer's credited block goes back while they read
the chain.

The concurrent cases are PostgreSQL's: there two transactions of the service write at once, each
statement seeing what others committed before it; SQLite's write lock, held from each
transaction's start, runs them one after the other. A hook on the service's engine holds one
request at a chosen statement, on the event loop, while the other runs until it waits for a lock
(or finishes); nothing of the service is replaced.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.util import await_only
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.db.session import app_engine
from exchange.licenses import batches
from exchange.licenses.indexer import DeviceIndexer
from exchange.licenses.models import IndexerCursor
from exchange.main import build_app
from exchange.settings import Settings
from exchange.trading.settlement_models import ChainCursor
from tests.conftest import run_in_thread
from tests.licenses_service.conftest import Service, account, licensed_member
from tests.licenses_service.test_chain_reads_outside_transactions import (
    credit_with_an_indexer_of_its_own,
    pending_upload_past_the_credited_block,
    registered_and_credited_meanwhile,
    stale_upload,
)
from tests.licenses_service.test_device_batches import BPC_PER_DEVICE, batch_state, devices, upload
from tests.licenses_service.test_indexer_reorg import signed_api_transactions
from tests.support.chain import rpc

ON_POSTGRESQL = pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
LOCK_WAIT_S = 30.0

Action = Callable[[], Awaitable[None] | None]
T = TypeVar("T")


@contextmanager
def at_statement(
    service: Service, matches: Callable[[str], bool], action: Action, *, after: bool
) -> Iterator[None]:
    """Run `action` once, before (or `after`) the first statement of the service's engine that
    `matches`, inside that statement's transaction; an awaitable action is awaited on the event
    loop, which runs other requests meanwhile."""
    engine = app_engine(service.app).sync_engine
    fired = False

    def hook(*args: Any) -> None:
        nonlocal fired
        statement: str = args[2]
        if fired or not matches(statement):
            return
        fired = True
        result = action()
        if inspect.isawaitable(result):
            await_only(result)

    name = "after_cursor_execute" if after else "before_cursor_execute"
    event.listen(engine, name, hook)
    try:
        yield
    finally:
        event.remove(engine, name, hook)


async def _waiting_for_a_lock(dsn: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        return count > 0
    finally:
        await connection.close()


async def run_until_it_waits(database_url: str, request: Awaitable[T]) -> asyncio.Future[T]:
    """Start `request` and return once it waits for a lock another transaction holds, or is answered."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    task = asyncio.ensure_future(request)
    async with asyncio.timeout(LOCK_WAIT_S):  # polled: PostgreSQL tells no one when a lock wait starts
        while True:
            if task.done() or await _waiting_for_a_lock(dsn):
                return task
            await asyncio.sleep(0.02)


def upload_request(service: Service, headers: dict[str, str], ids: list[str]) -> Awaitable[httpx.Response]:
    return service.client.post(
        "/v1/devices/batches",
        json={"bpc_per_device_wei": str(BPC_PER_DEVICE), "devices": ids},
        headers=headers,
    )


# --- two writers at once (PostgreSQL) ------------------------------------------------------------


def locks_or_deletes_a_batch(statement: str) -> bool:
    return "licence_device" in statement and ("FOR UPDATE" in statement or statement.startswith("DELETE"))


@ON_POSTGRESQL
async def test_a_stale_upload_confirmed_inside_the_releasing_uploads_transaction_keeps_its_ids(
    licensing: Service, database_url: str
) -> None:
    """The indexer confirms the stale upload after the upload's write transaction read it as
    pending and before that transaction releases it: the confirmed batch keeps its ids (409
    naming them), where deleting it would delete a registered batch and its devices."""
    owner, other = account(5), account(6)
    licensed_member(licensing.pool, other)
    _, mine, upload_id = await stale_upload(licensing, owner, "IN")
    owner_headers, other_headers = await licensing.sign_in(owner), await licensing.sign_in(other)

    confirm = registered_and_credited_meanwhile(licensing, owner, mine, database_url)
    with at_statement(licensing, locks_or_deletes_a_batch, confirm, after=False):
        refused = await upload_request(licensing, other_headers, devices(3, prefix="IN"))

    assert refused.status_code == 409, refused.text
    assert refused.json()["taken_count"] == 3
    assert await batch_state(licensing, owner_headers, upload_id) == ("confirmed", 1)


@ON_POSTGRESQL
async def test_an_owner_withdrawing_the_stale_upload_another_upload_releases_gets_an_answer(
    licensing: Service, database_url: str
) -> None:
    """The upload has begun releasing the owner's stale upload (deleted its devices) when the
    owner's withdrawal of it writes: the withdrawal waits for the upload and finds it gone (404),
    where the two took the batch row's and the devices' locks in opposite orders and PostgreSQL
    ended one of them in a deadlock (500)."""
    owner, other = account(5), account(6)
    licensed_member(licensing.pool, other)
    owner_headers, _, upload_id = await stale_upload(licensing, owner, "WD")
    other_headers = await licensing.sign_in(other)
    withdrawal: list[asyncio.Task[httpx.Response]] = []

    async def withdraw_meanwhile() -> None:
        request = licensing.client.delete(f"/v1/devices/batches/{upload_id}", headers=owner_headers)
        withdrawal.append(await run_until_it_waits(database_url, request))

    def deletes_devices(statement: str) -> bool:
        return statement.startswith("DELETE FROM licence_devices ")

    with at_statement(licensing, deletes_devices, withdraw_meanwhile, after=True):
        uploaded = await upload_request(licensing, other_headers, devices(3, prefix="WD"))
        withdrawn = await withdrawal[0]

    assert uploaded.status_code == 201, uploaded.text
    assert withdrawn.status_code == 404, withdrawn.text


@ON_POSTGRESQL
async def test_two_uploads_of_one_manufacturer_at_once_do_not_both_pass_the_pending_cap(
    licensing: Service, database_url: str
) -> None:
    """Each fits under the cap alone, not both: the second waits for the first's transaction
    and counts its devices (409), where both read the pending devices before either wrote."""
    member = account(7)
    licensed_member(licensing.pool, member)
    headers = await licensing.sign_in(member)
    settings = licensing.app.state.settings
    licensing.app.state.settings = settings.model_copy(update={"licence_pending_devices_max": 4})
    second: list[asyncio.Task[httpx.Response]] = []

    async def upload_meanwhile() -> None:
        second.append(
            await run_until_it_waits(database_url, upload_request(licensing, headers, devices(3, "CB")))
        )

    def inserts_a_batch(statement: str) -> bool:
        return statement.startswith("INSERT INTO licence_device_batches ")

    try:
        with at_statement(licensing, inserts_a_batch, upload_meanwhile, after=False):
            first = await upload_request(licensing, headers, devices(3, prefix="CA"))
            then = await second[0]
    finally:
        licensing.app.state.settings = settings

    assert first.status_code == 201, first.text
    assert then.status_code == 409, then.text
    assert (then.json()["pending_devices"], then.json()["limit"]) == (3, 4)


@ON_POSTGRESQL
async def test_two_uploads_sharing_ids_in_opposite_orders_answer_201_and_409(
    licensing: Service, database_url: str
) -> None:
    """Two manufacturers upload two shared ids, one listing them first and last, the other last
    and first, with more than one insert statement of devices each: the second waits on the
    first shared id and is refused on it (409 naming both), where inserting in each upload's
    own order left each waiting for an id the other held (a deadlock, 500)."""
    first_member, second_member = account(5), account(6)
    for member in (first_member, second_member):
        licensed_member(licensing.pool, member)
    shared = ["serial:acme:AA-SHARED-1", "serial:acme:AA-SHARED-2"]
    many = 5_000  # one insert statement's worth (the repository's chunk)
    first_ids = [shared[0], *devices(many, prefix="ZA"), shared[1]]
    second_ids = [shared[1], *devices(many, prefix="ZB"), shared[0]]
    first_headers, second_headers = (
        await licensing.sign_in(first_member),
        await licensing.sign_in(second_member),
    )
    second: list[asyncio.Task[httpx.Response]] = []

    async def upload_meanwhile() -> None:
        second.append(
            await run_until_it_waits(database_url, upload_request(licensing, second_headers, second_ids))
        )

    def inserts_devices(statement: str) -> bool:
        return statement.startswith("INSERT INTO licence_devices ")

    with at_statement(licensing, inserts_devices, upload_meanwhile, after=True):
        first = await upload_request(licensing, first_headers, first_ids)
        then = await second[0]

    assert first.status_code == 201, first.text
    assert then.status_code == 409, then.text
    assert then.json()["taken"] == [
        {"item": 0, "device_id": shared[1]},
        {"item": many + 1, "device_id": shared[0]},
    ]


@ON_POSTGRESQL
@pytest.mark.parametrize("same_manufacturer", [False, True], ids=["another-uploads", "owner-uploads-again"])
async def test_the_indexer_crediting_the_registration_of_a_stale_upload_being_deleted_goes_on(
    licensing: Service, database_url: str, same_manufacturer: bool
) -> None:
    """The stale upload's registration is mined after the releasing upload read the chain, and
    the indexer credits it while the upload's transaction has deleted that pending upload: the
    indexer waits for the upload, and its pass completes. It read the upload as pending, then
    updated a row that was gone, which failed its pass (``StaleDataError``).

    Uploaded again by its manufacturer (the same devices), the new upload is the registration's
    match, stored by the transaction the indexer waited for: it is confirmed (the indexer's
    locking read could not see it, and left the registration unmatched while the new upload
    asked for a second one). Uploaded by another manufacturer, nothing matches: the new upload
    stays pending and the registration unmatched."""
    owner, other = account(5), account(6)
    licensed_member(licensing.pool, other)
    owner_headers, mine, upload_id = await stale_upload(licensing, owner, "IX")
    uploader_headers = owner_headers if same_manufacturer else await licensing.sign_in(other)
    credited: list[asyncio.Future[None]] = []

    async def register_and_credit_meanwhile() -> None:
        licensing.send(owner, mine["transactions"])
        credit = credit_with_an_indexer_of_its_own(licensing, database_url)
        credited.append(await run_until_it_waits(database_url, asyncio.to_thread(asyncio.run, credit)))

    def deletes_the_batch(statement: str) -> bool:
        return statement.startswith("DELETE FROM licence_device_batches ")

    with at_statement(licensing, deletes_the_batch, register_and_credit_meanwhile, after=True):
        uploaded = await upload_request(licensing, uploader_headers, devices(3, prefix="IX"))
    await credited[0]  # raised StaleDataError

    assert uploaded.status_code == 201, uploaded.text
    gone = await licensing.client.get(f"/v1/devices/batches/{upload_id}", headers=owner_headers)
    assert gone.status_code == 404, gone.text
    status, batch_id = await batch_state(licensing, uploader_headers, uploaded.json()["batch"]["upload_id"])
    assert (status, batch_id is not None) == (
        ("confirmed", True) if same_manufacturer else ("pending", False)
    )


# --- the credited block going back -------------------------------------------------------------


def credited_block_back_by_one(database_url: str) -> None:
    """Move the registry's credited block one back, as the indexer does when a reorganisation
    takes its last credited block away (its own connections and event loop)."""

    async def back() -> None:
        engine = create_engine_for_url(database_url)
        try:
            async with create_sessionmaker(engine)() as session, session.begin():
                cursor_id = select(IndexerCursor.cursor_id).scalar_subquery()
                await session.execute(
                    update(ChainCursor)
                    .where(ChainCursor.id == cursor_id)
                    .values(credited_block=ChainCursor.credited_block - 1)
                )
        finally:
            await engine.dispose()

    run_in_thread(back())


@contextmanager
def after_each_log_search(service: Service, action: Callable[[], None]) -> Iterator[list[int]]:
    """Run `action` after the response of every ``eth_getLogs`` the service makes; yields the
    list of the blocks those searches started from."""
    searched: list[int] = []

    class Meanwhile(Web3Middleware):
        def request_processor(self, method: RPCEndpoint, params: Any) -> Any:
            if method == "eth_getLogs":
                searched.append(int(str(params[0]["fromBlock"]), 0))
            return method, params

        def response_processor(self, method: RPCEndpoint, response: RPCResponse) -> Any:
            if method == "eth_getLogs":
                action()
            return response

    service.w3.middleware_onion.add(Meanwhile, name="after-each-log-search")
    try:
        yield searched
    finally:
        service.w3.middleware_onion.remove("after-each-log-search")


@pytest.mark.parametrize("route", ["upload", "withdrawal", "transactions"])
async def test_a_credited_block_going_back_at_every_read_answers_batch_changed_meanwhile(
    licensing: Service, database_url: str, route: str
) -> None:
    """Each time the route reads the chain, the credited block goes back: it reads again from the
    earlier block, ``READ_ATTEMPTS`` times in all, then answers the transient 409 (send again
    after ``Retry-After``), having written nothing."""
    member = account(2)
    headers, body = await pending_upload_past_the_credited_block(licensing, member, "BK")
    upload_id = body["batch"]["upload_id"]
    before = await licensing.client.get("/v1/devices/batches", headers=headers)

    with after_each_log_search(licensing, lambda: credited_block_back_by_one(database_url)) as searched:
        if route == "upload":
            reply = await upload_request(licensing, headers, devices(2, prefix="BK-NEW"))
        elif route == "withdrawal":
            reply = await licensing.client.delete(f"/v1/devices/batches/{upload_id}", headers=headers)
        else:
            reply = await licensing.client.post(
                f"/v1/devices/batches/{upload_id}/transactions", headers=headers
            )

    assert reply.status_code == 409, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.headers["retry-after"] == "1"
    problem = reply.json()
    assert problem["type"].endswith("/batch-changed-meanwhile")
    assert problem["title"] == batches.BatchChangedMeanwhile.title
    assert problem["detail"].endswith("changed each time the chain was read for it: send the request again")
    assert len(searched) == batches.READ_ATTEMPTS
    assert searched == sorted(set(searched), reverse=True)  # each from an earlier block
    after = await licensing.client.get("/v1/devices/batches", headers=headers)
    assert after.json() == before.json()


async def test_a_withdrawal_reads_the_chain_again_when_a_reorganisation_takes_the_credited_block_back(
    licensing: Service, database_url: str
) -> None:
    """The withdrawal searched the chain for the upload's registration past the credited block
    and found none; meanwhile a reorganisation took those blocks away, and the new branch holds
    the registration, not yet deep enough to be credited. The withdrawal reads the chain again
    from the earlier block, finds it, and keeps the upload (409), where it would have deleted an
    upload whose registration the indexer then finds with no devices to confirm."""
    member = account(2)
    licensed_member(licensing.pool, member)
    headers = await licensing.sign_in(member)
    body = await upload(licensing, headers, devices(3, prefix="RO"))
    upload_id = body["batch"]["upload_id"]
    await licensing.catch_up()
    fork = rpc(licensing.w3, "evm_snapshot")
    for _ in range(3):
        licensing.pool.mint_bpc(member.address, 1)
    await licensing.catch_up()
    licensing.pool.mint_bpc(member.address, 1)  # a block past the credited one, for the withdrawal to search
    registered: list[int] = []

    async def reorganised_and_indexed() -> None:
        engine = create_engine_for_url(database_url)
        try:
            indexer = DeviceIndexer(licensing.runtime, create_sessionmaker(engine), confirmations=2)
            assert (await indexer.position()).rolled_back_to is not None
        finally:
            await engine.dispose()

    def meanwhile() -> None:
        if registered:
            return
        rpc(licensing.w3, "evm_revert", fork)
        signed_api_transactions(licensing, member, body["transactions"])
        registered.append(licensing.w3.eth.block_number)
        run_in_thread(reorganised_and_indexed())

    with after_each_log_search(licensing, meanwhile):
        kept = await licensing.client.delete(f"/v1/devices/batches/{upload_id}", headers=headers)

    assert kept.status_code == 409, kept.text
    assert kept.json()["block"] == registered[0]
    assert await batch_state(licensing, headers, upload_id) == ("pending", None)
    await licensing.catch_up()
    assert (await batch_state(licensing, headers, upload_id))[0] == "confirmed"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/devices/batches"),
        ("delete", "/v1/devices/batches/{upload_id}"),
        ("post", "/v1/devices/batches/{upload_id}/transactions"),
    ],
)
def test_the_routes_document_the_transient_409(method: str, path: str) -> None:
    conflict = build_app(Settings()).openapi()["paths"][path][method]["responses"]["409"]
    assert batches.BatchChangedMeanwhile.type_uri() in conflict["description"]
    assert "Retry-After" in conflict["headers"]
