"""The writer of one market: the only task that changes its book, its journal and its fills.

Requests hand the writer *intents* (place, cancel, cancel all, probe) through an
asyncio queue and wait. Each cycle the writer takes everything queued (up to
``max_batch``) and, in ONE database transaction:

1. cancels orders that reached their expiry less the settlement margin, and
   (first cycle after a recovery) orders none of whose fills could settle any more;
2. for each intent in arrival order: checks the client order id, nonce and
   order hash are unused, reserves the funds (ledger postings against the
   balances read ``FOR UPDATE``), applies the command to the book, and turns
   the book's events into fills, order updates and ledger postings;
3. writes the journal rows (orders, cancels), the fills, the order states, the
   ledger entries and balances and, every ``checkpoint_every`` commands, a
   snapshot of the book with its state hash;
4. moves the journal head in ``trading_books`` from the sequence the cycle
   started at (a head that moved under it fails the cycle: one writer per market);

(On SQLite the engine begins every transaction IMMEDIATE, so the cycle holds
the write lock from its first read and never has to upgrade.)

then commits, and only then resolves the waiting requests. One commit (one
fsync) acknowledges the whole batch: that is the group commit. When commands are
already waiting at the commit, the next cycle begins at once and the batch's answers
(and its report to the feed), fixed as they were at the commit, go out while that cycle
waits for its write (``_held``): answered at once, their responses would all be written
before the next cycle's first read was looked at. If anything in
the cycle fails, the transaction rolls back, the requests of the batch get a
503, and the writer rebuilds its book from the database, so memory never runs
ahead of what is durable.

On PostgreSQL a cycle under load is three round trips to the database: ONE statement
reads the journaled orders the batch could repeat, locks the balances it will likely move
and takes the ids of the orders it may place (``_read``); ONE statement writes everything,
on plans kept from cycle to cycle (``_CYCLE_WRITE_PLANS``), and moves the head
(``bulk.write_all``); and the commit, which begins the next cycle's transaction when
commands are already waiting (``_cycle_transaction``). More happen when needed: the
``BEGIN`` of a cycle after a wait for commands, an account's first balance row of a
token, a maker or release the first read did not lock, a candle's read when a new one
begins. A cycle's cost is mostly its round trips, not its rows: under load each one
waits behind the loop's other work.

The journal. A command the book accepted gets the next ``sequence`` of the
market; a placed order is its own journal row (its book order id is its
sequence), a cancel is a ``trading_cancels`` row. A command the book rejects, or
an order whose reservation fails, changes nothing and is not journaled.

Recovery (:meth:`MarketWriter.start`, and after a failed cycle): the book is rebuilt
from its last checkpoint and the journal after it, and checked against the journal
head and the open orders (``journal.recover_book``). Any mismatch stops the
start-up, or after a failed cycle stops the writer for good (its orders answer 503
and its feed is closed): the service does not trade on a book it cannot vouch for.
On PostgreSQL the writer first claims the market, so that one process writes it
(``market_claim``).

Fees are not book rules (``MarketSpec.book_config``): they may change between
runs, and orders placed before the change keep their signed ``max_fee_bps``.
Intake refuses an order whose cap is below either fee, so only a resting order
can meet a fee above its cap, and a resting order is only ever a maker (IOC and
FOK orders never rest). Such an order could never trade: its fill would be one
the Vault refuses (``amounts.FeeAboveCap``), which would fail every cycle that
crossed it. So :meth:`MarketWriter.start`, before it takes any intent, runs a
cycle that cancels every resting order whose cap is below the maker fee (cause
``fee_above_cap``), journaled and released like any cancel; should that cycle
fail, the next one does it before its intents.

The same first cycle cancels every resting order of a contract wallet that
refused its signature when one of its fills settled (cause ``wallet_refused``,
``settlement_repository.disowned_orders``). The service cancels such an order as
soon as it hears of the failed fill; recovery finds the ones whose cancel did not
happen (the writer stopped in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import heapq
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, tuple_, union_all, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from exchange.db import bulk
from exchange.db.base import utc_now
from exchange.kit.errors import RateLimited
from exchange.kit.logging import get_logger
from exchange.orderbook import (
    Accepted,
    Cancel,
    CancelAll,
    Cancelled,
    Depth,
    Event,
    LevelChanged,
    OrderBook,
    PlaceLimit,
    Rejected,
    RejectReason,
    Side,
    Trade,
)
from exchange.trading import ledger, market_claim, repository
from exchange.trading.amounts import settlement_amounts
from exchange.trading.candles import STORED, Candle, trade_candles
from exchange.trading.feed import CycleListener, CycleReport
from exchange.trading.intake import TIME_IN_FORCE, CheckedOrder, OrderExpired, buy_reservation
from exchange.trading.intents import (
    CANCEL_CAUSES,
    ORDER_FIELDS,
    ORDER_STATE_FIELDS,
    STOP,
    CancelAllIntent,
    CancelIntent,
    Intent,
    JournalHead,
    OrderConflict,
    OrderNotOpen,
    OrderRow,
    Placed,
    PlaceIntent,
    PostOnlyWouldTake,
    ProbeIntent,
    ReplaceIntent,
    WriterUnavailable,
    fail,
    resolve,
    settled,
)
from exchange.trading.journal import RecoveryFailed, checkpoint_columns, recover_book
from exchange.trading.ledger import Balance, FillAmounts, LedgerError, Posting
from exchange.trading.market_claim import MarketClaim, MarketOwned
from exchange.trading.markets import MarketSpec
from exchange.trading.models import (
    FILL_CAUSE,
    ORDER_RELEASE_CAUSE,
    ORDER_RESERVE_CAUSE,
    CancelCause,
    OrderStatus,
    SettlementState,
    TradingBook,
    TradingCancel,
    TradingCandle,
    TradingFill,
    TradingOrder,
)
from exchange.trading.models import TimeInForce as StoredTimeInForce
from exchange.trading.repository import FEES_ACCOUNT, BalanceKey, LedgerRefused, padded
from exchange.trading.settlement_repository import disowned_orders

log = get_logger(__name__)

# Core tables: the writer writes plain rows, many in one statement (exchange.db.bulk).
_ORDERS = cast(Table, TradingOrder.__table__)
_CANCELS = cast(Table, TradingCancel.__table__)
_FILLS = cast(Table, TradingFill.__table__)
_CANDLES = cast(Table, TradingCandle.__table__)
_BOOKS = cast(Table, TradingBook.__table__)  # Core statements: no ORM bulk-update pass per cycle
CANDLE_VALUES = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
# Built once, so SQLAlchemy reuses its cache key; the IN lists are padded (repository.padded) so
# that the database sees few distinct statements. (On PostgreSQL the writer sends the lookup
# with arrays, _known_orders_sql.) Each part looks up exact keys of a unique index, so its plan
# is index probes (one query OR-ing account, client id and nonce lists was planned as a
# sequential scan) when planned for the table as it is (_CUSTOM_PLANS).
_KNOWN_ORDERS = union_all(
    select(_ORDERS).where(
        tuple_(_ORDERS.c.account, _ORDERS.c.client_order_id).in_(bindparam("client_ids", expanding=True))
    ),
    select(_ORDERS).where(
        tuple_(_ORDERS.c.account, _ORDERS.c.nonce).in_(bindparam("nonces", expanding=True))
    ),
    select(_ORDERS).where(_ORDERS.c.order_hash.in_(bindparam("hashes", expanding=True))),
)
# Off PostgreSQL, where new orders' ids follow the highest one (``_read``).
_HIGHEST_ORDER_ID = select(func.max(_ORDERS.c.id))
# The journal starts empty and grows fast: a generic plan PostgreSQL cached for a prepared
# statement while its tables were small (sequential scans) would stay in use as they grow,
# until the next ANALYZE, and cost tens of milliseconds a cycle. A cycle runs each of its
# statements once (many rows in one statement, see exchange.db.bulk), so each is planned
# for its actual values instead (but for what follows the first read of a cycle that places
# orders, whose plans no value changes: _CYCLE_WRITE_PLANS). Nor are its statements given
# parallel workers: for a batch of a hundred orders PostgreSQL plans the lookup of known orders
# with two, whose start took more than the lookup itself (measured 21 ms against 6 ms for 160
# orders). Set once on the writer's
# held connection (a round trip per cycle less), and reset before the connection goes back to
# the pool.
_CUSTOM_PLANS = ("SET plan_cache_mode = force_custom_plan", "SET max_parallel_workers_per_gather = 0")
# (The plans the writer kept go too: another writer taking the connection from the pool, for
# statements of the same texts, would otherwise go on with plans made for tables long since grown.)
_DEFAULT_PLANS = ("RESET plan_cache_mode", "RESET max_parallel_workers_per_gather", "DISCARD PLANS")

# The same lookups written out for an asyncpg connection (exchange.db.bulk.Raw): nothing for
# SQLAlchemy to expand or compile each cycle.
_ORDER_COLUMNS = tuple(_ORDERS.columns)
_ORDER_COLUMN_NAMES = tuple(column.key for column in _ORDER_COLUMNS)


@functools.cache
def _known_orders_sql(dialect: Dialect) -> str:
    """The lookup of (account, client id) pairs, (account, nonce) pairs and order hashes, each
    list as arrays: ``$1``/``$2`` accounts and client ids, ``$3``/``$4`` accounts and nonces,
    ``$5`` hashes. One text whatever the batch, and semi-joins over the unnested arrays: an
    expanded IN list costs PostgreSQL planning that grows with the list, and its bitmap scans
    several times the index probes of a semi-join (measured on a journal of 224,000 orders:
    32 orders 3.5 ms against 1.2 ms, 320 orders 21 ms against 8 ms).
    """
    quote = dialect.identifier_preparer.quote
    listed = ", ".join(quote(column.name) for column in _ORDERS.columns)
    # Identifiers are the table's own, quoted by the dialect; every value is a parameter.
    source = f"SELECT {listed} FROM {dialect.identifier_preparer.format_table(_ORDERS)}"  # noqa: S608
    parts = (
        "(account, client_order_id) IN (SELECT * FROM unnest($1::varchar[], $2::varchar[]))",
        "(account, nonce) IN (SELECT * FROM unnest($3::varchar[], $4::varchar[]))",
        "order_hash = ANY($5::varchar[])",
    )
    return " UNION ALL ".join(f"{source} WHERE {where}" for where in parts)


# What the rest of a cycle's transaction runs under, once the first read of a cycle that places
# orders has run (_cycle_read_sql, each a transaction-local set_config): its write, and the
# balance rows it creates or reads late and the candles it reads. Those statements come in a few
# texts, the same from cycle to cycle, whose plans depend on no parameter's value (JSON rows,
# keys of unique indexes): planned anew each time (_CUSTOM_PLANS) they cost PostgreSQL about
# 0.5 ms a cycle, a sixth of the write. So they keep the one plan each text first gets, and hash
# and merge joins and sequential scans are priced out of it (a last resort): its joins are
# nested loops, for a cycle's few rows against a table of any size index probes. The first read
# itself is planned for its values (the lengths of its key arrays matter), before these take
# effect; a cycle that places nothing (cancels, expiries) plans its statements as before.
_CYCLE_WRITE_PLANS = (
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
)
# A kept plan is made for the tables as they were: PostgreSQL makes it again when ANALYZE has
# looked at one of them since, but a new table grows for a minute or more before autovacuum
# does, and a plan made while a table was nearly empty may read the whole of it (a materialized
# scan where index probes belong). So every this many cycles the writer has its connection's
# plans made anew (DISCARD PLANS, sent with a commit), for the tables' sizes then: under load, a
# quarter of a millisecond of planning about twice a second.
_REPLAN_EVERY = 256


@functools.cache
def _cycle_read_sql(dialect: Dialect) -> str:
    """``_known_orders_sql`` ($1 to $5), the balances of keys ($6 and $7) locked, and $8 new
    order ids taken from the orders' id sequence, in one statement: one row of two arrays of
    records (the balances', the orders') and an array of ids. It also sets the plans of the
    rest of the cycle's transaction (``_CYCLE_WRITE_PLANS``)."""
    balances = repository.balances_sql(lock=True, first=6)
    sequence = f"pg_get_serial_sequence('{dialect.identifier_preparer.format_table(_ORDERS)}', 'id')"
    settings = "".join(f", set_config('{name}', '{value}', true)" for name, value in _CYCLE_WRITE_PLANS)
    # Every text is built here from the tables' own identifiers and the constants above; every
    # value is a parameter.
    return (
        f"WITH locked AS ({balances}), known AS ({_known_orders_sql(dialect)})"  # noqa: S608
        " SELECT (SELECT array_agg(ROW(locked.*)) FROM locked), (SELECT array_agg(ROW(known.*)) FROM known),"
        f" ARRAY(SELECT nextval({sequence}) FROM generate_series(1, $8::integer))"
        f"{settings}"
    )


_CANDLE_COLUMNS = tuple(_CANDLES.c[name] for name in CANDLE_VALUES)
_CANDLE_SQL = (
    'SELECT "open", "high", "low", "close", "volume", "quote_volume", "trades" FROM trading_candles'
    " WHERE market_id = $1 AND resolution_s = $2 AND start_unix = $3"
)

QUEUE_LIMIT = 20_000
# A committed cycle's answers (each intent with its settled outcome or its refusal) and its feed report.
_Answers = tuple[list[tuple[Intent, object]], CycleReport | None]
_MAKER_LEVELS = 32  # price levels, and resting orders, a cycle's first balance read looks at
_MAKER_ORDERS = 256


# --------------------------------------------------------------------------- one cycle's work


class _Cycle:
    """The working state of one cycle: balances read so far and everything to write."""

    def __init__(self, db: bulk.Target, now: datetime, start_sequence: int, now_unix: int) -> None:
        self.db = db  # a session, or on PostgreSQL the asyncpg connection in the cycle's transaction
        self.now = now
        self.now_unix = now_unix  # the writer's clock at the cycle's start: every expiry judged by it
        self.start_sequence = start_sequence  # the journal head this cycle builds on
        self.balances: dict[BalanceKey, Balance] = {}
        self.loaded: set[BalanceKey] = set()
        self.existing: set[BalanceKey] = set()
        self.changed: set[BalanceKey] = set()
        self.entries: list[tuple[Posting, str, str]] = []
        self.new_orders: dict[int, OrderRow] = {}  # by sequence
        self.touched_orders: dict[int, OrderRow] = {}  # existing rows, by sequence
        self.cancels: list[dict[str, Any]] = []
        self.fills: list[dict[str, Any]] = []
        self.placed: dict[tuple[str, str], OrderRow] = {}  # (account, client order id) of this batch
        self.nonces: set[tuple[str, int]] = set()
        self.hashes: set[str] = set()
        self.levels: dict[tuple[Side, int], tuple[int, int]] = {}  # L2 after the cycle, for the feed
        self.reads = 0  # balance queries
        # Ids the first read took for the orders the cycle may place (one for each placement),
        # highest first.
        self.order_ids: list[int] = []

    def order_id(self) -> int:
        """The id of the next order the cycle places."""
        return self.order_ids.pop()

    async def load(self, keys: Iterable[BalanceKey]) -> None:
        missing = {key for key in keys if key not in self.loaded}
        if not missing:
            return
        self.reads += 1
        found = await repository.load_balances(self.db, missing, yielding=False)  # others yield to it
        self.balances.update(found)
        self.existing.update(found)
        self.loaded.update(missing)

    def post(self, postings: list[Posting], cause: str, reference: str) -> None:
        """Apply postings to the working balances (all their keys loaded); LedgerError if refused."""
        changed = ledger.apply(self.balances, postings)
        self.balances.update(changed)
        self.changed.update(changed)
        self.entries.extend((posting, cause, reference) for posting in postings)

    def touch(self, row: OrderRow) -> None:
        row.updated_at = self.now
        if row.sequence not in self.new_orders:
            self.touched_orders[row.sequence] = row


# --------------------------------------------------------------------------- the writer


@dataclass(slots=True)
class WriterStats:
    """What a writer did since it started (``GET /metrics``)."""

    cycles: int = 0  # committed cycles
    commands: int = 0  # intents those cycles took (probes included)
    cycle_seconds: float = 0.0  # the committed cycles' time, read to commit
    failed_cycles: int = 0  # cycles rolled back (each followed by a recovery)


class MarketWriter:
    """Owns one market's book; see the module docstring."""

    def __init__(
        self,
        market: MarketSpec,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_batch: int = 2000,
        checkpoint_every: int = 10_000,
        expiry_margin_s: int = 30,
        verify_replay: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.market = market
        self.market_id = market.market_id
        self._sessionmaker = sessionmaker
        self._max_batch = max_batch
        self._checkpoint_every = checkpoint_every
        self._expiry_margin_s = expiry_margin_s
        self._verify_replay = verify_replay
        self._clock = clock
        self._queue: asyncio.Queue[Intent | object] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.book = OrderBook(market.book_config())
        self.sequence = 0
        self.checkpoint_sequence = 0
        self.live: dict[int, OrderRow] = {}  # resting orders by sequence
        self._expiries: list[tuple[int, int]] = []  # (leave book at, sequence)
        # resting orders none of whose fills could settle (fee cap below the maker fee, or a
        # wallet refusing its signature): by sequence, with the cause they are cancelled for
        self._unsettleable: list[tuple[int, CancelCause]] = []
        self._candles: dict[int, Candle] = {}  # by resolution: the latest stored candle
        self.stats = WriterStats()
        self.listener: CycleListener | None = None  # told of every committed cycle and every recovery
        # The cycles' connection, held between cycles: no pool checkout (and liveness ping) per
        # cycle. Dropped after a failed cycle and when the loop ends; the next cycle opens another.
        self._connection: AsyncConnection | None = None
        # Whether the transaction open on it is the one a commit began for the next cycle
        # (``_cycle_transaction``): the only one a cycle may go on in.
        self._carried = False
        self._planned_cycles = 0  # cycles committed on it since its plans were last made anew
        # The head (its state hash costs an encoding of the whole book) of one book state, and
        # the last one probed for readers content with a recent head (``recent_head``).
        self._head: tuple[int, OrderBook, JournalHead] | None = None
        self._recent_head: tuple[float, JournalHead] | None = None
        self._head_probe: asyncio.Future[JournalHead] | None = None
        # The outcomes, changes and journal head of the cycle being committed, kept until the
        # commit's answer: a cycle whose commit failed but whose head the journal holds committed.
        self._committing: tuple[list[tuple[Intent, object]], _Cycle, int] | None = None
        # A committed cycle's outcomes and changes not answered yet: commands were waiting when
        # it committed, so the next cycle began at once, and they go out while that one waits
        # for its write (``_answer_held``).
        self._held: _Answers | None = None
        self._batch: list[Intent] = []  # the batch of the cycle under way
        bind = sessionmaker.kw["bind"]
        self._engine: AsyncEngine = bind if isinstance(bind, AsyncEngine) else bind.engine
        self.claim = MarketClaim(self._engine, self.market_id)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.claim.take()
        try:
            await self._recover()
            if self._unsettleable:
                # Before the loop takes intents: no intent ever meets an order it could not trade with.
                await self._cycle_or_recover([])
                self._answer_held()  # nothing waits for it but the feed
        except BaseException:
            await self.claim.release()
            raise
        self._task = asyncio.create_task(self._run(), name=f"trading-writer-{self.market_id}")

    async def stop(self) -> None:
        """Finish what is queued, write a checkpoint, and stop (giving the market up). A writer that
        had already stopped on a failure just gives the market up: its failure is not raised again."""
        try:
            if self._task is None:
                return
            if not self._task.done():
                await self._queue.put(STOP)
            try:
                await self._task
            except MarketOwned:
                pass  # it stopped when another process took the market
            except Exception as error:
                # It stopped on a failure logged as it happened (a recovery that failed): its book
                # is not the journal's, so no checkpoint of it; the market is given up all the same.
                log.info("trading.writer_had_failed", market=self.market_id, error=repr(error))
                self._task = None
                return
            self._task = None
            if self.sequence == self.checkpoint_sequence:
                return
            try:
                async with self._sessionmaker() as session, session.begin():
                    await self._checkpoint(session)
            except Exception:
                log.exception("trading.checkpoint_failed", market=self.market_id)
        finally:
            await self.claim.release()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def enqueue(self, intent: Intent) -> None:
        """Queue ``intent`` now, behind everything queued before it; its future carries the outcome."""
        if not self.running:
            raise WriterUnavailable(f"market {self.market_id} is not accepting commands right now")
        try:
            self._queue.put_nowait(intent)
        except asyncio.QueueFull:
            raise RateLimited(
                f"market {self.market_id} has {QUEUE_LIMIT} commands waiting; retry shortly",
                retry_after_seconds=1,
            ) from None

    async def submit(self, intent: Intent) -> Any:
        """Queue ``intent`` and wait for its outcome (raised as a domain error when refused)."""
        self.enqueue(intent)
        return await intent.future

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        ended = False
        try:
            await self._loop()
            ended = True
        except MarketOwned:
            raise  # logged as it was found (``trading.market_taken_over``)
        except Exception:
            # Whatever ended the loop (a recovery that failed, or anything else): the market
            # answers 503 from now on, and this is its record (``stop`` does not raise it again).
            log.exception("trading.writer_stopped", market=self.market_id)
            raise
        finally:
            self._answer_held()  # committed: their answers stand whatever ended the loop
            if not ended:
                # Cancelled or failed mid-cycle: that batch is off the queue and unanswered (a
                # future answered stays so); its cycle may have committed, so a retry tells.
                stopped = WriterUnavailable(
                    f"market {self.market_id} stopped while recording this command; retry it (a "
                    "command that was recorded answers as such)"
                )
                for intent in self._batch:
                    fail(intent.future, stopped)
            await self._drop_connection(failed=not ended)  # cancelled or failed: maybe mid-cycle
            gone = WriterUnavailable(f"market {self.market_id} stopped accepting commands")
            if not ended and self.listener is not None:
                # Taken by another process, or a recovery that failed: what the listener holds
                # no longer follows the journal, and nothing here will bring it up to date.
                self.listener.stopped(
                    WriterUnavailable(
                        f"market {self.market_id} is no longer written by this process; its book "
                        "here is not current: reconnect (to another process) and subscribe again"
                    )
                )
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(
                    item, PlaceIntent | ReplaceIntent | CancelIntent | CancelAllIntent | ProbeIntent
                ):
                    fail(item.future, gone)

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Intent] = []
            timeout = self._until_next_expiry()
            if self.claim.checked:
                timeout = market_claim.CHECK_S if timeout is None else min(timeout, market_claim.CHECK_S)
            if not self._queue.empty():
                # Taken at once, not awaited: with a timeout, Python 3.11's `wait_for` runs the
                # get as a task whose first step waits behind every callback already ready, and
                # after a cycle those are the requests it just answered. The next cycle would
                # start only once all their responses were written; so it starts now and they
                # are written while it waits on the database.
                first = self._queue.get_nowait()
            else:
                self._answer_held()
                await self._idle()
                try:
                    first = await asyncio.wait_for(self._queue.get(), timeout=timeout)
                except TimeoutError:
                    first = None
            if first is STOP:
                stopping = True
            elif first is not None:
                batch.append(first)  # type: ignore[arg-type]
            self._batch = batch  # off the queue: answered by the loop's end if by nothing else
            if self.claim.due:
                # The check may take a while: no answer waits for it, nor an open transaction.
                self._answer_held()
                await self._idle()
            try:
                await self.claim.keep()
            except MarketOwned:
                self._fail_all(batch)
                raise
            while len(batch) < self._max_batch and not self._queue.empty() and not stopping:
                item = self._queue.get_nowait()
                if item is STOP:
                    stopping = True
                else:
                    batch.append(item)  # type: ignore[arg-type]
            if (
                batch
                and not self._unsettleable
                and not self._expiry_due()
                and all(isinstance(intent, ProbeIntent) for intent in batch)
            ):
                self._answer_held()
                head = self.head()  # nothing to journal: no transaction
                for probe in batch:
                    resolve(probe.future, head)
            elif batch or self._expiry_due():
                await self._cycle_or_recover(batch)
            else:
                self._answer_held()

    def _until_next_expiry(self) -> float | None:
        while self._expiries and self._expiries[0][1] not in self.live:
            heapq.heappop(self._expiries)  # filled or cancelled since
        if not self._expiries:
            return None
        return max(0.05, self._expiries[0][0] - self._clock() + 0.01)

    def _expiry_due(self) -> bool:
        return bool(self._expiries) and self._expiries[0][0] <= self._clock()

    async def _cycle_or_recover(self, batch: list[Intent]) -> None:
        start_sequence, self._committing = self.sequence, None
        self._batch = batch
        started = time.perf_counter()
        try:
            outcomes, cycle = await self._cycle(batch)
        except Exception as error:
            self._answer_held()  # the cycle before committed
            self.stats.failed_cycles += 1
            log.exception("trading.cycle_failed", market=self.market_id, commands=len(batch))
            committing = self._take_committing()
            try:
                await self._drop_connection(failed=True)
                try:
                    await self._recover()
                except Exception:
                    log.exception("trading.recovery_failed", market=self.market_id)
                    raise error from None
                if committing is not None and start_sequence < committing[2] == self.sequence:
                    # The journal holds the cycle: it committed and only its answer was lost (or
                    # what came after the commit failed). Its outcomes are the truth; the rebuilt
                    # book's snapshot shows its levels, so the feed gets its trades and orders only.
                    log.warning(
                        "trading.cycle_committed_after_all", market=self.market_id, sequence=self.sequence
                    )
                    self._answer(committing[0], committing[1], levels=False)
            finally:
                self._fail_all(batch)  # whatever is not answered by now (a future answered stays so)
                self._batch = []
            return
        self.stats.cycles += 1
        self.stats.commands += len(batch)
        self.stats.cycle_seconds += time.perf_counter() - started
        self._answer_held()  # (the cycle's write answered them already)
        self._batch = []
        if self._queue.empty():
            self._answer(outcomes, cycle, levels=True)
        else:
            # The next cycle begins at once. Answered now, these requests' responses would be
            # written before that cycle's first read is looked at (the loop runs what is ready
            # in turn), and the cycle would wait for all of them; they go out while it waits
            # for its write instead, the longest of its waits for the database. What they say
            # is fixed now, as committed.
            self._held = self._answers(outcomes, cycle, levels=True, copied=True)

    def _answer_held(self) -> None:
        """Answer the committed cycle whose answers were held for the next one (``_held``)."""
        held, self._held = self._held, None
        if held is not None:
            self._send(held)

    def _take_committing(self) -> tuple[list[tuple[Intent, object]], _Cycle, int] | None:
        committing, self._committing = self._committing, None
        return committing

    def _fail_all(self, batch: list[Intent]) -> None:
        unavailable = WriterUnavailable(
            f"market {self.market_id} could not record this command; nothing was done, retry it"
        )
        for intent in batch:
            fail(intent.future, unavailable)

    def _answer(self, outcomes: list[tuple[Intent, object]], cycle: _Cycle, *, levels: bool) -> None:
        self._send(self._answers(outcomes, cycle, levels=levels))

    def _answers(
        self, outcomes: list[tuple[Intent, object]], cycle: _Cycle, *, levels: bool, copied: bool = False
    ) -> _Answers:
        """A committed cycle's answers (``settled`` copies the rows) and feed report as they are
        at its commit, to send now or, ``copied`` (the report's rows too), once the next cycle
        has sent its write."""
        return (
            [
                (intent, outcome if isinstance(outcome, BaseException) else settled(outcome))
                for intent, outcome in outcomes
            ],
            self._report(cycle, levels=levels, copied=copied),
        )

    def _send(self, answers: _Answers) -> None:
        settled_outcomes, report = answers
        for intent, outcome in settled_outcomes:
            if isinstance(outcome, BaseException):
                fail(intent.future, outcome)
            else:
                resolve(intent.future, outcome)
        # Then the feed: the waiting requests resume first, so their acknowledgements do not
        # queue behind the cycle's WebSocket deliveries (one frame per book subscriber).
        if report is not None and self.listener is not None:
            try:
                self.listener.committed(report)
            except Exception:
                log.exception("trading.feed_failed", market=self.market_id, sequence=report.sequence)

    # ------------------------------------------------------------------ one cycle

    async def _held_connection(self) -> AsyncConnection:
        """The connection the writer holds (opened first if there is none)."""
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            connection = await self._engine.connect()
            if connection.dialect.name == "postgresql":
                for setting in _CUSTOM_PLANS:
                    await connection.exec_driver_sql(setting)
                await connection.commit()
            self._connection = connection
            self._planned_cycles = 0  # its plans are new (_DEFAULT_PLANS discarded a pooled one's)
        return self._connection

    @contextlib.asynccontextmanager
    async def _cycle_transaction(self) -> AsyncIterator[bulk.Target]:
        """One transaction on the held connection, committed when the block ends without an error.

        On PostgreSQL the cycle runs on the asyncpg connection itself (exchange.db.bulk.Raw): a
        cycle is a few statements and no ORM, and a session's work around each statement cost
        more of the writer's CPU than the statements. Elsewhere it is a session.

        On PostgreSQL, when commands are already waiting as the cycle commits, the next cycle's
        ``BEGIN`` goes with the ``COMMIT`` (one round trip, ``_carried``): under load every
        wait for the database is a wait behind the loop's other work, so each round trip a
        cycle saves shortens it by more than the database's time. A carried transaction has
        run nothing (no snapshot, no locks); the writer ends it before it waits idle. Every
        ``_REPLAN_EVERY`` cycles the commit also discards the connection's kept plans.
        """
        connection = await self._held_connection()
        if connection.dialect.name == "postgresql":
            driver: Any = (await connection.get_raw_connection()).driver_connection
            carried, self._carried = self._carried, False
            if driver.is_in_transaction() and not carried:
                await driver.execute("ROLLBACK")  # never a cycle's own, and nothing to go on with
            if not driver.is_in_transaction():
                await driver.execute("BEGIN")
            yield bulk.Raw(driver, connection.dialect)  # on an error: the connection is discarded
            carry = not self._queue.empty()
            self._planned_cycles += 1
            replan = self._planned_cycles >= _REPLAN_EVERY
            commit = "COMMIT; DISCARD PLANS" if replan else "COMMIT"
            await driver.execute(f"{commit}; BEGIN" if carry else commit)
            self._carried = carry
            if replan:
                self._planned_cycles = 0
            return
        async with self._sessionmaker(bind=connection) as session, session.begin():
            yield session

    @staticmethod
    async def _end_carried(connection: AsyncConnection | None) -> None:
        """End the transaction a commit began on ``connection`` for the next cycle
        (``_cycle_transaction``), if any: it should not idle open."""
        if connection is None or connection.closed or connection.invalidated:
            return
        if connection.dialect.name != "postgresql":
            return
        driver: Any = (await connection.get_raw_connection()).driver_connection
        if driver.is_in_transaction():
            await driver.execute("ROLLBACK")

    async def _idle(self) -> None:
        """Before the writer waits for commands or for a claim check: no transaction left open on
        its connection (a connection that cannot end it is discarded; the next cycle opens another)."""
        try:
            await self._end_carried(self._connection)
            self._carried = False
        except Exception:
            log.warning("trading.connection_lost", market=self.market_id, exc_info=True)
            await self._drop_connection(failed=True)

    async def _drop_connection(self, *, failed: bool = False) -> None:
        """Give the held connection back to the pool, or discard it after a ``failed`` cycle.

        A failed cycle on PostgreSQL ran on the asyncpg connection behind SQLAlchemy's back
        (``_cycle_transaction``): whatever state its transaction was left in, SQLAlchemy
        cannot see it, so the connection is discarded rather than reset and pooled.
        """
        connection, self._connection = self._connection, None
        self._carried = False
        if connection is None:
            return
        try:
            if connection.dialect.name == "postgresql" and failed:
                await connection.invalidate()
            elif connection.dialect.name == "postgresql" and not connection.invalidated:
                await self._end_carried(connection)
                await connection.rollback()
                for setting in _DEFAULT_PLANS:
                    await connection.exec_driver_sql(setting)
                await connection.commit()
            await connection.close()
        except Exception:
            log.warning("trading.connection_close_failed", market=self.market_id, exc_info=True)
            with contextlib.suppress(Exception):
                await connection.invalidate()  # never back to the pool with the writer's setting

    async def _cycle(self, batch: list[Intent]) -> tuple[list[tuple[Intent, object]], _Cycle]:
        """Run ``batch`` in one committed transaction: each intent's outcome, and the cycle's changes."""
        started = time.perf_counter()
        now = utc_now()
        now_unix = int(self._clock())
        outcomes: list[tuple[Intent, object]] = []
        async with self._cycle_transaction() as db:
            cycle = _Cycle(db, now, self.sequence, now_unix)
            places = [intent for intent in batch if isinstance(intent, PlaceIntent | ReplaceIntent)]
            keys = {
                (account, token)
                for account in self._accounts_in_play(places)
                for token in (self.market.base_token, self.market.quote_token)
            }
            known = await self._read(cycle, places, keys)
            read = time.perf_counter()
            await self._expire(cycle)
            await self._cancel_unsettleable(cycle)
            probes: list[ProbeIntent] = []
            for intent in batch:
                if isinstance(intent, PlaceIntent):
                    outcome: object = await self._place(cycle, intent.order, known)
                elif isinstance(intent, ReplaceIntent):
                    outcome = await self._replace(cycle, intent, known)
                elif isinstance(intent, CancelIntent):
                    outcome = await self._cancel(cycle, intent)
                elif isinstance(intent, CancelAllIntent):
                    outcome = await self._cancel_all(cycle, intent)
                else:
                    probes.append(intent)
                    continue
                outcomes.append((intent, outcome))
            matched = time.perf_counter()
            await self._write(cycle)
            written = time.perf_counter()
            for probe in probes:
                outcomes.append((probe, self.head()))
            # What the cycle answers should its commit fail after all (``_cycle_or_recover``).
            self._committing = (outcomes, cycle, self.sequence)
        log.debug(
            "trading.cycle",
            market=self.market_id,
            commands=len(batch),
            sequence=self.sequence,
            ms=round((time.perf_counter() - started) * 1000, 2),
            read_ms=round((read - started) * 1000, 2),
            match_ms=round((matched - read) * 1000, 2),
            write_ms=round((written - matched) * 1000, 2),
            balance_reads=cycle.reads,
        )
        return outcomes, cycle

    def _report(self, cycle: _Cycle, *, levels: bool = True, copied: bool = False) -> CycleReport | None:
        """What the committed cycle changed, for the listener; without its ``levels`` when the
        listener was given the book since. None when there is no listener or nothing to tell.
        The rows are the writer's own, which the next cycle goes on changing (the listener takes
        what it needs at once), or ``copied`` for a report sent later."""
        changed = cycle.levels if levels else {}
        if self.listener is None or not (changed or cycle.fills or cycle.new_orders or cycle.touched_orders):
            return None
        return CycleReport(
            sequence=self.sequence,
            time=cycle.now,
            levels=changed,
            fills=cycle.fills,
            orders=[
                copy.copy(row) if copied else row
                for row in (*cycle.new_orders.values(), *cycle.touched_orders.values())
            ],
        )

    @property
    def queued(self) -> int:
        """Intents waiting for a cycle."""
        return self._queue.qsize()

    def head(self) -> JournalHead:
        """The journal head now; the state hash is computed once per state of the book."""
        cached = self._head
        if cached is not None and cached[0] == self.sequence and cached[1] is self.book:
            return cached[2]
        head = JournalHead(
            market_id=self.market_id,
            sequence=self.sequence,
            state_hash=self.book.state_hash().hex(),
            open_orders=len(self.book),
        )
        self._head = (self.sequence, self.book, head)
        return head

    async def recent_head(self, max_age_s: float) -> JournalHead:
        """A journal head probed at most ``max_age_s`` ago (``head`` behind what is queued now).

        Callers within that time, and callers while a probe is under way, share one probe: the
        book is hashed at most once per ``max_age_s``, however many ask.
        """
        recent = self._recent_head
        if recent is not None and time.monotonic() - recent[0] < max_age_s:
            return recent[1]
        probe = self._head_probe
        if probe is None:
            probe = self._head_probe = asyncio.ensure_future(self.submit(ProbeIntent()))

            def probed(future: asyncio.Future[JournalHead]) -> None:
                self._head_probe = None
                if not future.cancelled() and future.exception() is None:
                    self._recent_head = (time.monotonic(), future.result())

            probe.add_done_callback(probed)
        return await asyncio.shield(probe)

    async def _read(
        self, cycle: _Cycle, places: list[PlaceIntent | ReplaceIntent], keys: set[BalanceKey]
    ) -> list[OrderRow]:
        """The cycle's first read: the orders already journaled that the batch's orders could
        repeat (``_known_orders``), and the balances of ``keys`` locked (``_Cycle.load``).

        It also takes an id for each order the batch may place (``_Cycle.order_ids``): the fills
        name their orders by id in the same write. On PostgreSQL all of it is one statement, one
        round trip (``_cycle_read_sql``), the ids from the orders' sequence; the keys without a
        balance row then get theirs, created and locked (an insert and a read). On SQLite the
        ids follow the highest one, as SQLite numbers a new row itself: the cycle's transaction
        holds the database's write lock from its start (every transaction begins IMMEDIATE).
        """
        db = cycle.db
        if isinstance(db, AsyncSession):
            known = await self._known_orders(db, places)
            await cycle.load(keys)
            if places:
                highest = int(await db.scalar(_HIGHEST_ORDER_ID) or 0)
                cycle.order_ids = list(range(highest + len(places), highest, -1))
            return known
        if not places:
            await cycle.load(keys)
            return []
        balances, orders, order_ids, *_ = await db.driver.fetchrow(
            _cycle_read_sql(db.dialect),
            *self._known_arguments(places, db.dialect),
            *repository.balance_keys(keys),
            len(places),  # each places at most one order
        )
        cycle.order_ids = sorted(order_ids, reverse=True)
        columns = repository.BALANCE_COLUMNS
        found = repository.found_balances(bulk.decoded(db.dialect, balances or (), columns))
        cycle.reads += 1
        absent = keys - found.keys()
        if absent:  # an account's first balance of a token: its row is created
            found.update(await repository.created_balances(db, absent))
            cycle.reads += 1
        cycle.balances.update(found)
        cycle.existing.update(found)
        cycle.loaded.update(keys)
        return self._known_rows(
            dict(zip(_ORDER_COLUMN_NAMES, values, strict=True))
            for values in bulk.decoded(db.dialect, orders or (), _ORDER_COLUMNS)
        )

    @staticmethod
    def _known_keys(
        places: list[PlaceIntent | ReplaceIntent],
    ) -> tuple[list[tuple[str, str]], list[tuple[str, int]], list[str]]:
        """The (account, client order id) and (account, nonce) pairs and order hashes of ``places``."""
        client_ids = sorted({(intent.order.account, intent.order.client_order_id) for intent in places})
        nonces = sorted({(intent.order.account, intent.order.nonce) for intent in places})
        hashes = sorted({intent.order.order_hash for intent in places})
        return client_ids, nonces, hashes

    def _known_arguments(self, places: list[PlaceIntent | ReplaceIntent], dialect: Dialect) -> list[Any]:
        """The five parameters of ``_known_orders_sql`` for ``places``."""
        client_ids, nonces, hashes = self._known_keys(places)
        nonce = _ORDERS.c.nonce
        return [
            [account for account, _ in client_ids],
            [client_id for _, client_id in client_ids],
            [account for account, _ in nonces],
            [bulk.bind_value(nonce, dialect, number) for _, number in nonces],
            hashes,
        ]

    async def _known_orders(
        self, session: AsyncSession, places: list[PlaceIntent | ReplaceIntent]
    ) -> list[OrderRow]:
        """Orders already journaled that share an account's client order id or nonce, or an order
        hash (off PostgreSQL; there ``_cycle_read_sql`` reads them)."""
        if not places:
            return []
        client_ids, nonces, hashes = self._known_keys(places)
        # Core rows, not ORM objects: the writer keeps its own OrderRow copies.
        found = await session.execute(
            _KNOWN_ORDERS,
            {"client_ids": padded(client_ids), "nonces": padded(nonces), "hashes": padded(hashes)},
        )
        return self._known_rows(found.mappings())

    def _known_rows(self, rows: Iterable[Mapping[Any, Any]]) -> list[OrderRow]:
        """The writer's rows of the orders ``rows`` read (its live copy of a resting order)."""
        known: dict[int, OrderRow] = {}
        for mapping in rows:
            if mapping["id"] in known:  # an order can match more than one part
                continue
            row = self.live.get(mapping["sequence"]) if mapping["market_id"] == self.market_id else None
            if row is None:
                row = OrderRow(**{name: mapping[name] for name in ORDER_FIELDS})
            known[mapping["id"]] = row
        return list(known.values())

    def _accounts_in_play(self, places: list[PlaceIntent | ReplaceIntent]) -> set[str]:
        """The accounts whose balances the batch will likely move, so one read locks them all.

        The placing accounts, and the owners of the resting orders the batch's crossing
        orders could reach (walking each opposite side from its best price, up to the
        amount placed against it), plus the fee account when anything may trade. A maker
        this guess misses is read when its fill happens, as before.
        """
        accounts = {intent.order.account for intent in places}
        depth: Depth | None = None
        for side in (Side.BUY, Side.SELL):
            orders = [intent.order for intent in places if intent.order.side is side]
            if not orders:
                continue
            if depth is None:
                depth = self.book.depth(_MAKER_LEVELS)
            opposite, maker_side = (depth.asks, Side.SELL) if side is Side.BUY else (depth.bids, Side.BUY)
            wanted = sum(order.amount_base for order in orders)
            limit = (
                max(o.price_ticks for o in orders) if side is Side.BUY else min(o.price_ticks for o in orders)
            )
            seen = 0
            for level in opposite:
                crosses = level.price_ticks <= limit if side is Side.BUY else level.price_ticks >= limit
                if not crosses or wanted <= 0 or seen >= _MAKER_ORDERS:
                    break
                makers = self.book.level_accounts(maker_side, level.price_ticks, _MAKER_ORDERS - seen)
                accounts.update(makers)
                seen += len(makers)
                accounts.add(FEES_ACCOUNT)
                wanted -= level.amount_base
        return accounts

    # ------------------------------------------------------------------ commands

    async def _place(self, cycle: _Cycle, order: CheckedOrder, known: list[OrderRow]) -> object:
        duplicate = self._duplicate(cycle, order, known)
        if isinstance(duplicate, OrderRow):
            return Placed(duplicate, created=False)
        if duplicate is not None:
            return duplicate
        late = self._too_late(cycle, order)
        if late is not None:
            return late
        reference = f"order:{order.order_hash}"
        reservation = ledger.reserve(order.account, order.reserve_token, order.reserve_amount)
        before = {key: cycle.balances.get(key) for key in ((order.account, order.reserve_token),)}
        try:
            changed = ledger.apply(cycle.balances, reservation)
        except LedgerError:
            return self._short(order, (before[(order.account, order.reserve_token)] or Balance()).available)
        sequence = self.sequence + 1
        events = self.book.apply(
            PlaceLimit(
                sequence,
                order.account,
                order.side,
                order.price_ticks,
                order.amount_base,
                TIME_IN_FORCE[order.time_in_force],
            )
        )
        first = events[0]
        if isinstance(first, Rejected):
            if first.reason is RejectReason.WOULD_TAKE:
                return PostOnlyWouldTake("the post-only order would trade at once; nothing was placed")
            raise RecoveryFailed(f"the book rejected a checked order: {first.reason.value}")
        self.sequence = sequence
        cycle.balances.update(changed)
        cycle.changed.update(changed)
        cycle.entries.extend((posting, ORDER_RESERVE_CAUSE, reference) for posting in reservation)
        row = OrderRow(
            id=cycle.order_id(),
            market_id=self.market_id,
            sequence=sequence,
            account=order.account,
            client_order_id=order.client_order_id,
            side=order.side.value,
            price_quote=order.price_quote,
            amount_base=order.amount_base,
            max_fee_bps=order.max_fee_bps,
            nonce=order.nonce,
            expiry_unix=order.expiry_unix,
            order_hash=order.order_hash,
            signature=order.signature,
            time_in_force=order.time_in_force,
            status=OrderStatus.OPEN.value,
            filled_base=0,
            remaining_base=order.amount_base,
            reserved_token=order.reserve_token,
            reserved_amount=order.reserve_amount,
            cancel_cause=None,
            cost_quote=0,
            fee_quote=0,
            last_trade_at=None,
            created_at=cycle.now,
            updated_at=cycle.now,
        )
        cycle.new_orders[sequence] = row
        cycle.placed[(order.account, order.client_order_id)] = row
        cycle.nonces.add((order.account, order.nonce))
        cycle.hashes.add(order.order_hash)
        await self._apply_events(cycle, events, row, CancelCause.USER)
        if sequence in self.book.orders:
            self.live[sequence] = row
            heapq.heappush(self._expiries, (self._leave_at(row.expiry_unix), sequence))
        elif row.status == OrderStatus.OPEN:
            row.status = OrderStatus.CLOSED.value
            await self._release(cycle, row)
        return Placed(row, created=True)

    async def _replace(self, cycle: _Cycle, intent: ReplaceIntent, known: list[OrderRow]) -> object:
        """Cancel the open order and place its replacement, or do neither.

        A resend of a replacement already placed answers it (nothing else happens). The same
        order placed on its own (``POST /v1/orders``) while the order to replace is still open
        was not placed in its stead: that is a conflict, and nothing happens. Otherwise
        everything that could refuse the replacement once the order is cancelled is checked
        first, against the state the cancel would leave: its identity (client order id, nonce,
        hash), the funds it reserves with the order's reservation released, and whether a
        post-only replacement would take with the order gone. So the order is cancelled only
        when its replacement is placed, both in this cycle's one transaction."""
        order = intent.order
        row = self.live.get(intent.order_sequence)
        if row is not None and row.account != intent.account:
            row = None
        duplicate = self._duplicate(cycle, order, known)
        if isinstance(duplicate, OrderRow):
            if row is not None:  # placed on its own (or it is the order itself), not in its stead
                return OrderConflict(
                    f"client order id {order.client_order_id!r} names an order placed before, not in "
                    "the stead of this order, which is still open: nothing was replaced",
                    extra={"client_order_id": order.client_order_id},
                )
            return Placed(duplicate, created=False)
        if duplicate is not None:
            return duplicate
        if row is None:
            return OrderNotOpen("the order has ended (filled, cancelled or expired): nothing was replaced")
        late = self._too_late(cycle, order)
        if late is not None:
            return late
        await cycle.load([(order.account, order.reserve_token)])
        balance = cycle.balances.get((order.account, order.reserve_token)) or Balance()
        available = balance.available + (
            row.reserved_amount if row.reserved_token == order.reserve_token else 0
        )
        if order.reserve_amount > available:
            return self._short(order, available)
        if order.time_in_force == StoredTimeInForce.PO and self._would_take(order, row):
            return PostOnlyWouldTake("the post-only order would trade at once; nothing was replaced")
        await self._cancel_resting(cycle, row, CancelCause.REPLACED)
        placed = await self._place(cycle, order, known)
        if not isinstance(placed, Placed):  # checked above: the book and the ledger disagree with them
            raise RecoveryFailed(
                f"the replacement of order {row.id} was refused after its cancel: {placed!r}"
            )
        return placed

    def _too_late(self, cycle: _Cycle, order: CheckedOrder) -> OrderExpired | None:
        """Intake's expiry check again, as of this cycle: an order that waited (a chain call,
        a long queue) until its time to leave the book is refused, never matched. By the
        cycle's one clock reading, so a replace's check and its place's agree."""
        if self._leave_at(order.expiry_unix) > cycle.now_unix:
            return None
        return OrderExpired(
            f"the order expires at {order.expiry_unix} and had to leave the book "
            f"{self._expiry_margin_s} s before that, by the time it was to be placed",
            extra={"field": "expiry"},
        )

    def _would_take(self, order: CheckedOrder, replaced: OrderRow) -> bool:
        """Whether ``order`` would trade at once with ``replaced`` gone from the book."""
        depth = self.book.depth(2)
        opposite = depth.asks if order.side is Side.BUY else depth.bids
        replaced_side = Side.BUY if replaced.is_buy else Side.SELL
        replaced_ticks = replaced.price_quote // self.market.tick_size_quote
        if (
            opposite
            and replaced_side is not order.side
            and opposite[0].price_ticks == replaced_ticks
            and opposite[0].order_count == 1
        ):
            opposite = opposite[1:]  # the replaced order was alone at the best price
        if not opposite:
            return False
        best = opposite[0].price_ticks
        return best <= order.price_ticks if order.side is Side.BUY else best >= order.price_ticks

    @staticmethod
    def _short(order: CheckedOrder, available: int) -> LedgerRefused:
        return LedgerRefused(
            f"this order reserves {order.reserve_amount} of {order.reserve_token}; {available} is available",
            extra={
                "token": order.reserve_token,
                "needed": str(order.reserve_amount),
                "available": str(available),
            },
        )

    def _duplicate(self, cycle: _Cycle, order: CheckedOrder, known: list[OrderRow]) -> object | None:
        """The first answer (same order again) or a conflict, when the order reuses an identity."""
        same_client_id = cycle.placed.get((order.account, order.client_order_id))
        if same_client_id is None:
            same_client_id = next(
                (
                    row
                    for row in known
                    if row.account == order.account and row.client_order_id == order.client_order_id
                ),
                None,
            )
        if same_client_id is not None:
            if same_client_id.order_hash == order.order_hash and same_client_id.market_id == order.market_id:
                return same_client_id
            return OrderConflict(
                f"client order id {order.client_order_id!r} was already used for another order",
                extra={"client_order_id": order.client_order_id},
            )
        if order.order_hash in cycle.hashes or any(row.order_hash == order.order_hash for row in known):
            return OrderConflict(
                "this signed order was already placed under another client order id",
                extra={"order_hash": order.order_hash},
            )
        if (order.account, order.nonce) in cycle.nonces or any(
            row.account == order.account and row.nonce == order.nonce for row in known
        ):
            return OrderConflict(
                f"nonce {order.nonce} was already used by another of your orders",
                extra={"nonce": str(order.nonce)},
            )
        return None

    async def _cancel(self, cycle: _Cycle, intent: CancelIntent) -> bool:
        row = self.live.get(intent.order_sequence)
        if row is None or row.account != intent.account:
            return False
        await self._cancel_resting(cycle, row, intent.cause)
        return True

    async def _cancel_all(self, cycle: _Cycle, intent: CancelAllIntent) -> list[OrderRow]:
        if intent.account not in self.book.accounts:
            return []
        events = self.book.apply(CancelAll(intent.account))
        self._journal_cancel(cycle, intent.account, None, intent.cause)
        cancelled = [event.order_id for event in events if isinstance(event, Cancelled)]
        rows = [self.live[sequence] for sequence in cancelled]
        await self._apply_events(cycle, events, None, intent.cause)
        return rows

    def _leave_at(self, expiry_unix: int) -> int:
        """When an order expiring at ``expiry_unix`` leaves the book: the settlement margin before."""
        return expiry_unix - self._expiry_margin_s

    async def _expire(self, cycle: _Cycle) -> None:
        while self._expiries and self._expiries[0][0] <= cycle.now_unix:
            _, sequence = heapq.heappop(self._expiries)
            row = self.live.get(sequence)
            if row is None:
                continue
            await self._cancel_resting(cycle, row, CancelCause.EXPIRED)
            log.info("order.expired", market=self.market_id, order_id=row.id, expiry=row.expiry_unix)

    async def _cancel_unsettleable(self, cycle: _Cycle) -> None:
        """Cancel the resting orders none of whose fills could settle (module docstring)."""
        # a failed cycle recovers, which finds them again
        unsettleable, self._unsettleable = self._unsettleable, []
        for sequence, cause in unsettleable:
            row = self.live.get(sequence)
            if row is None:
                continue
            await self._cancel_resting(cycle, row, cause)
            log.info(
                "order.unsettleable_cancelled",
                market=self.market_id,
                order_id=row.id,
                cause=cause.value,
                max_fee_bps=row.max_fee_bps,
                maker_fee_bps=self.market.maker_fee_bps,
            )

    async def _cancel_resting(self, cycle: _Cycle, row: OrderRow, cause: CancelCause) -> None:
        """Take the resting order ``row`` off the book for ``cause``, journaled, its reservation released."""
        events = self.book.apply(Cancel(row.sequence, row.account))
        if isinstance(events[0], Rejected):
            raise RecoveryFailed(f"order {row.sequence} is live but the book does not know it")
        self._journal_cancel(cycle, row.account, row.sequence, cause)
        await self._apply_events(cycle, events, None, cause)

    def _journal_cancel(
        self, cycle: _Cycle, account: str, order_sequence: int | None, cause: CancelCause
    ) -> None:
        self.sequence += 1
        cycle.cancels.append(
            {
                "market_id": self.market_id,
                "sequence": self.sequence,
                "account": account,
                "order_sequence": order_sequence,
                "cause": cause.value,
                "created_at": cycle.now,
            }
        )

    # ------------------------------------------------------------------ events

    async def _apply_events(
        self, cycle: _Cycle, events: list[Event], taker: OrderRow | None, cause: CancelCause
    ) -> None:
        for event in events:
            if isinstance(event, Trade):
                if taker is None:
                    raise RecoveryFailed(f"a trade without a taker order: {event!r}")
                await self._fill(cycle, event, taker)
            elif isinstance(event, Cancelled):
                row = (
                    taker
                    if taker is not None and event.order_id == taker.sequence
                    else self.live[event.order_id]
                )
                reason = CANCEL_CAUSES.get(event.reason, cause)
                row.remaining_base -= event.amount_base
                row.status = (
                    OrderStatus.EXPIRED if reason is CancelCause.EXPIRED else OrderStatus.CANCELED
                ).value
                row.cancel_cause = reason.value
                self.live.pop(row.sequence, None)
                await self._release(cycle, row)
            elif isinstance(event, LevelChanged):
                cycle.levels[(event.side, event.price_ticks)] = (event.amount_base, event.order_count)
            elif not isinstance(event, Accepted):
                raise RecoveryFailed(f"unexpected event from the book: {event!r}")

    async def _fill(self, cycle: _Cycle, trade: Trade, taker: OrderRow) -> None:
        market = self.market
        maker = self.live[trade.maker_order_id]
        buyer, seller = (taker, maker) if trade.taker_side is Side.BUY else (maker, taker)
        buyer_fee_bps = market.taker_fee_bps if buyer is taker else market.maker_fee_bps
        seller_fee_bps = market.taker_fee_bps if seller is taker else market.maker_fee_bps
        price_quote = trade.price_ticks * market.tick_size_quote
        amounts = settlement_amounts(
            trade.amount_base,
            price_quote,
            buyer_fee_bps,
            buyer.max_fee_bps,
            seller_fee_bps,
            seller.max_fee_bps,
        )
        if amounts.quote != trade.quote_amount:
            raise RecoveryFailed(f"book and Vault disagree on the quote of trade {trade.trade_id}")
        await cycle.load(
            [
                (maker.account, market.base_token),
                (maker.account, market.quote_token),
                (FEES_ACCOUNT, market.quote_token),
            ]
        )
        postings = ledger.fill(
            FillAmounts(
                buyer=buyer.account,
                seller=seller.account,
                base_token=market.base_token,
                quote_token=market.quote_token,
                base_amount=trade.amount_base,
                quote_amount=amounts.quote,
                buyer_fee=amounts.buyer_fee,
                seller_fee=amounts.seller_fee,
            ),
            FEES_ACCOUNT,
        )
        cycle.post(postings, FILL_CAUSE, f"trade:{self.market_id}:{trade.trade_id}")
        buyer.reserved_amount -= amounts.buyer_pays
        seller.reserved_amount -= trade.amount_base
        # What the buy paid is at most what it reserved for the part filled (its limit price,
        # its fee cap): the rest of that part's reservation (a better price, a fee under the
        # cap) is the buyer's again now, not only when the order ends.
        unused = buyer.reserved_amount - buy_reservation(
            buyer.remaining_base - trade.amount_base, buyer.price_quote, buyer.max_fee_bps
        )
        if unused > 0:
            cycle.post(
                ledger.release(buyer.account, market.quote_token, unused),
                ORDER_RELEASE_CAUSE,
                f"order:{buyer.order_hash}",
            )
            buyer.reserved_amount -= unused
        buyer.fee_quote += amounts.buyer_fee
        seller.fee_quote += amounts.seller_fee
        for row in (maker, taker):
            row.filled_base += trade.amount_base
            row.remaining_base -= trade.amount_base
            row.cost_quote += amounts.quote
            row.last_trade_at = cycle.now
            cycle.touch(row)
        cycle.fills.append(
            {
                "market_id": self.market_id,
                "trade_id": trade.trade_id,
                "sequence": self.sequence,
                "maker_sequence": maker.sequence,
                "taker_sequence": taker.sequence,
                "maker_account": maker.account,
                "taker_account": taker.account,
                "taker_side": trade.taker_side.value,
                "price_quote": price_quote,
                "amount_base": trade.amount_base,
                "quote_amount": amounts.quote,
                "maker_fee_bps": market.maker_fee_bps,
                "taker_fee_bps": market.taker_fee_bps,
                "buyer_fee": amounts.buyer_fee,
                "seller_fee": amounts.seller_fee,
                "created_at": cycle.now,
            }
        )
        if maker.remaining_base == 0:
            maker.status = OrderStatus.CLOSED.value
            del self.live[maker.sequence]
            await self._release(cycle, maker)

    async def _release(self, cycle: _Cycle, row: OrderRow) -> None:
        """The order has ended: give back what is still reserved for it."""
        cycle.touch(row)
        if row.reserved_amount:
            await cycle.load([(row.account, row.reserved_token)])
            cycle.post(
                ledger.release(row.account, row.reserved_token, row.reserved_amount),
                ORDER_RELEASE_CAUSE,
                f"order:{row.order_hash}",
            )
            row.reserved_amount = 0

    # ------------------------------------------------------------------ writing

    async def _write(self, cycle: _Cycle) -> None:
        writes = bulk.Writes()
        # New orders carry the ids the cycle's first read took (``_read``).
        writes.insert(_ORDERS, [row.values() for row in cycle.new_orders.values()])
        writes.update(
            _ORDERS,
            ("id",),
            [
                {"id": row.id, **{name: getattr(row, name) for name in ORDER_STATE_FIELDS}}
                for row in cycle.touched_orders.values()
            ],
        )
        writes.insert(_CANCELS, cycle.cancels)
        fills = None
        if cycle.fills:
            ids = {
                row.sequence: row.id for row in (*cycle.new_orders.values(), *cycle.touched_orders.values())
            }
            for fill in cycle.fills:
                fill["maker_order_id"] = ids[fill["maker_sequence"]]
                fill["taker_order_id"] = ids[fill["taker_sequence"]]
            fills = writes.insert(
                _FILLS,
                [
                    {
                        **{k: v for k, v in fill.items() if k not in ("maker_sequence", "taker_sequence")},
                        "settlement_state": SettlementState.PENDING.value,
                    }
                    for fill in cycle.fills
                ],
                returning=("id", "trade_id"),
            )
            await self._write_candles(cycle, writes)
        repository.balance_writes(
            writes, {key: cycle.balances[key] for key in cycle.changed}, cycle.existing, cycle.now
        )
        repository.entry_writes(writes, cycle.entries, cycle.now)
        values: dict[str, Any] = {"sequence": self.sequence, "updated_at": cycle.now}
        if self.sequence - self.checkpoint_sequence >= self._checkpoint_every:
            values.update(self._checkpoint_values())
        # The head moves only from where this cycle found it: a second writer of the market
        # (which must never exist) makes one of the two cycles fail and roll back whole.
        head = {"market_id": self.market_id, "sequence": cycle.start_sequence}
        # The cycle before's answers, if held: their requests resume while this write is on its way.
        self._answer_held()
        written = await bulk.write_all(cycle.db, writes, _BOOKS, values, head)
        if written.moved != 1:
            raise RecoveryFailed(
                f"the journal head of {self.market_id} moved away from {cycle.start_sequence} "
                "under this writer: another writer owns the market"
            )
        if fills is not None:
            fill_ids = {trade_id: fill_id for fill_id, trade_id in written.returned[fills]}
            for fill in cycle.fills:
                fill["id"] = fill_ids[fill["trade_id"]]

    async def _write_candles(self, cycle: _Cycle, writes: bulk.Writes) -> None:
        """Fold the cycle's fills into the stored candles (read-modify-write: this writer owns them)."""
        unix_s = int(cycle.now.timestamp())
        trades = [
            (unix_s, fill["price_quote"], fill["amount_base"], fill["quote_amount"]) for fill in cycle.fills
        ]
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for resolution in STORED:
            for start, fresh in trade_candles(resolution, trades).items():
                known = self._candles.get(resolution)
                if known is None or known.start != start:
                    known = await self._stored_candle(cycle.db, resolution, start)
                candle = fresh if known is None else known.merge(fresh)
                values = {
                    "market_id": self.market_id,
                    "resolution_s": resolution,
                    "start_unix": start,
                    **{name: getattr(candle, name) for name in CANDLE_VALUES},
                    "updated_at": cycle.now,
                }
                (inserts if known is None else updates).append(values)
                self._candles[resolution] = candle
        writes.insert(_CANDLES, inserts)
        writes.update(_CANDLES, ("market_id", "resolution_s", "start_unix"), updates)

    async def _stored_candle(self, db: bulk.Target, resolution: int, start: int) -> Candle | None:
        key = (self.market_id, resolution, start)
        if isinstance(db, bulk.Raw):
            found = await bulk.fetch(db, _CANDLE_SQL, *key, columns=_CANDLE_COLUMNS)
            return Candle(start, *found[0]) if found else None
        row = await db.get(TradingCandle, key)
        if row is None:
            return None
        return Candle(start, *(getattr(row, name) for name in CANDLE_VALUES))

    def _checkpoint_values(self) -> dict[str, Any]:
        self.checkpoint_sequence = self.sequence
        return checkpoint_columns(self.book, self.sequence)

    async def _checkpoint(self, session: AsyncSession) -> None:
        await session.execute(
            update(_BOOKS)
            .where(_BOOKS.c.market_id == self.market_id, _BOOKS.c.sequence == self.sequence)
            .values(**self._checkpoint_values())
        )

    # ------------------------------------------------------------------ recovery

    async def _recover(self) -> None:
        started = time.perf_counter()
        async with self._sessionmaker() as session, session.begin():
            recovered = await recover_book(
                session, self.market_id, self.market.book_config(), verify_replay=self._verify_replay
            )
            disowned = [order.sequence for order in await disowned_orders(session, self.market_id)]
        self.book = book = recovered.book
        self.sequence = recovered.sequence
        self.checkpoint_sequence = recovered.checkpoint_sequence
        self.live = live = recovered.live
        uncovered = (
            sequence for sequence, row in live.items() if row.max_fee_bps < self.market.maker_fee_bps
        )
        causes = {sequence: CancelCause.FEE_ABOVE_CAP for sequence in uncovered}
        causes.update((sequence, CancelCause.WALLET_REFUSED) for sequence in disowned if sequence in live)
        self._unsettleable = sorted(causes.items())
        self._candles = {}
        self._expiries = [(self._leave_at(row.expiry_unix), sequence) for sequence, row in live.items()]
        heapq.heapify(self._expiries)
        log.info(
            "trading.book_recovered",
            market=self.market_id,
            sequence=self.sequence,
            checkpoint_sequence=self.checkpoint_sequence,
            open_orders=len(book),
            state_hash=book.state_hash().hex(),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if self.listener is not None:
            self.listener.reset(book, self.sequence)
