"""Tables of trading: the order journal, fills, the off-chain ledger and idempotency keys.

Amounts are uint256 base units stored as decimal text (``WeiAmount``); ledger
deltas are signed (``SignedWeiAmount``). Addresses are EIP-55 strings.

The journal
    A market's book changes only through commands, numbered by a per-market
    ``sequence`` that only grows. A placed order is its own journal row
    (``trading_orders.sequence`` is also the order's id in the book); a cancel is
    a ``trading_cancels`` row. Replaying both tables in sequence order through the
    pure engine rebuilds the book exactly. ``trading_books`` holds each market's
    last sequence and a checkpoint: a snapshot of the book, its state hash and
    the sequence it was taken at.

Written by:

* the market's writer task (``exchange.trading.writer``) alone — orders, cancels,
  fills, candles, the book row, and the ledger postings of reservations and fills;
* request services — withdrawal requests and their reservations, idempotency keys;
* the settlement pipeline — ``settlement_state``, ``batch_id`` and ``tx_hash`` of fills;
* the Vault indexer — deposits and completed withdrawals, through
  ``repository.credit_deposit`` and ``repository.apply_postings``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.db.base import Base, utc_now
from exchange.db.types import SignedWeiAmount, WeiAmount
from exchange.trading.signing import MAX_SIGNATURE_BYTES

ADDRESS = String(42)
LEDGER_ACCOUNT = String(64)  # an EIP-55 address, or a system account such as "vault:external"
HASH32 = String(66)  # 0x-prefixed 32-byte hex
MARKET_ID = String(32)


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    """CCXT's order statuses: ``open`` rests (maybe partly filled), ``closed`` is fully filled."""

    OPEN = "open"
    CLOSED = "closed"
    CANCELED = "canceled"
    EXPIRED = "expired"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    PO = "PO"  # post only


class CancelCause(StrEnum):
    USER = "user"  # the owner cancelled (one order or all in a market)
    IOC_REMAINDER = "ioc_remainder"  # what an IOC or FOK order could not fill at once
    SELF_TRADE = "self_trade"
    EXPIRED = "expired"  # reached its signed expiry (less the settlement margin)
    SUSPENDED = "suspended"  # the account stopped being an active member
    ON_CHAIN = "on_chain"  # the maker cancelled it in the Vault (order, nonce) or asked to exit
    FEE_ABOVE_CAP = "fee_above_cap"  # the maker fee rose above its signed cap while it rested
    REPLACED = "replaced"  # its owner replaced it with a new order (POST /v1/orders/{id}/replace)
    # its maker, a contract wallet, refused its signature when asked again or at settlement (ERC-1271)
    WALLET_REFUSED = "wallet_refused"


class SettlementState(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    SETTLED = "settled"
    FAILED = "failed"


class WithdrawalStatus(StrEnum):
    AUTHORISED = "authorised"  # co-signed; the amount stays reserved until the Vault pays or it expires
    COMPLETED = "completed"
    EXPIRED = "expired"


def _in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(str(value)) for value in values)})"


class TradingBook(Base):
    """One market's journal head and last checkpoint.

    The checkpoint's snapshot carries the market's rules (tick, lot, minimum, tokens): a market's
    first start records them in a checkpoint of its empty book. ``rules_sequence`` is the head
    at which the rules last changed (always at an empty book), and ``rules_snapshot`` that
    empty book: the journal before it was written under other rules, so a full replay starts
    there.
    """

    __tablename__ = "trading_books"
    __table_args__ = (
        CheckConstraint("sequence >= 0", name="sequence_not_negative"),
        CheckConstraint("checkpoint_sequence <= sequence", name="checkpoint_not_ahead"),
        CheckConstraint("rules_sequence <= checkpoint_sequence", name="rules_not_after_checkpoint"),
    )

    market_id: Mapped[str] = mapped_column(MARKET_ID, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoint_sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoint_state_hash: Mapped[str | None] = mapped_column(String(64))
    checkpoint_snapshot: Mapped[bytes | None] = mapped_column(LargeBinary)
    rules_sequence: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The empty book at ``rules_sequence`` (rules, and where its order and trade ids had got to):
    # where a full replay starts; none when the rules never changed (a replay starts from nothing).
    rules_snapshot: Mapped[bytes | None] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class TradingOrder(Base):
    """A signed order as placed: its journal row, its signed fields, and its state now."""

    __tablename__ = "trading_orders"
    __table_args__ = (
        UniqueConstraint("market_id", "sequence"),
        UniqueConstraint("account", "client_order_id"),
        UniqueConstraint("account", "nonce"),
        UniqueConstraint("order_hash"),
        CheckConstraint(_in("side", OrderSide), name="side_known"),
        CheckConstraint(_in("status", OrderStatus), name="status_known"),
        CheckConstraint(_in("time_in_force", TimeInForce), name="time_in_force_known"),
        CheckConstraint("sequence > 0", name="sequence_positive"),
        Index(None, "account", "market_id", "id"),
        Index(None, "account", "id"),  # an account's orders, newest first, in every market
        Index(  # its open ones (repository.orders_of writes the status out, so the plan can use it)
            "ix_trading_orders_open_account_id",
            "account",
            "id",
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        Index(None, "market_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    market_id: Mapped[str] = mapped_column(MARKET_ID)
    sequence: Mapped[int] = mapped_column(BigInteger)
    account: Mapped[str] = mapped_column(ADDRESS)
    client_order_id: Mapped[str] = mapped_column(String(64))
    # --- the signed order (exchange.trading.eip712.VaultOrder) -------------------------------------
    side: Mapped[str] = mapped_column(String(4))
    price_quote: Mapped[int] = mapped_column(WeiAmount)
    amount_base: Mapped[int] = mapped_column(WeiAmount)
    max_fee_bps: Mapped[int] = mapped_column(Integer)
    nonce: Mapped[int] = mapped_column(WeiAmount)  # uint64: beyond BIGINT
    expiry_unix: Mapped[int] = mapped_column(WeiAmount)  # uint64
    order_hash: Mapped[str] = mapped_column(HASH32)
    # 0x-hex: a key's 65 bytes, or a contract wallet's (ERC-1271) up to MAX_SIGNATURE_BYTES
    signature: Mapped[str] = mapped_column(String(2 + 2 * MAX_SIGNATURE_BYTES))
    time_in_force: Mapped[str] = mapped_column(String(3))
    # --- state --------------------------------------------------------------------------------------
    status: Mapped[str] = mapped_column(String(8))
    filled_base: Mapped[int] = mapped_column(WeiAmount)
    remaining_base: Mapped[int] = mapped_column(WeiAmount)
    reserved_token: Mapped[str] = mapped_column(ADDRESS)
    reserved_amount: Mapped[int] = mapped_column(WeiAmount)  # still reserved for this order
    cancel_cause: Mapped[str | None] = mapped_column(String(16))
    # --- what its fills came to (voided fills included, like filled_base) ---------------------------
    cost_quote: Mapped[int] = mapped_column(WeiAmount, default=0)  # sum of its fills' quote amounts
    fee_quote: Mapped[int] = mapped_column(WeiAmount, default=0)  # sum of the fees its side paid
    last_trade_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class TradingCancel(Base):
    """A cancel command in the journal: one order, or every order of an account (``order_sequence`` null)."""

    __tablename__ = "trading_cancels"
    __table_args__ = (
        UniqueConstraint("market_id", "sequence"),
        CheckConstraint(_in("cause", CancelCause), name="cause_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    market_id: Mapped[str] = mapped_column(MARKET_ID)
    sequence: Mapped[int] = mapped_column(BigInteger)
    account: Mapped[str] = mapped_column(ADDRESS)
    order_sequence: Mapped[int | None] = mapped_column(BigInteger)
    cause: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class TradingFill(Base):
    """One trade between a resting (maker) and an incoming (taker) order, with its settlement state."""

    __tablename__ = "trading_fills"
    __table_args__ = (
        UniqueConstraint("market_id", "trade_id"),
        CheckConstraint(_in("settlement_state", SettlementState), name="settlement_state_known"),
        CheckConstraint(_in("taker_side", OrderSide), name="taker_side_known"),
        Index(None, "maker_account", "id"),
        Index(None, "taker_account", "id"),
        Index(None, "settlement_state", "id"),
        Index(None, "market_id", "id"),
        Index(None, "market_id", "created_at"),  # a minute's fills, when its candle is corrected
        Index(  # the failed ones: few, read by every candle and ticker answer
            "ix_trading_fills_failed_market_id_created_at",
            "market_id",
            "created_at",
            postgresql_where=text("settlement_state = 'failed'"),
            sqlite_where=text("settlement_state = 'failed'"),
        ),
        # The settler's reads and updates by batch and by settled order. Partial, so that the
        # writer's insert of a pending fill (no batch yet) adds to neither.
        Index(
            "ix_trading_fills_batched_batch_id",
            "batch_id",
            postgresql_where=text("batch_id IS NOT NULL"),
            sqlite_where=text("batch_id IS NOT NULL"),
        ),
        *(
            Index(
                f"ix_trading_fills_settled_{role}_order_id",
                f"{role}_order_id",
                postgresql_where=text("settlement_state = 'settled'"),
                sqlite_where=text("settlement_state = 'settled'"),
            )
            for role in ("maker", "taker")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    market_id: Mapped[str] = mapped_column(MARKET_ID)
    trade_id: Mapped[int] = mapped_column(BigInteger)  # the book's trade id, per market
    sequence: Mapped[int] = mapped_column(BigInteger)  # journal sequence of the command that traded
    maker_order_id: Mapped[int] = mapped_column(ForeignKey("trading_orders.id"))
    taker_order_id: Mapped[int] = mapped_column(ForeignKey("trading_orders.id"))
    maker_account: Mapped[str] = mapped_column(ADDRESS)
    taker_account: Mapped[str] = mapped_column(ADDRESS)
    taker_side: Mapped[str] = mapped_column(String(4))
    price_quote: Mapped[int] = mapped_column(WeiAmount)  # Vault price: quote units per 10**18 base units
    amount_base: Mapped[int] = mapped_column(WeiAmount)
    quote_amount: Mapped[int] = mapped_column(WeiAmount)
    maker_fee_bps: Mapped[int] = mapped_column(Integer)
    taker_fee_bps: Mapped[int] = mapped_column(Integer)
    buyer_fee: Mapped[int] = mapped_column(WeiAmount)
    seller_fee: Mapped[int] = mapped_column(WeiAmount)
    settlement_state: Mapped[str] = mapped_column(String(16), default=SettlementState.PENDING.value)
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    tx_hash: Mapped[str | None] = mapped_column(HASH32)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class TradingCandle(Base):
    """A market's trades in one time bucket at one stored resolution (see ``exchange.trading.candles``).

    Written by the market's writer in the transaction of the fills it summarises.
    """

    __tablename__ = "trading_candles"
    __table_args__ = (
        CheckConstraint("resolution_s IN (60, 3600, 86400)", name="resolution_stored"),
        CheckConstraint("trades > 0", name="has_trades"),
    )

    market_id: Mapped[str] = mapped_column(MARKET_ID, primary_key=True)
    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_unix: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    open: Mapped[int] = mapped_column(WeiAmount)
    high: Mapped[int] = mapped_column(WeiAmount)
    low: Mapped[int] = mapped_column(WeiAmount)
    close: Mapped[int] = mapped_column(WeiAmount)
    volume: Mapped[int] = mapped_column(WeiAmount)  # base units
    quote_volume: Mapped[int] = mapped_column(WeiAmount)
    trades: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class LedgerBalance(Base):
    """What an account holds in the Vault per token, and how much of it is reserved.

    ``vault:external`` has no row: its balance is minus the sum of the others.
    """

    __tablename__ = "ledger_balances"

    account: Mapped[str] = mapped_column(LEDGER_ACCOUNT, primary_key=True)
    token: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    total: Mapped[int] = mapped_column(WeiAmount)
    reserved: Mapped[int] = mapped_column(WeiAmount)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


# What a market writer posts, a few entries per order and hundreds a cycle: an order's
# reservation and its release, and a fill's movements. Nothing looks these up by cause and
# reference (an order's or a trade's entries are found by account), so the index of the
# others leaves them out, one index fewer to write for most of the ledger.
ORDER_RESERVE_CAUSE = "order.reserve"
ORDER_RELEASE_CAUSE = "order.release"
FILL_CAUSE = "fill"
# The index's condition, which a query by cause and reference repeats word for word: a bound
# list of causes proves nothing to SQLite, nor to PostgreSQL's generic plans.
LOOKED_UP_ENTRIES = f"cause NOT IN ('{ORDER_RESERVE_CAUSE}', '{ORDER_RELEASE_CAUSE}', '{FILL_CAUSE}')"


class LedgerEntry(Base):
    """One posting, append-only: why (``cause``) and about what (``reference``) a balance moved."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index(None, "account", "token", "id"),
        Index(
            None,
            "cause",
            "reference",
            postgresql_where=text(LOOKED_UP_ENTRIES),
            sqlite_where=text(LOOKED_UP_ENTRIES),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account: Mapped[str] = mapped_column(LEDGER_ACCOUNT)
    token: Mapped[str] = mapped_column(ADDRESS)
    total_delta: Mapped[int] = mapped_column(SignedWeiAmount)
    reserved_delta: Mapped[int] = mapped_column(SignedWeiAmount)
    cause: Mapped[str] = mapped_column(String(32))  # deposit, withdrawal, order.reserve, fill, ...
    reference: Mapped[str] = mapped_column(String(128))  # tx hash + log index, order id, fill id, ...
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class TradingWithdrawal(Base):
    """A withdrawal the operator co-signed; its amount is reserved until paid or expired."""

    __tablename__ = "trading_withdrawals"
    __table_args__ = (
        UniqueConstraint("account", "nonce"),
        CheckConstraint(_in("status", WithdrawalStatus), name="status_known"),
        Index(None, "status", "expiry_unix"),
        Index(None, "account", "id"),  # an account's withdrawals, newest first
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account: Mapped[str] = mapped_column(ADDRESS)
    token: Mapped[str] = mapped_column(ADDRESS)
    amount: Mapped[int] = mapped_column(WeiAmount)
    nonce: Mapped[int] = mapped_column(BigInteger)
    expiry_unix: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(HASH32)
    operator_signature: Mapped[str] = mapped_column(String(132))
    status: Mapped[str] = mapped_column(String(16), default=WithdrawalStatus.AUTHORISED.value)
    tx_hash: Mapped[str | None] = mapped_column(HASH32)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class IdempotencyKey(Base):
    """The first answer to a request sent with an ``Idempotency-Key``, per account.

    ``response`` is null while the first request is still running.
    """

    __tablename__ = "trading_idempotency_keys"
    __table_args__ = (Index(None, "created_at"),)  # the retention purge

    account: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, object] | list[object] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    completed_at: Mapped[datetime | None] = mapped_column()
