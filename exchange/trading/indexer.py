"""A contract's events into the database, from a persisted cursor, safe against reorganisations.

One :class:`ChainIndexer` follows one contract on one chain. Its cursor
(``chain_cursors``) names the chain, the contract and the hash of the deployment
block, and holds two positions: the last block *scanned* (events recorded) and
the last block *credited* (events applied). Each pass:

1. **Checks for a reorganisation.** The cursor remembers the hashes of the blocks
   it relied on (``chain_blocks``: the end of every scanned range, and every block
   with an event) for ``confirmations + TRACKED_MARGIN_BLOCKS`` blocks. The newest
   is compared with the chain's block at that height; since each block commits to
   its parent, a match vouches for every older one, so one call suffices when
   nothing changed. On a mismatch the indexer walks down to the newest block that
   still matches (the fork point) and rolls back everything above it: events
   only recorded become ``orphaned``; events already credited are undone by the
   handler (``reversed``) — or, if the handler refuses (the ledger no longer has
   the money), kept as ``stranded`` and logged, so the audit shows the difference.
   The handler is told the fork block's timestamp (``IndexedEvent.fork_time_unix``):
   the chain time of the credited block once the rollback is done.
2. **Scans** from the block after the cursor to the head, in ranges of at most
   ``max_blocks``, recording each decoded log with its block hash (``seen``). A
   range's end hash is read before and after ``eth_getLogs``; if it changed, the
   range is read again, so the logs and the remembered hash describe one chain.
3. **Credits**, in (block, log index) order, every recorded event at least
   ``confirmations`` blocks deep (``head - block >= confirmations``; with zero,
   at once) through the handler, each in a savepoint; a refusal marks the event
   ``refused`` with the reason and does not stop the indexer. A handler that
   must wait for something under way (an ``Exited`` whose account still has
   fills the settler has not settled or failed) defers the event instead: it
   stays ``seen``, the events of its block before it are undone, and the pass
   stops there, so events are still credited in chain order and the credited
   block holds whole blocks; the next pass tries again. The credit runs with the cursor
   row locked, so two processes never credit one event twice.

Between the scan and the credit the indexer awaits its ``before_credit`` hook, if
one is set: a follower of the recorded events that must act before any of them
is credited. The trading service sets it to the chain cancels
(``exchange.trading.chain_cancels``), so the orders of an account that asked to
exit have left the book, and their reservations the ledger, before its ``Exited``
is credited, even when both events arrive in one pass. A failing hook fails the
pass (retried by :meth:`ChainIndexer.run`) rather than credit out of order.

The rule for reorganisations, in one sentence: an event is credited once it is
``confirmations`` blocks deep, and whatever came from a block that left the
chain is rolled back, credited or not — so with ``confirmations = 0`` a member
can briefly see a deposit that a reorganisation later takes back. Choose
``confirmations`` at least as deep as the chain reorganises to avoid that.

Each step is a database transaction that moves the cursor together with the rows
it wrote, so a crash repeats nothing and skips nothing. A re-scanned log that was
orphaned or reversed before (its block came back) is revived, not duplicated. A
stranded event whose transaction is mined again in another block is not credited
again: its new row takes over the stranded credit, and the stranded row becomes
``reversed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from typing import Any, Literal, Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3
from web3.exceptions import BlockNotFound

from exchange.chain.binding import BoundContract
from exchange.db.base import utc_now
from exchange.kit.logging import get_logger
from exchange.trading.chain_calls import ChainCalls
from exchange.trading.repository import BalancesBusy
from exchange.trading.settlement_models import ChainBlock, ChainCursor, ChainEvent, EventState

log = get_logger(__name__)

TRACKED_MARGIN_BLOCKS = 128
"""Block hashes kept beyond the confirmation depth, to find the fork point of deeper reorganisations."""
_RANGE_RETRIES = 5


class EventRefused(Exception):
    """A handler cannot apply (or undo) an event; the reason is stored with it."""


class EventDeferred(Exception):
    """A handler cannot apply an event yet, and something under way will let it: the event
    stays ``seen`` (the reason stored with it) and the pass credits nothing of its block
    (the events before it undone) nor after it."""


@dataclass(frozen=True, slots=True)
class IndexedEvent:
    """A recorded log as handlers see it."""

    id: int
    name: str
    args: Mapping[str, Any]
    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str
    fork_time_unix: int | None = None
    """Set when the event is undone: the timestamp of the fork block, the credited block thereafter."""

    @property
    def reference(self) -> str:
        """``<tx hash>:<log index>``: names this log across reorganisations that keep its transaction."""
        return f"{self.tx_hash}:{self.log_index}"

    def integer(self, name: str) -> int:
        return int(self.args[name])

    def address(self, name: str) -> str:
        return Web3.to_checksum_address(str(self.args[name]))


class EventHandler(Protocol):
    """What the indexer does with a confirmed event, and how it is undone."""

    async def credit(self, session: AsyncSession, event: IndexedEvent) -> None:
        """Apply the event's effect; raise ``EventRefused`` to leave it unapplied."""

    async def reverse(self, session: AsyncSession, event: IndexedEvent) -> None:
        """Undo what ``credit`` did; raise ``EventRefused`` when that is impossible.

        ``event.fork_time_unix`` is the timestamp of the block the chain forked at.
        """


@dataclass(frozen=True, slots=True)
class IndexerPosition:
    head: int
    scanned_block: int
    credited_block: int
    rolled_back_to: int | None  # the fork point, when this pass found a reorganisation


@dataclass(frozen=True, slots=True)
class _Log:
    name: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str


def hex32(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def plain_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Event arguments as JSON: integers as decimal strings, bytes as 0x-hex, addresses EIP-55."""
    plain: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, bool):
            plain[key] = value
        elif isinstance(value, int):
            plain[key] = str(value)
        elif isinstance(value, bytes):
            plain[key] = hex32(value)
        elif isinstance(value, str) and Web3.is_address(value):
            plain[key] = Web3.to_checksum_address(value)
        else:
            plain[key] = value
    return plain


_Outcome = tuple[Callable[..., Any], str, dict[str, str]]
"""What a pass logs of an event once it has committed: the log method, the event and its fields."""


class ChainIndexer:
    """Follows one contract's events into ``chain_events`` and through a handler."""

    def __init__(
        self,
        contract: BoundContract,
        events: Sequence[str],
        handler: EventHandler,
        sessionmaker: async_sessionmaker[AsyncSession],
        calls: ChainCalls,
        *,
        chain_id: int,
        deploy_block: int,
        confirmations: int,
        max_blocks: int,
    ) -> None:
        self.contract = contract
        self.handler = handler
        self.chain_id = chain_id
        self.deploy_block = deploy_block
        self.confirmations = confirmations
        self.max_blocks = max_blocks
        self._sessionmaker = sessionmaker
        self._calls = calls
        self._events = {
            str(contract.contract.events[name].topic): contract.contract.events[name] for name in events
        }
        self._anchor: str | None = None
        self._lock = asyncio.Lock()
        self.before_credit: Callable[[], Awaitable[object]] | None = None
        """Awaited after each scan, before crediting: acts on the recorded events first."""
        self.position: IndexerPosition | None = None
        """Where this process's last complete pass left the cursor, and the chain's head then."""

    # --- public ---------------------------------------------------------------------------------

    async def catch_up(self) -> IndexerPosition:
        """One pass: roll back orphaned blocks, record new events, credit the deep enough ones."""
        async with self._lock:
            w3 = self.contract.w3
            anchor = await self._anchor_hash()
            forks: list[int] = []
            for _attempt in range(_RANGE_RETRIES):
                head = await self._calls.run(lambda: int(w3.eth.block_number))
                cursor_id, fork = await self._follow_fork(anchor, head)
                forks += [] if fork is None else [fork]
                scanned = await self._scan(cursor_id, head)
                if scanned is not None:
                    break
                # The chain reorganised under the scan: look for the fork again before going on.
            else:
                raise RuntimeError(f"the chain kept reorganising during {self.contract.name}'s pass")
            if self.before_credit is not None:
                await self.before_credit()
            credited = await self._credit(cursor_id, head)
            self.position = IndexerPosition(head, scanned, credited, min(forks, default=None))
            return self.position

    async def _follow_fork(self, anchor: str, head: int) -> tuple[int, int | None]:
        """The cursor's id, and the fork point it was rolled back to if the chain reorganised."""
        # Chain calls happen between short transactions: on SQLite a transaction holds the write lock.
        async with self._sessionmaker() as session, session.begin():
            cursor = await self._cursor(session, anchor)
            cursor_id = cursor.id
            tracked = (
                await session.execute(
                    select(ChainBlock.number, ChainBlock.hash)
                    .where(ChainBlock.cursor_id == cursor_id)
                    .order_by(ChainBlock.number.desc())
                )
            ).all()
        fork = await self._find_fork([(int(number), str(hash_)) for number, hash_ in tracked], head)
        if fork is not None:
            fork_time = await self._calls.run(partial(self._block_time, fork))
            async with self._sessionmaker() as session, session.begin():
                # Locked, as when crediting: a second process rolling back finds it done.
                cursor = await session.get_one(ChainCursor, cursor_id, with_for_update=True)
                await self._roll_back(session, cursor, fork, fork_time)
        return cursor_id, fork

    async def run(self, interval_s: float) -> None:
        """Catch up every `interval_s` seconds until cancelled; a failed pass is logged and retried."""
        while True:
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except BalancesBusy as busy:  # rolled back: the market writer held them; the next pass
                log.info("indexer.balances_busy", contract=self.contract.name, detail=busy.detail)
            except Exception as exc:  # a node or database hiccup must not end the loop
                log.error("indexer.pass_failed", contract=self.contract.name, error=str(exc), exc_info=exc)
            await asyncio.sleep(interval_s)

    async def cursor_id(self) -> int:
        """The id of this contract's cursor on this chain (created if new)."""
        anchor = await self._anchor_hash()
        async with self._sessionmaker() as session, session.begin():
            return (await self._cursor(session, anchor)).id

    # --- cursor and reorganisations ------------------------------------------------------------

    async def _anchor_hash(self) -> str:
        if self._anchor is None:
            w3, block = self.contract.w3, self.deploy_block
            self._anchor = await self._calls.run(lambda: hex32(w3.eth.get_block(block)["hash"]))
        return self._anchor

    async def _cursor(self, session: AsyncSession, anchor: str) -> ChainCursor:
        statement = select(ChainCursor).where(
            ChainCursor.chain_id == self.chain_id,
            ChainCursor.contract == self.contract.address,
            ChainCursor.anchor_block_hash == anchor,
        )
        if session.get_bind().dialect.name == "postgresql":
            statement = statement.with_for_update()
        cursor = await session.scalar(statement)
        if cursor is None:
            start = max(self.deploy_block - 1, 0)
            cursor = ChainCursor(
                chain_id=self.chain_id,
                contract=self.contract.address,
                anchor_block_hash=anchor,
                scanned_block=start,
                credited_block=start,
            )
            session.add(cursor)
            await session.flush()
            log.info(
                "indexer.cursor_created", contract=self.contract.name, chain_id=self.chain_id, block=start
            )
        return cursor

    def _block_hash(self, number: int, field: Literal["hash", "parentHash"] = "hash") -> str | None:
        """Block ``number``'s hash (or its ``parentHash``), None while the chain has no such block."""
        try:
            return hex32(self.contract.w3.eth.get_block(number)[field])
        except BlockNotFound:
            return None

    def _block_time(self, number: int) -> int:
        """The timestamp of block `number` (the genesis block's below it)."""
        return int(self.contract.w3.eth.get_block(max(number, 0))["timestamp"])

    async def _find_fork(self, tracked: list[tuple[int, str]], head: int) -> int | None:
        """The newest remembered block still on the chain, if any newer one is not; else None.

        `tracked` is (number, hash), newest first.
        """
        for index, (number, block_hash) in enumerate(tracked):
            on_chain = None if number > head else await self._calls.run(partial(self._block_hash, number))
            if on_chain == block_hash:
                return None if index == 0 else number
        if not tracked:
            return None
        deepest = tracked[-1][0] - 1
        log.warning(
            "indexer.reorg_beyond_tracked_blocks", contract=self.contract.name, rolled_back_to=deepest
        )
        return deepest

    async def _roll_back(
        self, session: AsyncSession, cursor: ChainCursor, fork: int, fork_time_unix: int
    ) -> None:
        orphaned = (
            await session.scalars(
                select(ChainEvent)
                .where(
                    ChainEvent.cursor_id == cursor.id,
                    ChainEvent.block_number > fork,
                    ChainEvent.state.in_([EventState.SEEN, EventState.CREDITED, EventState.REFUSED]),
                )
                .order_by(ChainEvent.block_number.desc(), ChainEvent.log_index.desc())
            )
        ).all()
        counts = {"orphaned": 0, "reversed": 0, "stranded": 0}
        for row in orphaned:
            if row.state != EventState.CREDITED:
                row.state, row.detail = EventState.ORPHANED.value, None
                counts["orphaned"] += 1
            else:
                try:
                    async with session.begin_nested():
                        await self.handler.reverse(session, indexed_event(row, fork_time_unix=fork_time_unix))
                except EventRefused as refusal:
                    row.state, row.detail = EventState.STRANDED.value, f"not reversed: {refusal}"[:500]
                    counts["stranded"] += 1
                    log.error("indexer.reversal_refused", **self._about(row, refusal))
                else:
                    row.state = EventState.REVERSED.value
                    counts["reversed"] += 1
            row.updated_at = utc_now()
        await session.execute(
            delete(ChainBlock).where(ChainBlock.cursor_id == cursor.id, ChainBlock.number > fork)
        )
        cursor.scanned_block = min(cursor.scanned_block, fork)
        cursor.credited_block = min(cursor.credited_block, fork)
        cursor.updated_at = utc_now()
        await session.flush()
        log.warning("indexer.reorg_rolled_back", contract=self.contract.name, fork_block=fork, **counts)

    # --- scanning -------------------------------------------------------------------------------

    async def _scan(self, cursor_id: int, head: int) -> int | None:
        """Record the logs of the blocks after the cursor's up to ``head``, range by range; the
        block scanned last. None when a range does not continue the block scanned before it
        (the chain reorganised since the fork was looked for): nothing of it is recorded.

        A range counts only as the continuation of the remembered block before it, so the
        newest remembered block vouches for every older one (``_find_fork``)."""
        while True:
            async with self._sessionmaker() as session, session.begin():
                scanned = (await session.get_one(ChainCursor, cursor_id)).scanned_block
            if scanned >= head:
                return scanned
            start, end = scanned + 1, min(head, scanned + self.max_blocks)
            parent_hash, end_hash, logs = await self._calls.run(partial(self._read_range, start, end))
            async with self._sessionmaker() as session, session.begin():
                cursor = await session.get_one(ChainCursor, cursor_id)
                if cursor.scanned_block != scanned:
                    continue  # another process moved the cursor meanwhile: read from where it is
                remembered = await session.get(ChainBlock, (cursor_id, scanned))
                if remembered is not None and remembered.hash != parent_hash:
                    log.warning(
                        "indexer.range_off_the_scanned_chain",
                        contract=self.contract.name,
                        block=scanned,
                        remembered=remembered.hash,
                        parent_of_next=parent_hash,
                    )
                    return None
                stranded = await self._stranded_transactions(session, cursor_id) if logs else set()
                for entry in logs:
                    await self._record(session, cursor_id, entry, stranded)
                for number, block_hash in {
                    end: end_hash,
                    **{e.block_number: e.block_hash for e in logs},
                }.items():
                    await session.merge(ChainBlock(cursor_id=cursor_id, number=number, hash=block_hash))
                cursor.scanned_block = end
                cursor.updated_at = utc_now()
                await session.flush()
            if logs:
                log.info(
                    "indexer.scanned",
                    contract=self.contract.name,
                    first_block=start,
                    last_block=end,
                    events=len(logs),
                )

    def _read_range(self, start: int, end: int) -> tuple[str, str, list[_Log]]:
        """Blocking: the hash of the block before the range (as its first block names its
        parent), the range's logs and its end block's hash, read from one chain (the end
        block, whose ancestors they all are, the same before and after)."""
        w3 = self.contract.w3
        for _attempt in range(_RANGE_RETRIES):
            before = self._block_hash(end)
            parent = self._block_hash(start, "parentHash")
            raw = w3.eth.get_logs(
                {
                    "address": self.contract.address,
                    "fromBlock": start,
                    "toBlock": end,
                    "topics": [list(self._events)],
                }
            )
            after = self._block_hash(end)
            if before is not None and before == after and parent is not None:
                return (
                    parent,
                    before,
                    sorted(
                        (self._decode(entry) for entry in raw), key=lambda e: (e.block_number, e.log_index)
                    ),
                )
        raise RuntimeError(f"blocks {start}..{end} kept changing while their logs were read")

    def _decode(self, entry: Any) -> _Log:
        event = self._events[hex32(entry["topics"][0])]
        processed = event().process_log(entry)
        return _Log(
            name=str(processed["event"]),
            args=plain_args(processed["args"]),
            block_number=int(processed["blockNumber"]),
            block_hash=hex32(processed["blockHash"]),
            log_index=int(processed["logIndex"]),
            tx_hash=hex32(processed["transactionHash"]),
        )

    async def _record(
        self, session: AsyncSession, cursor_id: int, entry: _Log, stranded_transactions: set[str]
    ) -> None:
        """Record a scanned log. ``stranded_transactions``: the transactions of the cursor's
        stranded events, the only ones whose logs may take a stranded credit over."""
        existing = await session.scalar(
            select(ChainEvent).where(
                ChainEvent.cursor_id == cursor_id,
                ChainEvent.block_hash == entry.block_hash,
                ChainEvent.log_index == entry.log_index,
            )
        )
        stranded = None
        if entry.tx_hash in stranded_transactions and (
            existing is None or existing.state in (EventState.ORPHANED, EventState.REVERSED)
        ):
            stranded = await self._stranded_as(session, cursor_id, entry)
        if existing is None:
            row = ChainEvent(
                cursor_id=cursor_id,
                block_number=entry.block_number,
                block_hash=entry.block_hash,
                log_index=entry.log_index,
                tx_hash=entry.tx_hash,
                name=entry.name,
                args=entry.args,
            )
            if stranded is not None:  # its transaction was mined again in another block
                self._take_over(
                    row, stranded, f"its transaction was mined again in block {entry.block_number}"
                )
            session.add(row)
            return
        # The block left the chain and came back: the event is live again.
        if existing.state in (EventState.ORPHANED, EventState.REVERSED):
            if stranded is not None:  # its transaction's other block left, its credit kept
                self._take_over(existing, stranded, "its first block came back")
            else:
                existing.state, existing.detail = EventState.SEEN.value, None
        elif existing.state == EventState.STRANDED:
            existing.state, existing.detail = EventState.CREDITED.value, None  # its credit was never undone
        existing.updated_at = utc_now()

    def _take_over(self, row: ChainEvent, stranded: ChainEvent, why: str) -> None:
        """``row`` is the live log of ``stranded``'s event: the stranded credit, never undone, is
        its own (crediting it again would count the money twice), and the stranded row is done."""
        row.state, row.detail = EventState.CREDITED.value, f"credited as event {stranded.id}"
        stranded.state, stranded.detail, stranded.updated_at = EventState.REVERSED.value, why, utc_now()
        log.warning(
            "indexer.stranded_event_taken_over",
            contract=self.contract.name,
            event_name=row.name,
            tx_hash=row.tx_hash,
            block_number=row.block_number,
            reason=why,
        )

    @staticmethod
    async def _stranded_transactions(session: AsyncSession, cursor_id: int) -> set[str]:
        return set(
            await session.scalars(
                select(ChainEvent.tx_hash).where(
                    ChainEvent.cursor_id == cursor_id, ChainEvent.state == EventState.STRANDED.value
                )
            )
        )

    @staticmethod
    async def _stranded_as(session: AsyncSession, cursor_id: int, entry: _Log) -> ChainEvent | None:
        """A stranded event of the same transaction, name and arguments as ``entry`` (the same log,
        its transaction mined again in another block), if there is one."""
        candidates = await session.scalars(
            select(ChainEvent)
            .where(
                ChainEvent.cursor_id == cursor_id,
                ChainEvent.tx_hash == entry.tx_hash,
                ChainEvent.name == entry.name,
                ChainEvent.state == EventState.STRANDED.value,
            )
            .order_by(ChainEvent.id)
        )
        return next((row for row in candidates if row.args == entry.args), None)

    # --- crediting ------------------------------------------------------------------------------

    def _about(self, row: ChainEvent, reason: Exception) -> dict[str, str]:
        """What a log line says of an event a handler refused or deferred."""
        return {
            "contract": self.contract.name,
            "event_name": row.name,
            "tx_hash": row.tx_hash,
            "reason": str(reason),
        }

    async def _credit_block(
        self, session: AsyncSession, rows: list[ChainEvent], outcomes: list[_Outcome]
    ) -> bool:
        """Credit one block's events in order, all or none: False when a handler defers one, or
        trading holds balances one needs (``BalancesBusy``; the next pass starts at this block).

        A deferral undoes the events of its block credited before it, so the credited block
        always names a whole block's effects (what ``exchange audit`` compares the Vault at).
        What a kept block credited and refused is added to `outcomes`, logged once the pass's
        transaction commits: a block that waits, or a pass that fails, logs none of it.
        """
        block = await session.begin_nested()
        kept: list[_Outcome] = []
        for row in rows:
            try:
                async with session.begin_nested():
                    await self.handler.credit(session, indexed_event(row))
            except EventDeferred as wait:
                await block.rollback()
                await session.refresh(row)
                if row.detail != str(wait)[:500]:
                    row.detail, row.updated_at = str(wait)[:500], utc_now()
                    log.warning("indexer.credit_deferred", **self._about(row, wait))
                return False
            except BalancesBusy as busy:  # trading holds balances it needs: the next pass, from here
                await block.rollback()
                contract, block_number = self.contract.name, row.block_number
                log.info("indexer.balances_busy", contract=contract, block=block_number, detail=busy.detail)
                return False
            except EventRefused as refusal:
                row.state, row.detail = EventState.REFUSED.value, str(refusal)[:500]
                kept.append((log.error, "indexer.credit_refused", self._about(row, refusal)))
            else:
                row.state, row.detail = EventState.CREDITED.value, None
                reference = indexed_event(row).reference
                about = {"contract": self.contract.name, "event_name": row.name, "reference": reference}
                kept.append((log.info, "indexer.event_credited", about))
            row.updated_at = utc_now()
        await block.commit()
        outcomes += kept
        return True

    async def _credit(self, cursor_id: int, head: int) -> int:
        deep_enough = head - self.confirmations
        async with self._sessionmaker() as session, session.begin():
            # Locked first (PostgreSQL; SQLite serialises writers): another process crediting
            # meanwhile has committed its states before the events below are read.
            cursor = await session.get_one(ChainCursor, cursor_id, with_for_update=True)
            rows = (
                await session.scalars(
                    select(ChainEvent)
                    .where(
                        ChainEvent.cursor_id == cursor_id,
                        ChainEvent.state == EventState.SEEN,
                        ChainEvent.block_number <= deep_enough,
                    )
                    .order_by(ChainEvent.block_number, ChainEvent.log_index)
                )
            ).all()
            credit_to = min(cursor.scanned_block, deep_enough)
            outcomes: list[_Outcome] = []  # of the events credited or refused
            for block_number, block_group in groupby(rows, key=lambda row: row.block_number):
                if not await self._credit_block(session, list(block_group), outcomes):
                    credit_to = min(credit_to, block_number - 1)  # nor anything after this block
                    break
            cursor.credited_block = max(cursor.credited_block, credit_to)
            cursor.updated_at = utc_now()
            keep_from = deep_enough - TRACKED_MARGIN_BLOCKS
            newest = await session.scalar(
                select(ChainBlock.number)
                .where(ChainBlock.cursor_id == cursor_id)
                .order_by(ChainBlock.number.desc())
                .limit(1)
            )
            if newest is not None:
                await session.execute(
                    delete(ChainBlock).where(
                        ChainBlock.cursor_id == cursor_id,
                        ChainBlock.number < min(keep_from, newest),
                    )
                )
            await session.flush()
            credited_block = cursor.credited_block
        for emit, event, fields in outcomes:
            emit(event, **fields)
        if outcomes:
            log.info(
                "indexer.credited", contract=self.contract.name, events=len(outcomes), block=credited_block
            )
        return credited_block


def indexed_event(row: ChainEvent, *, fork_time_unix: int | None = None) -> IndexedEvent:
    """A recorded event as handlers see it."""
    return IndexedEvent(
        id=row.id,
        name=row.name,
        args=row.args,
        block_number=row.block_number,
        block_hash=row.block_hash,
        log_index=row.log_index,
        tx_hash=row.tx_hash,
        fork_time_unix=fork_time_unix,
    )
