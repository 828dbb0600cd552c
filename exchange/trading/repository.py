"""All SQL of trading: ledger balances and entries, the journal, fills, withdrawals.

Functions take an ``AsyncSession`` and flush at most; the caller's transaction
commits. The balance and ledger functions the market writer calls also take an
``exchange.db.bulk.Raw`` (on PostgreSQL, the writer's asyncpg connection in its
cycle's transaction). Ledger changes go through :func:`apply_postings`, which checks the pure
ledger's invariants (``exchange.trading.ledger.apply``) on the locked current
balances before writing anything, so a posting set either applies whole or
raises ``LedgerRefused`` and changes nothing.

Balance rows are read ``FOR UPDATE`` (PostgreSQL; SQLite has one writer at a
time anyway), in (account, token) order, so concurrent writers of the same
balances queue instead of losing an update.

The market writer yields to no one: it locks the accounts placing orders first and the
makers it meets while matching after, so it may wait for a row while holding another. Every
other transaction (a settlement void, a Vault event, a withdrawal) never waits for a balance
row while it may hold one: a locked read of several rows at once, or of any row once its
transaction holds balance rows, waits at most ``YIELD_WAIT_MS`` (1 ms) for each lock and
otherwise raises ``BalancesBusy``; only its first read of a single row waits as long as it
takes, holding no balance row the writer could be waiting for. So where its lock order and the
writer's cross, it is the one to give way, at once, rather than the writer, whose whole cycle
PostgreSQL's deadlock check would otherwise end, answering its orders 503 and rebuilding the
book. What gave way is done again: the settler's next step, the indexer's next pass (which
keeps the blocks credited before), the next expiry run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, func, literal, or_, select, text, tuple_, union_all
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db import bulk
from exchange.db.base import utc_now
from exchange.kit.errors import Conflict, DomainError
from exchange.kit.logging import get_logger
from exchange.trading import ledger
from exchange.trading.ledger import VAULT_EXTERNAL, Balance, LedgerError, Posting
from exchange.trading.models import (
    LedgerBalance,
    LedgerEntry,
    SettlementState,
    TradingFill,
    TradingOrder,
    TradingWithdrawal,
    WithdrawalStatus,
)

log = get_logger(__name__)

BalanceKey = tuple[str, str]  # (account, token)
T = TypeVar("T")

FEES_ACCOUNT = "vault:fees"
"""Ledger account of trading fees not yet sent to the Fund (settlement moves them out of the Vault)."""


class WithdrawalRace(Conflict):
    """Another withdrawal of the account took the same nonce first: sending the request again works."""

    type_slug = "withdrawal-race"
    title = "Another withdrawal was authorised at the same moment"
    transient = True
    retry_after_s = 1


class LedgerRefused(Conflict):
    """A posting set would break a ledger invariant (overdraft, release of more than reserved)."""

    type_slug = "insufficient-balance"
    title = "Insufficient balance"


class BalancesBusy(DomainError):
    """Balance rows this transaction asked for were locked (by the market writer) and it may
    not wait for them (see the module docstring).

    Nothing was written (the transaction, or its savepoint, is rolled back); the same work
    succeeds moments later.
    """

    status = 503
    type_slug = "balances-busy"
    title = "Balances busy"
    transient = True
    retry_after_s = 1


# The longest a transaction other than the writer's waits for a balance lock while it may hold
# another (PostgreSQL's lock_timeout, set for those statements only): in effect, not at all.
YIELD_WAIT_MS = 1
_LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of a lock wait that lock_timeout ended
_HOLDS_BALANCES = "exchange.trading.repository.holds_balances"  # session.info: in which transaction


class ProceedsUnsettled(LedgerRefused):
    """The balance needed includes proceeds of fills not yet settled: a retry once they settle may pass."""

    transient = True


_BALANCES = bulk.table_of(LedgerBalance)
_ENTRIES = bulk.table_of(LedgerEntry)
_BALANCES_READ = (
    select(_BALANCES.c.account, _BALANCES.c.token, _BALANCES.c.total, _BALANCES.c.reserved)
    .where(tuple_(_BALANCES.c.account, _BALANCES.c.token).in_(bindparam("keys", expanding=True)))
    .order_by(_BALANCES.c.account, _BALANCES.c.token)
)
_BALANCES_LOCKED = _BALANCES_READ.with_for_update()
# The same on an asyncpg connection (exchange.db.bulk.Raw), the keys as two arrays.
BALANCE_COLUMNS = (_BALANCES.c.account, _BALANCES.c.token, _BALANCES.c.total, _BALANCES.c.reserved)


def balances_sql(*, lock: bool, first: int = 1) -> str:
    """The balances of keys given as two arrays, accounts in parameter ``first`` and tokens in the
    next (one statement text whatever their number), in key order; ``lock``: ``FOR UPDATE``."""
    # Fixed text but for the parameters' numbers.
    sql = (
        "SELECT account, token, total, reserved FROM ledger_balances"  # noqa: S608
        f" WHERE (account, token) IN (SELECT * FROM unnest(${first}::varchar[], ${first + 1}::varchar[]))"
        " ORDER BY account, token"
    )
    return sql + " FOR UPDATE" if lock else sql


def balance_keys(keys: Iterable[BalanceKey]) -> tuple[list[str], list[str]]:
    """``keys`` as the two arrays :func:`balances_sql` takes, in order and without the outside
    world's (which has no balance rows)."""
    wanted = sorted(key for key in keys if key[0] != VAULT_EXTERNAL)
    return [account for account, _ in wanted], [token for _, token in wanted]


def found_balances(rows: Iterable[tuple[Any, ...]]) -> dict[BalanceKey, Balance]:
    """The balances of rows ``balances_sql`` read (as its columns, ``BALANCE_COLUMNS``, give them)."""
    return {(account, token): Balance(total, reserved) for account, token, total, reserved in rows}


_BALANCES_READ_SQL = balances_sql(lock=False)
_BALANCES_LOCKED_SQL = balances_sql(lock=True)


def padded(values: Iterable[T]) -> list[T]:
    """``values`` sorted, the last repeated up to a power of two: a bound IN list of few lengths.

    Each length of an expanded IN list is another SQL text, which asyncpg prepares (one
    more round trip) and keeps in a bounded cache; padding keeps the texts few. The
    repeats change nothing: IN ignores duplicates.
    """
    ordered: list[T] = sorted(values)  # type: ignore[type-var]
    if not ordered:
        return ordered
    size = 1 << (len(ordered) - 1).bit_length()
    return ordered + [ordered[-1]] * (size - len(ordered))


async def load_balances(
    session: bulk.Target, keys: Iterable[BalanceKey], *, lock: bool = True, yielding: bool = True
) -> dict[BalanceKey, Balance]:
    """The current balances of ``keys`` (absent rows are zero), locked for this transaction by default.

    Locked on PostgreSQL, every key has a row: an absent one is created at zero first. A key
    without a row could not be locked, so two transactions that both found none (a cycle's
    first trade of a token racing the account's first deposit of it) would both insert it,
    and the later one fail on the key.

    ``yielding`` (every caller but the market writer): a read of several rows, or of any row
    once this transaction holds balance rows, raises ``BalancesBusy`` rather than wait (see
    the module docstring).
    """
    wanted = {key for key in keys if key[0] != VAULT_EXTERNAL}
    if not (lock and isinstance(session, AsyncSession) and bulk.dialect_of(session).name == "postgresql"):
        return await _load_balances(session, wanted, lock=lock)
    transaction = session.sync_session.get_transaction()  # None until the first statement begins one
    holds = transaction is not None and session.info.get(_HOLDS_BALANCES) is transaction
    if yielding and (len(wanted) > 1 or holds):
        previous = await session.scalar(_NO_WAIT)
        try:
            found = await _load_balances(session, wanted, lock=True)
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                raise BalancesBusy("balances this needs are in use (by trading); try again") from error
            raise
        await session.execute(_RESTORE, {"previous": previous})
    else:
        found = await _load_balances(session, wanted, lock=True)
    if wanted:
        session.info[_HOLDS_BALANCES] = session.sync_session.get_transaction()
    return found


# The lock wait as it was, then the short one for this transaction (restored after the read).
_NO_WAIT = text("SELECT current_setting('lock_timeout'), set_config('lock_timeout', :wait, true)").bindparams(
    wait=f"{YIELD_WAIT_MS}ms"
)
_RESTORE = text("SELECT set_config('lock_timeout', :previous, true)")


async def _load_balances(
    session: bulk.Target, wanted: set[BalanceKey], *, lock: bool
) -> dict[BalanceKey, Balance]:
    found = await _read_balances(session, wanted, lock=lock)
    if not lock or bulk.dialect_of(session).name != "postgresql":
        return found  # SQLite: BEGIN IMMEDIATE has every writer wait for the one before it
    missing = wanted - found.keys()
    if missing:
        found.update(await created_balances(session, missing))
    return found


async def created_balances(session: bulk.Target, keys: Iterable[BalanceKey]) -> dict[BalanceKey, Balance]:
    """The balances of ``keys`` that a locked read on PostgreSQL found no rows for, locked: each
    row created at zero first (unless another transaction has created it meanwhile)."""
    missing = {key for key in keys if key[0] != VAULT_EXTERNAL}
    if not missing:
        return {}
    _, zero = _balance_rows(dict.fromkeys(sorted(missing), Balance()), (), utc_now())
    await bulk.insert_rows(session, _BALANCES, zero, skip_existing=True)
    return await _read_balances(session, missing, lock=True)


async def _read_balances(
    session: bulk.Target, keys: set[BalanceKey], *, lock: bool
) -> dict[BalanceKey, Balance]:
    wanted = sorted(keys)
    if not wanted:
        return {}
    if isinstance(session, bulk.Raw):
        # The keys as two arrays: one statement text whatever their number, nothing to expand.
        found = await bulk.fetch(
            session,
            _BALANCES_LOCKED_SQL if lock else _BALANCES_READ_SQL,
            *balance_keys(wanted),
            columns=BALANCE_COLUMNS,
        )
        return found_balances(found)
    if lock and session.get_bind().dialect.name == "postgresql":
        statement = _BALANCES_LOCKED
    else:
        statement = _BALANCES_READ
    rows = (await session.execute(statement, {"keys": padded(wanted)})).all()
    return {(account, token): Balance(total, reserved) for account, token, total, reserved in rows}


async def write_balances(
    session: bulk.Target,
    changed: Mapping[BalanceKey, Balance],
    existing: Iterable[BalanceKey],
    now: datetime,
) -> None:
    """Store ``changed`` balances: UPDATE the keys in ``existing``, INSERT the others."""
    updates, inserts = _balance_rows(changed, existing, now)
    # Core statements, many rows each: the ORM's bulk paths cost more than the database here.
    await bulk.update_rows(session, _BALANCES, ("account", "token"), updates)
    await bulk.insert_rows(session, _BALANCES, inserts)


def balance_writes(
    writes: bulk.Writes, changed: Mapping[BalanceKey, Balance], existing: Iterable[BalanceKey], now: datetime
) -> None:
    """Add to ``writes`` what :func:`write_balances` stores."""
    updates, inserts = _balance_rows(changed, existing, now)
    writes.update(_BALANCES, ("account", "token"), updates)
    writes.insert(_BALANCES, inserts)


def _balance_rows(
    changed: Mapping[BalanceKey, Balance], existing: Iterable[BalanceKey], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of ``changed`` balances to update (their keys in ``existing``) and to insert."""
    present = set(existing)
    updates = []
    inserts = []
    for (account, token), balance in changed.items():
        if account == VAULT_EXTERNAL:
            continue
        row = {"account": account, "token": token, "total": balance.total, "reserved": balance.reserved}
        if (account, token) in present:
            updates.append({**row, "updated_at": now})
        else:
            inserts.append({**row, "updated_at": now})
    return updates, inserts


async def insert_entries(
    session: bulk.Target, postings: Sequence[tuple[Posting, str, str]], now: datetime
) -> None:
    """Append ledger entries: each posting with its cause and reference."""
    await bulk.insert_rows(session, _ENTRIES, _entry_rows(postings, now))


def entry_writes(writes: bulk.Writes, postings: Sequence[tuple[Posting, str, str]], now: datetime) -> None:
    """Add to ``writes`` what :func:`insert_entries` appends."""
    writes.insert(_ENTRIES, _entry_rows(postings, now))


def _entry_rows(postings: Sequence[tuple[Posting, str, str]], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "account": posting.account,
            "token": posting.token,
            "total_delta": posting.total_delta,
            "reserved_delta": posting.reserved_delta,
            "cause": cause,
            "reference": reference,
            "created_at": now,
        }
        for posting, cause, reference in postings
    ]


async def apply_postings(
    session: AsyncSession, postings: list[Posting], *, cause: str, reference: str
) -> None:
    """Apply a balanced posting set: append its entries and update the balances it moves.

    Raises ``LedgerRefused`` (a 409 problem) and writes nothing when the set is
    unbalanced or would leave any account with ``reserved > total`` or a negative
    reservation. ``cause`` says why (``deposit``, ``withdrawal``, ...), ``reference``
    what about (a transaction hash and log index, a withdrawal id, ...).
    """
    keys = [(posting.account, posting.token) for posting in postings]
    current = await load_balances(session, keys)
    try:
        changed = ledger.apply(current, postings)
    except LedgerError as error:
        raise LedgerRefused(str(error), extra={"cause": cause, "reference": reference}) from error
    now = utc_now()
    await write_balances(session, changed, current.keys(), now)
    await insert_entries(session, [(posting, cause, reference) for posting in postings], now)
    await session.flush()
    log.debug("ledger.posted", cause=cause, reference=reference, postings=len(postings))


async def credit_deposit(
    session: AsyncSession, account: str, token: str, amount: int, *, reference: str
) -> None:
    """Credit a deposit into the Vault to ``account``'s ledger (the Vault indexer calls this).

    ``reference`` identifies the deposit exactly once (``<tx hash>:<log index>``);
    the caller makes sure each deposit is credited once.
    """
    await apply_postings(
        session, ledger.deposit(account, token, amount), cause="deposit", reference=reference
    )
    log.info("ledger.deposit_credited", account=account, token=token, amount=amount, reference=reference)


async def balances_of(session: AsyncSession, account: str) -> dict[str, Balance]:
    """Every token balance of ``account``, unlocked, by token."""
    rows = (
        await session.scalars(
            select(LedgerBalance).where(LedgerBalance.account == account).order_by(LedgerBalance.token)
        )
    ).all()
    return {row.token: Balance(row.total, row.reserved) for row in rows}


# --------------------------------------------------------------------------- orders and fills (reads)


async def order_of(session: AsyncSession, account: str, order_id: int) -> TradingOrder | None:
    """``account``'s order ``order_id``; None when there is none or it is someone else's."""
    order: TradingOrder | None = await session.scalar(
        select(TradingOrder).where(TradingOrder.id == order_id, TradingOrder.account == account)
    )
    return order


async def order_by_client_id(
    session: AsyncSession, account: str, client_order_id: str
) -> TradingOrder | None:
    order: TradingOrder | None = await session.scalar(
        select(TradingOrder).where(
            TradingOrder.account == account, TradingOrder.client_order_id == client_order_id
        )
    )
    return order


async def orders_of(
    session: AsyncSession,
    account: str,
    *,
    market_id: str | None,
    status: str | None,
    side: str | None,
    before_id: int | None,
    limit: int,
) -> list[TradingOrder]:
    """``account``'s orders, newest first, optionally filtered; those with an id below ``before_id``."""
    statement = select(TradingOrder).where(TradingOrder.account == account)
    if market_id is not None:
        statement = statement.where(TradingOrder.market_id == market_id)
    if status is not None:
        # Written into the statement, not bound: a plan made for any status (PostgreSQL's generic
        # plan of a prepared statement) cannot use the index of open orders, whose WHERE names one.
        statement = statement.where(TradingOrder.status == literal(status, literal_execute=True))
    if side is not None:
        statement = statement.where(TradingOrder.side == side)
    if before_id is not None:
        statement = statement.where(TradingOrder.id < before_id)
    return list((await session.scalars(statement.order_by(TradingOrder.id.desc()).limit(limit))).all())


async def fills_of(
    session: AsyncSession, account: str, *, market_id: str | None, before_id: int | None, limit: int
) -> list[TradingFill]:
    """Fills in which ``account`` was maker or taker, newest first.

    The newest ``limit`` as maker and the newest ``limit`` as taker, each read backwards along
    its account's index, then merged: one condition OR-ing both roles can follow neither index
    in id order, and read every fill of the account (or, for an account whose fills are old,
    the whole table backwards) to find the newest.
    """
    newest = []
    for role in (TradingFill.maker_account, TradingFill.taker_account):
        ids = select(TradingFill.id).where(role == account)
        if market_id is not None:
            ids = ids.where(TradingFill.market_id == market_id)
        if before_id is not None:
            ids = ids.where(TradingFill.id < before_id)
        newest.append(select(ids.order_by(TradingFill.id.desc()).limit(limit).subquery().c.id))
    statement = select(TradingFill).where(TradingFill.id.in_(union_all(*newest)))
    return list((await session.scalars(statement.order_by(TradingFill.id.desc()).limit(limit))).all())


# --------------------------------------------------------------------------- withdrawals


_UNSETTLED = (SettlementState.PENDING.value, SettlementState.SUBMITTED.value)


async def unsettled_proceeds(
    session: AsyncSession, account: str, token: str, markets: Mapping[str, tuple[str, str]]
) -> int:
    """What ``account`` received in ``token`` from fills not yet settled on chain (pending or in a batch).

    ``markets`` maps each market id to its (base, quote) tokens. A buyer receives the base
    amount, a seller the quote amount less its fee. Until such a fill settles the Vault does
    not hold these proceeds for the account, and if it fails, voiding it takes them back.
    """
    traded = [market for market, tokens in markets.items() if token in tokens]
    if not traded:
        return 0
    fills = await session.execute(
        select(
            TradingFill.market_id,
            TradingFill.maker_account,
            TradingFill.taker_account,
            TradingFill.taker_side,
            TradingFill.amount_base,
            TradingFill.quote_amount,
            TradingFill.seller_fee,
        ).where(
            or_(TradingFill.maker_account == account, TradingFill.taker_account == account),
            TradingFill.settlement_state.in_(_UNSETTLED),
            TradingFill.market_id.in_(traded),
        )
    )
    proceeds = 0
    for market_id, maker, taker, taker_side, amount_base, quote_amount, seller_fee in fills:
        buyer, seller = (taker, maker) if taker_side == "buy" else (maker, taker)
        base, quote = markets[market_id]
        if token == base and buyer == account:
            proceeds += amount_base
        if token == quote and seller == account:
            proceeds += quote_amount - seller_fee
    return proceeds


async def next_withdrawal_nonce(session: AsyncSession, account: str) -> int:
    """One above the highest withdrawal nonce the service gave ``account`` (0 for the first)."""
    highest = await session.scalar(
        select(func.max(TradingWithdrawal.nonce)).where(TradingWithdrawal.account == account)
    )
    return 0 if highest is None else int(highest) + 1


async def add_withdrawal(
    session: AsyncSession,
    *,
    account: str,
    token: str,
    amount: int,
    nonce: int,
    expiry_unix: int,
    digest: str,
    operator_signature: str,
) -> TradingWithdrawal:
    """Record an authorised withdrawal; a concurrent one with the same nonce is a :class:`WithdrawalRace`."""
    row = TradingWithdrawal(
        account=account,
        token=token,
        amount=amount,
        nonce=nonce,
        expiry_unix=expiry_unix,
        digest=digest,
        operator_signature=operator_signature,
        status=WithdrawalStatus.AUTHORISED.value,
        created_at=utc_now(),
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError as error:
        raise WithdrawalRace(
            "another withdrawal of yours was authorised at the same moment; send the request again"
        ) from error
    return row


async def withdrawals_of(
    session: AsyncSession, account: str, *, before_id: int | None, limit: int
) -> list[TradingWithdrawal]:
    """The account's withdrawals newest first, older than ``before_id`` when given."""
    statement = select(TradingWithdrawal).where(TradingWithdrawal.account == account)
    if before_id is not None:
        statement = statement.where(TradingWithdrawal.id < before_id)
    statement = statement.order_by(TradingWithdrawal.id.desc()).limit(limit)
    return list((await session.scalars(statement)).all())
