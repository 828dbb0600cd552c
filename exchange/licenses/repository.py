"""All SQL of per-device licensing. Functions take a session (or, for reads, a connection) and flush;
the caller's transaction boundary commits.

Lookups go through SQLAlchemy Core, not the ORM: the resolver answers thousands of queries a
second, and a Core row costs a fraction of an ORM object. On PostgreSQL the resolver goes further
down, to an asyncpg pool (``AsyncpgReads``).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple, Protocol

import asyncpg
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from exchange.db.base import utc_now
from exchange.licenses.models import (
    BATCH_CONFIRMED,
    BATCH_PENDING,
    BatchTree,
    Device,
    DeviceBatch,
    IndexerCursor,
)
from exchange.trading.settlement_models import ChainBlock, ChainCursor, ChainEvent, EventState

# Parameters per statement stay well below SQLite's and asyncpg's limits (32,766).
_CHUNK = 5_000
_ANALYZE_AFTER = 10_000


@dataclass(frozen=True, slots=True)
class Registry:
    """The DeviceLicenses contract that scopes every row."""

    chain_id: int
    address: str


class DeviceRow(Protocol):
    """A device joined with its batch, as the resolver reads it."""

    @property
    def device_id(self) -> str: ...
    @property
    def device_index(self) -> int: ...
    @property
    def revoked_block(self) -> int | None: ...
    @property
    def batch_pk(self) -> int: ...
    @property
    def batch_id(self) -> int | None: ...
    @property
    def status(self) -> str: ...
    @property
    def suspended(self) -> bool: ...
    @property
    def manufacturer(self) -> str: ...
    @property
    def root(self) -> str: ...
    @property
    def bpc_per_device_wei(self) -> int: ...
    @property
    def registered_block(self) -> int | None: ...


class DeviceTuple(NamedTuple):
    """A :class:`DeviceRow` as a tuple (SQLAlchemy's reads). Its fields, in order, are the columns
    the lookups read after the block (``_DEVICE_COLUMNS``), and :class:`DeviceRecord`'s attributes."""

    device_id: str
    device_index: int
    revoked_block: int | None
    batch_pk: int
    batch_id: int | None
    status: str
    suspended: bool
    manufacturer: str
    root: str
    bpc_per_device_wei: int
    registered_block: int | None


class DeviceRecord(asyncpg.Record):  # type: ignore[misc]  # asyncpg ships no types
    """A :class:`DeviceRow` as asyncpg's row of the lookup statement (the block first): built by
    asyncpg in C, read through attributes like the tuple, a bulk lookup makes 10,000 of them."""

    __slots__ = ()


for _place, _name in enumerate(DeviceTuple._fields, start=1):  # the fields after the block
    setattr(DeviceRecord, _name, property(itemgetter(_place)))
# Stored as a decimal string.
_BPC_PLACE = DeviceTuple._fields.index("bpc_per_device_wei") + 1
setattr(DeviceRecord, "bpc_per_device_wei", property(lambda record: int(record[_BPC_PLACE])))  # noqa: B010


# --- batches --------------------------------------------------------------------------------------


async def holders_of(session: AsyncSession, registry: Registry, device_ids: Sequence[str]) -> dict[str, int]:
    """Those of `device_ids` that a batch of `registry` holds, each with that batch's key."""
    holders: dict[str, int] = {}
    for start in range(0, len(device_ids), _CHUNK):
        rows = await session.execute(
            select(Device.device_id, Device.batch_pk).where(
                Device.chain_id == registry.chain_id,
                Device.registry_address == registry.address,
                Device.device_id.in_(device_ids[start : start + _CHUNK]),
            )
        )
        holders.update((device_id, batch_pk) for device_id, batch_pk in rows)
    return holders


def _stale_uploads(what: Any, batch_pks: Sequence[int], created_before: datetime) -> Select[Any]:
    return select(what).where(
        DeviceBatch.id.in_(batch_pks),
        DeviceBatch.status == BATCH_PENDING,
        DeviceBatch.created_at < created_before,
    )


async def stale_uploads_among(
    session: AsyncSession, batch_pks: Collection[int], created_before: datetime
) -> list[DeviceBatch]:
    """Those of the batches `batch_pks` that are pending uploads made before `created_before`,
    in key order."""
    ordered = sorted(batch_pks)
    stale: list[DeviceBatch] = []
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        stale += (await session.scalars(_stale_uploads(DeviceBatch, chunk, created_before))).all()
    return sorted(stale, key=lambda batch: batch.id)


async def lock_stale_uploads(
    session: AsyncSession, batch_pks: Collection[int], created_before: datetime
) -> list[int]:
    """Lock, in key order, those of the batches `batch_pks` that are still pending uploads made
    before `created_before`, and return them: until the transaction ends, the indexer can
    confirm none of them (on PostgreSQL, a row another transaction changed meanwhile is checked
    again once its lock is free; SQLite's transactions hold the write lock already)."""
    ordered = sorted(batch_pks)
    locked: list[int] = []
    for start in range(0, len(ordered), _CHUNK):
        statement = _stale_uploads(DeviceBatch.id, ordered[start : start + _CHUNK], created_before)
        locked += (await session.scalars(statement.order_by(DeviceBatch.id).with_for_update())).all()
    return locked


async def lock_pending_room(session: AsyncSession, registry: Registry, manufacturer: str) -> None:
    """Serialise the transactions that add to `manufacturer`'s pending uploads, until this one
    ends, so that each counts the others' devices: on PostgreSQL an advisory lock on the
    (registry, manufacturer) key; SQLite's transactions hold the write lock already."""
    if session.get_bind().dialect.name != "postgresql":
        return
    name = f"licence-pending-room:{registry.chain_id}:{registry.address.lower()}:{manufacturer.lower()}"
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    await session.execute(select(func.pg_advisory_xact_lock(key)))


async def pending_devices_of(
    session: AsyncSession, registry: Registry, manufacturer: str, *, excluding: Collection[int] = ()
) -> int:
    """How many devices `manufacturer`'s pending uploads to `registry` (other than the uploads
    `excluding` names) hold."""
    total = await session.scalar(
        select(func.coalesce(func.sum(DeviceBatch.device_count), 0)).where(
            DeviceBatch.chain_id == registry.chain_id,
            DeviceBatch.registry_address == registry.address,
            DeviceBatch.manufacturer == manufacturer,
            DeviceBatch.status == BATCH_PENDING,
            DeviceBatch.id.not_in(excluding) if excluding else true(),
        )
    )
    return int(total or 0)


async def add_batch(
    session: AsyncSession,
    registry: Registry,
    *,
    manufacturer: str,
    root: str,
    bpc_per_device_wei: int,
    device_ids: Sequence[str],
    tree: bytes,
) -> DeviceBatch:
    """Store a pending batch, its tree and one row per device (index = position in `device_ids`).

    The device rows are inserted in id order, not the upload's: two uploads sharing ids then
    meet on the first id they share, and the later one waits there and fails on the key once
    the other commits, where inserting in each one's own order could leave each waiting for an
    id the other holds (on PostgreSQL a deadlock, which ends one of them with no clear answer)."""
    batch = DeviceBatch(
        chain_id=registry.chain_id,
        registry_address=registry.address,
        manufacturer=manufacturer,
        root=root,
        device_count=len(device_ids),
        bpc_per_device_wei=str(bpc_per_device_wei),
        status=BATCH_PENDING,
    )
    session.add(batch)
    await session.flush()
    await session.execute(insert(BatchTree), [{"batch_pk": batch.id, "tree": tree}])
    in_id_order = sorted(range(len(device_ids)), key=device_ids.__getitem__)
    for start in range(0, len(in_id_order), _CHUNK):
        await session.execute(
            insert(Device),
            [
                {
                    "chain_id": registry.chain_id,
                    "registry_address": registry.address,
                    "device_id": device_ids[index],
                    "batch_pk": batch.id,
                    "device_index": index,
                }
                for index in in_id_order[start : start + _CHUNK]
            ],
        )
    if session.get_bind().dialect.name == "postgresql" and len(device_ids) >= _ANALYZE_AFTER:
        # Fresh statistics, so the planner looks devices up by key rather than scanning a registry's
        # rows: a large upload can change the table's size many times over before autovacuum runs.
        await session.execute(text("ANALYZE licence_devices"))
    return batch


async def batch_by_pk(
    session: AsyncSession, registry: Registry, batch_pk: int, *, for_update: bool = False
) -> DeviceBatch | None:
    """The upload `batch_pk` of `registry`; `for_update`: locked until the transaction ends
    (on PostgreSQL; SQLite's transactions hold the write lock already)."""
    statement = select(DeviceBatch).where(
        DeviceBatch.id == batch_pk,
        DeviceBatch.chain_id == registry.chain_id,
        DeviceBatch.registry_address == registry.address,
    )
    if for_update:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    batch: DeviceBatch | None = await session.scalar(statement)
    return batch


async def batches_of(session: AsyncSession, registry: Registry, manufacturer: str) -> Sequence[DeviceBatch]:
    rows = await session.scalars(
        select(DeviceBatch)
        .where(
            DeviceBatch.chain_id == registry.chain_id,
            DeviceBatch.registry_address == registry.address,
            DeviceBatch.manufacturer == manufacturer,
        )
        .order_by(DeviceBatch.id)
    )
    return rows.all()


async def delete_pending_batch(session: AsyncSession, batch_pk: int) -> bool:
    """Delete a pending batch with its tree and devices; False, deleting nothing, when it is not
    pending (confirmed meanwhile) or gone.

    The batch row goes first, so that every writer of a batch takes its row's lock before its
    devices' (a withdrawal and an upload releasing the same stale upload would otherwise each
    hold what the other waits for), and on PostgreSQL its status is checked again once that lock
    is free. Its devices and tree then go explicitly: SQLite cascades only with foreign keys on."""
    deleted = await session.scalar(
        delete(DeviceBatch)
        .where(DeviceBatch.id == batch_pk, DeviceBatch.status == BATCH_PENDING)
        .returning(DeviceBatch.id)
    )
    if deleted is None:
        return False
    await session.execute(delete(Device).where(Device.batch_pk == batch_pk))
    await session.execute(delete(BatchTree).where(BatchTree.batch_pk == batch_pk))
    return True


async def device_ids_of(session: AsyncSession, batch_pk: int, offset: int, limit: int) -> list[str]:
    rows = await session.execute(
        select(Device.device_id)
        .where(Device.batch_pk == batch_pk, Device.device_index >= offset)
        .order_by(Device.device_index)
        .limit(limit)
    )
    return list(rows.scalars())


async def tree_bytes(connection: AsyncConnection | AsyncSession, batch_pk: int) -> bytes | None:
    data: bytes | None = await connection.scalar(select(BatchTree.tree).where(BatchTree.batch_pk == batch_pk))
    return data


# --- resolver lookups -----------------------------------------------------------------------------

# DeviceTuple's fields: the device's own columns, and its batch's.
_DEVICE_COLUMNS = tuple(
    Device.__table__.c[name] if name in Device.__table__.c else DeviceBatch.__table__.c[name]
    for name in DeviceTuple._fields
)


# The block answers name: the linked cursor's credited block, or, until the first pass after the
# upgrade links one, the block the earlier indexer had applied.
_ANSWERED_BLOCK = func.coalesce(ChainCursor.credited_block, IndexerCursor.resume_block)


async def answered_block(session: AsyncSession, registry: Registry) -> int | None:
    """The block the registry's answers name (its cursor's credited block); None before any."""
    return await session.scalar(
        select(_ANSWERED_BLOCK)
        .select_from(IndexerCursor)
        .outerjoin(ChainCursor, ChainCursor.id == IndexerCursor.cursor_id)
        .where(
            IndexerCursor.chain_id == registry.chain_id,
            IndexerCursor.registry_address == registry.address,
        )
    )


def _lookup_statement(shape: str) -> Select[Any]:
    """Built once: the answered block left-joined with the named devices of the registry.

    Bound parameters only, so SQLAlchemy compiles it once and each query just binds values.
    One device is looked up by equality (the primary key, whatever the planner knows); many,
    on PostgreSQL, as one array (``= ANY(:device_ids)``), elsewhere as an expanding IN list.
    """
    names: ColumnElement[bool]
    if shape == "one":
        names = Device.device_id == bindparam("device_id")
    elif shape == "array":
        names = Device.device_id == any_(bindparam("device_ids", type_=ARRAY(String)))
    else:
        names = Device.device_id.in_(bindparam("device_ids", expanding=True))
    devices = (
        select(*_DEVICE_COLUMNS)
        .join(DeviceBatch, DeviceBatch.id == Device.batch_pk)
        .where(
            Device.chain_id == bindparam("chain_id"), Device.registry_address == bindparam("registry"), names
        )
        .subquery()
    )
    return (
        select(_ANSWERED_BLOCK.label("block"), devices)
        .select_from(IndexerCursor)
        .outerjoin(ChainCursor, ChainCursor.id == IndexerCursor.cursor_id)
        .outerjoin(devices, true())
        .where(
            IndexerCursor.chain_id == bindparam("chain_id"),
            IndexerCursor.registry_address == bindparam("registry"),
        )
    )


_LOOKUP = {shape: _lookup_statement(shape) for shape in ("one", "array", "list")}


# The statement of _lookup_statement("array"), for asyncpg: $1 chain id, $2 registry, $3 device ids.
_LOOKED_UP = ", ".join(
    f"{'d' if column.table is Device.__table__ else 'b'}.{column.name}" for column in _DEVICE_COLUMNS
)
# Identifiers of the tables' own columns only; every value is a parameter.
_ASYNCPG_LOOKUP = f"""
SELECT COALESCE(k.credited_block, c.resume_block), {_LOOKED_UP}
FROM licence_indexer_cursors AS c
LEFT JOIN chain_cursors AS k ON k.id = c.cursor_id
LEFT JOIN (licence_devices AS d JOIN licence_device_batches AS b ON b.id = d.batch_pk)
  ON d.chain_id = $1 AND d.registry_address = $2 AND d.device_id = ANY($3::varchar[])
WHERE c.chain_id = $1 AND c.registry_address = $2
"""  # noqa: S608
# Arrays of fewer ids are padded to this many by repeating the first (the index scan takes each key
# once, whatever the repeats). PostgreSQL plans a prepared statement's first executions for their
# values, then keeps its generic plan (primary key probes for the array, at any size) unless the
# value-specific plans were cheaper on average: the generic plan assumes ten elements, so without
# padding a lookup of one or a few ids was planned anew at every execution, most of the database's
# work for such a lookup. (For large arrays the generic plan is also the one that scales: a plan
# for the values may scan the registry's every device instead.)
_MIN_LOOKUP_ARRAY = 16
_ASYNCPG_TREE = "SELECT tree FROM licence_batch_trees WHERE batch_pk = $1"


async def lookup_devices(
    connection: AsyncConnection, registry: Registry, device_ids: Sequence[str]
) -> tuple[int | None, dict[str, DeviceRow]]:
    """The indexer's applied block, and the rows of those `device_ids` in some batch of `registry`.

    One round trip per chunk, the block and the devices read in the same snapshot. Without a
    cursor (the indexer has not run yet) nothing is confirmed, and the answer is (None, {}).
    """
    block: int | None = None
    found: dict[str, DeviceRow] = {}
    for start in range(0, len(device_ids), _CHUNK):
        chunk = list(device_ids[start : start + _CHUNK])
        parameters: dict[str, object] = {"chain_id": registry.chain_id, "registry": registry.address}
        if len(chunk) == 1:
            statement, parameters["device_id"] = _LOOKUP["one"], chunk[0]
        else:
            statement = _LOOKUP["array" if connection.dialect.name == "postgresql" else "list"]
            parameters["device_ids"] = chunk
        for row in await connection.execute(statement, parameters):
            block = row.block
            if row.device_id is None:
                continue
            device = DeviceTuple._make(row[1:])
            found[row.device_id] = device._replace(bpc_per_device_wei=int(device.bpc_per_device_wei))
    return block, found


class DeviceReads(Protocol):
    """The resolver's two reads, whatever the connection underneath."""

    async def lookup(
        self, registry: Registry, device_ids: Sequence[str]
    ) -> tuple[int | None, dict[str, DeviceRow]]: ...

    async def tree(self, batch_pk: int) -> bytes | None: ...


class EngineReads:
    """The reads through an SQLAlchemy engine, a connection per call (SQLite, and any database)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def lookup(
        self, registry: Registry, device_ids: Sequence[str]
    ) -> tuple[int | None, dict[str, DeviceRow]]:
        async with self.engine.connect() as connection:
            return await lookup_devices(connection, registry, device_ids)

    async def tree(self, batch_pk: int) -> bytes | None:
        async with self.engine.connect() as connection:
            return await tree_bytes(connection, batch_pk)


def _padded(device_ids: list[str]) -> list[str]:
    """The lookup's ids parameter: `device_ids` padded to ``_MIN_LOOKUP_ARRAY``.

    A string with a NUL, which no text parameter can carry, is no stored device id: it is left
    out, and found in no batch, like any other id that is not there."""
    if "\0" in "".join(device_ids):
        device_ids = [name for name in device_ids if "\0" not in name]
    missing = _MIN_LOOKUP_ARRAY - len(device_ids)
    return device_ids + device_ids[:1] * missing if missing > 0 else device_ids


async def _fetch_lookup(
    connection: asyncpg.Connection, registry: Registry, device_ids: list[str]
) -> tuple[int | None, dict[str, DeviceRow]]:
    rows = await connection.fetch(
        _ASYNCPG_LOOKUP, registry.chain_id, registry.address, _padded(device_ids), record_class=DeviceRecord
    )
    block: int | None = rows[0][0] if rows else None
    found: dict[str, DeviceRow] = {row[1]: row for row in rows if row[1] is not None}
    return block, found


class _Waiting(NamedTuple):
    """A single-device lookup waiting for a statement."""

    registry: Registry
    device_id: str
    answer: asyncio.Future[tuple[int | None, DeviceRow | None]]


# Statements of waiting single-device lookups under way at once, per process, and devices per statement.
_SHARED_STATEMENTS = 2
_SHARED_LIMIT = 1_000


class AsyncpgReads:
    """The reads on PostgreSQL, straight through an asyncpg pool with prepared statements.

    A lookup is one short statement; checking a connection out of SQLAlchemy's pool and
    running the statement through its execution layer cost several times the database's work,
    so the resolver's hot path skips both. The pool's connections are in autocommit mode
    (asyncpg's default): each statement is its own snapshot. The ids travel as one array
    parameter, so even a bulk lookup is one statement and one snapshot.

    Single-device lookups share statements: a lookup waits for the next statement, which starts
    at once (in the next turn of the event loop, so that lookups asked in the same turn go
    together) unless ``_SHARED_STATEMENTS`` of them are under way already; then it starts when
    one of those ends, with every lookup that waited meanwhile. Under load, one checkout and one
    statement serve many queries instead of one each, which costs the resolver and the database
    a fraction of the CPU; alone, a lookup waits for nothing. Each answer still comes from one
    statement that started after it was asked: one snapshot, as fresh as a statement of its own.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._waiting: list[_Waiting] = []
        self._running = 0
        self._dispatch_due = False
        self._statements: set[asyncio.Task[None]] = set()

    async def lookup(
        self, registry: Registry, device_ids: Sequence[str]
    ) -> tuple[int | None, dict[str, DeviceRow]]:
        if len(device_ids) == 1:
            block, row = await self._shared_lookup(registry, device_ids[0])
            return block, ({} if row is None else {row.device_id: row})
        async with self.pool.acquire() as connection:
            return await _fetch_lookup(connection, registry, list(device_ids))

    async def tree(self, batch_pk: int) -> bytes | None:
        async with self.pool.acquire() as connection:
            data: bytes | None = await connection.fetchval(_ASYNCPG_TREE, batch_pk)
        return data

    def _shared_lookup(
        self, registry: Registry, device_id: str
    ) -> asyncio.Future[tuple[int | None, DeviceRow | None]]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[int | None, DeviceRow | None]] = loop.create_future()
        self._waiting.append(_Waiting(registry, device_id, answer))
        self._dispatch_soon(loop)
        return answer

    def _dispatch_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._dispatch_due:
            self._dispatch_due = True
            # In a context of its own: the statements belong to no request.
            loop.call_soon(self._dispatch, context=contextvars.Context())

    def _dispatch(self) -> None:
        self._dispatch_due = False
        loop = asyncio.get_running_loop()
        while self._waiting and self._running < _SHARED_STATEMENTS:
            batch, self._waiting = self._waiting[:_SHARED_LIMIT], self._waiting[_SHARED_LIMIT:]
            self._running += 1
            statement = loop.create_task(self._answer(batch))
            self._statements.add(statement)  # referenced until done
            statement.add_done_callback(self._statements.discard)

    async def _answer(self, batch: list[_Waiting]) -> None:
        """Look up the devices of `batch`, a statement per registry, and answer each lookup."""
        by_registry: dict[Registry, list[_Waiting]] = {}
        for waiting in batch:
            if not waiting.answer.done():  # else cancelled
                by_registry.setdefault(waiting.registry, []).append(waiting)
        try:
            if by_registry:
                async with self.pool.acquire() as connection:
                    for registry, lookups in by_registry.items():
                        device_ids = list(dict.fromkeys(waiting.device_id for waiting in lookups))
                        try:
                            block, found = await _fetch_lookup(connection, registry, device_ids)
                        except Exception as exc:
                            _fail(lookups, exc)
                        else:
                            for waiting in lookups:
                                if not waiting.answer.done():
                                    waiting.answer.set_result((block, found.get(waiting.device_id)))
        except BaseException as exc:  # no connection, or cancelled: every lookup left fails with it
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._running -= 1
            if self._waiting:
                self._dispatch_soon(asyncio.get_running_loop())


def _fail(lookups: list[_Waiting], exc: BaseException) -> None:
    for waiting in lookups:
        if not waiting.answer.done():
            if isinstance(exc, Exception):
                waiting.answer.set_exception(exc)
            else:
                waiting.answer.cancel()


# --- indexer --------------------------------------------------------------------------------------


async def follow_cursor(session: AsyncSession, registry: Registry, cursor_id: int) -> int | None:
    """Make `cursor_id` (a ``chain_cursors`` row) the cursor whose credited block `registry` is at.

    A registry carried over from the indexer's own cursor of earlier versions has a
    ``resume_block``: the block up to which that indexer had applied every event. If the chain
    cursor is brand new (it has recorded no block and no event) and behind that block, its
    scanned and credited positions start at ``resume_block``, in this transaction: answers go
    on naming that block, with the state that indexer left, and the chain indexer reads on from
    the block after it. Blocks at or below ``resume_block`` get no protection against
    reorganisations, exactly as before the upgrade: their events are not recorded, so a
    reorganisation that reaches them cannot undo them. A cursor that has recorded blocks (a
    database downgraded and upgraded again) is followed from where it is. Returns the block the
    cursor was moved to, if it was.
    """
    locked = session.get_bind().dialect.name == "postgresql"  # on SQLite, the transaction's write lock
    link = await session.get(IndexerCursor, (registry.chain_id, registry.address), with_for_update=locked)
    if link is None:
        session.add(
            IndexerCursor(chain_id=registry.chain_id, registry_address=registry.address, cursor_id=cursor_id)
        )
        await session.flush()
        return None
    resumed = None
    if link.resume_block is not None:
        cursor = await session.get_one(ChainCursor, cursor_id, with_for_update=locked)
        if cursor.credited_block < link.resume_block and await _brand_new(session, cursor):
            cursor.scanned_block = cursor.credited_block = resumed = link.resume_block
            cursor.updated_at = utc_now()
        link.resume_block = None
    if link.cursor_id != cursor_id:
        link.cursor_id, link.updated_at = cursor_id, utc_now()
    await session.flush()
    return resumed


async def _brand_new(session: AsyncSession, cursor: ChainCursor) -> bool:
    """Whether `cursor` has relied on no block yet: nothing scanned, recorded or credited."""
    if cursor.scanned_block != cursor.credited_block:
        return False
    for recorded in (ChainBlock.cursor_id, ChainEvent.cursor_id):
        if await session.scalar(select(recorded).where(recorded == cursor.id).limit(1)) is not None:
            return False
    return True


async def latest_indexed_registry(connection: AsyncConnection) -> Registry | None:
    """The registry whose indexer cursor moved last: the one the running service follows."""
    row = (
        await connection.execute(
            select(IndexerCursor.chain_id, IndexerCursor.registry_address)
            .outerjoin(ChainCursor, ChainCursor.id == IndexerCursor.cursor_id)
            .order_by(func.coalesce(ChainCursor.updated_at, IndexerCursor.updated_at).desc())
            .limit(1)
        )
    ).first()
    return None if row is None else Registry(row.chain_id, row.registry_address)


async def confirm_batch(
    session: AsyncSession,
    registry: Registry,
    *,
    batch_id: int,
    manufacturer: str,
    root: str,
    device_count: int,
    bpc_per_device_wei: int,
    block: int,
) -> int | None:
    """Mark the oldest pending upload matching a ``BatchRegistered`` event as confirmed.

    Returns the upload's primary key, or None when no upload matches (a batch registered
    without this service: it cannot be resolved, since the service does not know its devices).

    The candidates are locked (on PostgreSQL) before one is chosen: an upload or a withdrawal
    deleting one of them under its lock (``delete_pending_batch``) is waited for, and a deleted
    candidate is no longer among them. Without the lock this pass read it as pending and then
    updated a row that was gone, which failed the pass (SQLAlchemy's ``StaleDataError``).
    The locking statement sees the rows of its start only: the transaction it waited for may
    have stored another match (a manufacturer uploading the same devices again, releasing its
    stale upload), which a later statement sees. So the oldest match is read again, and the
    matches locked again, until the two agree. There is no ``LIMIT`` on the locking statement:
    PostgreSQL applies it before it rechecks a locked row.
    """
    matches = (
        DeviceBatch.chain_id == registry.chain_id,
        DeviceBatch.registry_address == registry.address,
        DeviceBatch.status == BATCH_PENDING,
        DeviceBatch.manufacturer == manufacturer,
        DeviceBatch.root == root,
        DeviceBatch.device_count == device_count,
    )
    while True:
        locked = await session.scalars(
            select(DeviceBatch)
            .where(*matches)
            .order_by(DeviceBatch.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        pending = locked.first()
        oldest = await session.scalar(
            select(DeviceBatch.id).where(*matches).order_by(DeviceBatch.id).limit(1)
        )
        if (pending.id if pending is not None else None) == oldest:
            break
    if pending is None:
        return None
    pending.status = BATCH_CONFIRMED
    pending.batch_id = batch_id
    pending.registered_block = block
    pending.bpc_per_device_wei = str(bpc_per_device_wei)
    pending.confirmed_at = utc_now()
    await session.flush()
    return pending.id


async def unmatched_registration(
    session: AsyncSession, registry: Registry, *, manufacturer: str, root: str, device_count: int
) -> int | None:
    """The batch id of the oldest credited ``BatchRegistered`` of `registry` with these fields that
    confirmed no upload: a batch registered on chain while the service held no pending upload of
    it (withdrawn before the indexer saw the registration, or never uploaded here)."""
    events = await session.scalars(
        _credited_events(registry)
        .where(ChainEvent.name == "BatchRegistered", ChainEvent.args["root"].as_string() == root)
        .order_by(ChainEvent.id)
    )
    for event in events:
        args = event.args
        if args["manufacturer"] != manufacturer or int(args["deviceCount"]) != device_count:
            continue
        if not await is_confirmed(session, registry, int(args["batchId"])):
            return int(args["batchId"])
    return None


async def credited_batch_events(
    session: AsyncSession, registry: Registry, batch_id: int
) -> Sequence[ChainEvent]:
    """Every credited event of `registry` about batch `batch_id`, in chain order."""
    return (
        await session.scalars(
            _credited_events(registry)
            .where(ChainEvent.args["batchId"].as_integer() == batch_id)
            .order_by(ChainEvent.block_number, ChainEvent.log_index)
        )
    ).all()


def _credited_events(registry: Registry) -> Select[Any]:
    # The registry's cursor as a value (its key is the registry) rather than a join: the events
    # of other cursors (the Vault's trades, most of the table) are passed over on their cursor id
    # before their JSON arguments are read. Measured on 200,000 events, 20,000 of the registry:
    # 280 ms before, 89 ms now for a batch's events. It is still a sequential scan: PostgreSQL
    # plans without the subquery's value.
    cursor_id = (
        select(IndexerCursor.cursor_id)
        .where(
            IndexerCursor.chain_id == registry.chain_id,
            IndexerCursor.registry_address == registry.address,
        )
        .scalar_subquery()
    )
    return select(ChainEvent).where(
        ChainEvent.cursor_id == cursor_id, ChainEvent.state == EventState.CREDITED.value
    )


async def unconfirm_batch(session: AsyncSession, registry: Registry, batch_id: int, block: int) -> int | None:
    """Undo :func:`confirm_batch` for the ``BatchRegistered`` of `batch_id` at `block`: pending again.

    Returns the upload's primary key, or None when that event confirmed no upload.
    """
    confirmed = await session.scalar(
        select(DeviceBatch).where(_on_chain(registry, batch_id), DeviceBatch.registered_block == block)
    )
    if confirmed is None:
        return None
    confirmed.status = BATCH_PENDING
    confirmed.batch_id = None
    confirmed.registered_block = None
    confirmed.confirmed_at = None
    await session.flush()
    return confirmed.id


async def is_confirmed(session: AsyncSession, registry: Registry, batch_id: int) -> bool:
    return await session.scalar(select(DeviceBatch.id).where(_on_chain(registry, batch_id))) is not None


def _on_chain(registry: Registry, batch_id: int) -> ColumnElement[bool]:
    return and_(
        DeviceBatch.chain_id == registry.chain_id,
        DeviceBatch.registry_address == registry.address,
        DeviceBatch.batch_id == batch_id,
    )


async def set_bpc_per_device(
    session: AsyncSession, registry: Registry, batch_id: int, amount_wei: int
) -> None:
    await session.execute(
        update(DeviceBatch).where(_on_chain(registry, batch_id)).values(bpc_per_device_wei=str(amount_wei))
    )


async def set_suspended(session: AsyncSession, registry: Registry, batch_id: int, suspended: bool) -> None:
    await session.execute(
        update(DeviceBatch).where(_on_chain(registry, batch_id)).values(suspended=suspended)
    )


async def set_revoked(
    session: AsyncSession, registry: Registry, batch_id: int, index: int, block: int, *, revoked: bool
) -> None:
    """Mark the device at `index` of the batch revoked at `block`; or, not `revoked`, undo that mark."""
    batch_pk = select(DeviceBatch.id).where(_on_chain(registry, batch_id)).scalar_subquery()
    device = and_(Device.batch_pk == batch_pk, Device.device_index == index)
    if revoked:
        await session.execute(update(Device).where(device).values(revoked_block=block))
    else:
        await session.execute(
            update(Device).where(device, Device.revoked_block == block).values(revoked_block=None)
        )
