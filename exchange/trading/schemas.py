"""Pydantic models of the trading API, named after CCXT's unified structures.

Token amounts and prices are uint256 values: on the wire they are decimal
strings (``"1000000000000000000"``), which JavaScript clients read exactly.
Prices are the Vault's: quote base units per 10**18 base units (one whole BPC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from exchange.api.problems import Problem
from exchange.kit.addresses import Address
from exchange.trading.signing import MAX_SIGNATURE_BYTES

Uint = Annotated[
    str,
    Field(
        pattern=r"^(0|[1-9][0-9]{0,77})$",
        max_length=78,
        description="A non-negative integer as a decimal string (base units).",
        examples=["1000000000000000000"],
    ),
]
ClientOrderId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description=(
            "Your id for the order, unique among your orders: resending it returns the first order "
            "(unless the Vault refuses it by now: 409 cancelled-on-chain)."
        ),
    ),
]
MarketId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="A market's id (BPC-TUSD) or its CCXT unified symbol (BPC/TUSD).",
        examples=["BPC-TUSD", "BPC/TUSD"],
    ),
]
OrderSide = Literal["buy", "sell"]
OrderStatus = Literal["open", "closed", "canceled", "expired"]
TimeInForce = Literal["GTC", "IOC", "FOK", "PO"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- markets


class MarketPrecision(BaseModel):
    price: str = Field(description="Tick size in Vault price units (quote base units per 10**18 base units).")
    amount: str = Field(description="Lot size in base units.")


class MinMax(BaseModel):
    min: str | None
    max: str | None


class MarketLimits(BaseModel):
    amount: MinMax
    price: MinMax


class MarketOut(BaseModel):
    """A market, after CCXT's market structure."""

    id: str
    symbol: str = Field(examples=["BPC/TUSD"])
    base: str
    quote: str
    base_token: str
    quote_token: str
    base_decimals: int
    quote_decimals: int
    type: Literal["spot"] = "spot"
    spot: bool = True
    active: bool
    precision: MarketPrecision
    limits: MarketLimits
    maker: str = Field(description="Maker fee as a fraction, e.g. '0.001'.")
    taker: str = Field(description="Taker fee as a fraction.")
    maker_fee_bps: int
    taker_fee_bps: int
    chain_id: int
    vault: str = Field(description="The Vault that settles the market: the EIP-712 verifyingContract.")


class JournalHeadOut(BaseModel):
    market: str
    sequence: int = Field(description="Number of the last journaled command of the market.")
    state_hash: str = Field(description="SHA-256 of the book's canonical encoding after that command (hex).")
    open_orders: int


# --------------------------------------------------------------------------- orders


class SignedOrderIn(_Strict):
    """The order exactly as signed (EIP-712 type ``Order`` of the Vault)."""

    maker: Address
    base_token: Address
    quote_token: Address
    side: OrderSide = Field(description="buy (LibOrder.Side 0) or sell (1).")
    price: Uint = Field(
        description="Limit price: quote base units per 10**18 base units; a multiple of the tick."
    )
    amount: Uint = Field(description="Base units; a multiple of the lot size, at least the minimum.")
    max_fee_bps: StrictInt = Field(ge=0, le=65_535, description="Highest fee rate the operator may charge.")
    nonce: Uint = Field(description="uint64: unique per maker; cancelOrdersBelowNonce cancels below it.")
    expiry: StrictInt = Field(
        ge=0, le=2**64 - 1, description="Unix time at which the order stops being valid."
    )


class PlaceOrderIn(_Strict):
    market: MarketId
    client_order_id: ClientOrderId
    time_in_force: TimeInForce = Field(
        default="GTC", description="GTC rests; IOC and FOK never rest; PO (post only) never takes."
    )
    chain_id: StrictInt = Field(
        ge=1, le=2**63 - 1, description="EIP-712 domain: the chain the order is signed for (EIP-155 id)."
    )
    vault: Address = Field(description="EIP-712 domain: the verifyingContract the order is signed for.")
    order: SignedOrderIn
    signature: str = Field(
        pattern=r"^0x[0-9a-fA-F]*$",
        max_length=2 + 2 * MAX_SIGNATURE_BYTES,
        description=(
            "The maker's signature of the order, 0x-hex: its key's 65 bytes (r, s, v), or, for a "
            f"contract wallet, whatever its ERC-1271 isValidSignature accepts (up to {MAX_SIGNATURE_BYTES} "
            "bytes; the wallet is asked when the order is placed, and by the Vault at settlement)."
        ),
    )


DateTime = datetime  # the type under another name, for models with a field named datetime (CCXT's)


class OrderFeeOut(BaseModel):
    cost: str
    currency: str


class OrderOut(BaseModel):
    """An order, after CCXT's order structure."""

    id: str
    client_order_id: str
    market: str
    symbol: str
    type: Literal["limit"] = "limit"
    side: OrderSide
    time_in_force: TimeInForce
    price: str
    amount: str
    filled: str
    remaining: str = Field(
        description="amount - filled, whatever the status: a canceled or expired order keeps its "
        "unfilled part here, so filled + remaining == amount."
    )
    status: OrderStatus
    cancel_reason: str | None = Field(
        description="Why a canceled or expired order left the book: user (its owner cancelled it), "
        "ioc_remainder (what an IOC or FOK order could not fill at once), self_trade, expired, "
        "suspended (its maker stopped being an active member), on_chain (cancelled in the Vault, or "
        "its maker asked to exit), fee_above_cap (the maker fee rose above its signed cap while it "
        "rested), replaced (its owner replaced it with a new order), wallet_refused (its maker, a "
        "contract wallet, no longer accepted its signature when asked again while the order rested, "
        "or when a fill of it settled); null when "
        "none applies."
    )
    cost: str = Field(
        description="What its fills came to in the quote token: the sum of their quote amounts, base units."
    )
    average: str | None = Field(
        description="Average fill price, in price's units (quote base units per 10^18 base units): "
        "cost * 10^18 / filled, rounded down; null before the first fill."
    )
    fee: OrderFeeOut = Field(description="The fees this order's side paid on its fills.")
    last_trade_timestamp: int | None = Field(
        description="When its last fill happened, Unix ms; null before the first fill."
    )
    reserved: str = Field(description="Still reserved for this order, in reserved_token base units.")
    reserved_token: str
    max_fee_bps: int
    nonce: str
    expiry: int
    order_hash: str = Field(description="The EIP-712 digest: the order's id in the Vault.")
    timestamp: int = Field(description="When the order was created, Unix ms (created_at).")
    datetime: Annotated[str, Field(description="The timestamp in ISO 8601, UTC.")]
    created_at: DateTime
    updated_at: DateTime


MAX_BATCH_ORDERS = 100


class PlaceOrdersIn(_Strict):
    """Several signed orders, placed in the order given; each is checked and answered on its own."""

    orders: list[PlaceOrderIn] = Field(min_length=1, max_length=MAX_BATCH_ORDERS)


class PlacedOrderResult(BaseModel):
    """One order of a batch: placed (201), placed before under its client_order_id (200), or refused."""

    status: int = Field(
        description="201 placed, 200 placed before under its client_order_id, or the status of the "
        "refusal (500 order-failed when the service met an unexpected error with this order)."
    )
    order: OrderOut | None = Field(description="The order, unless it was refused.")
    problem: Problem | None = Field(description="Why the order was not placed (problem+json), else null.")


class PlaceOrdersOut(BaseModel):
    results: list[PlacedOrderResult] = Field(description="One per order of the request, in its order.")


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next (older) page; null at the end.")


class CancelAllOut(BaseModel):
    market: str
    cancelled: list[str] = Field(description="Ids of the orders cancelled.")


# --------------------------------------------------------------------------- trades and balances


class FeeOut(BaseModel):
    cost: str
    currency: str
    rate_bps: int


class TradeOut(BaseModel):
    """One of your fills, after CCXT's trade structure."""

    id: str
    order: str = Field(description="Your order's id.")
    market: str
    symbol: str
    side: OrderSide
    taker_or_maker: Literal["taker", "maker"]
    price: str
    amount: str
    cost: str = Field(description="Quote base units before fees.")
    fee: FeeOut
    settlement_state: Literal["pending", "submitted", "settled", "failed"]
    tx_hash: str | None
    timestamp: int = Field(description="When the trade was matched, Unix ms.")
    datetime: Annotated[str, Field(description="The timestamp in ISO 8601, UTC.")]


class TradePage(BaseModel):
    items: list[TradeOut]
    next_cursor: str | None


class BalanceOut(BaseModel):
    token: str
    asset: str | None = Field(description="The token's symbol when it is one of a market's tokens.")
    total: str
    available: str
    reserved: str = Field(description="Held for open orders and pending withdrawals.")


class BalancesOut(BaseModel):
    account: str
    balances: list[BalanceOut]


# --------------------------------------------------------------------------- withdrawals


class WithdrawalIn(_Strict):
    token: Address
    amount: Uint


class WithdrawalOut(BaseModel):
    """The operator's authorisation: send ``Vault.withdraw(token, amount, nonce, expiry, signature)``."""

    id: str
    account: str
    token: str
    amount: str
    nonce: int
    expiry: int
    digest: str
    operator_signature: str
    status: Literal["authorised", "completed", "expired"]
    tx_hash: str | None = Field(
        description="The Vault transaction that paid it (its Withdrawn event), once completed; else null."
    )
    vault: str
    chain_id: int
    created_at: datetime


# --------------------------------------------------------------------------- public market data


BookLevel = Annotated[
    tuple[str, str, int],
    Field(description="[price, amount, orders]: Vault price units, base units, resting orders at the price."),
]


class OrderBookOut(BaseModel):
    """The committed L2 book, after CCXT's order book structure (bids high to low, asks low to high)."""

    market: str
    symbol: str
    bids: list[BookLevel]
    asks: list[BookLevel]
    sequence: int = Field(
        description="Journal sequence of the last command that changed the book: the WebSocket "
        "book channel's sequence, so a client can join a snapshot from here with the stream."
    )
    nonce: int = Field(description="CCXT's name for sequence.")
    timestamp: int | None = Field(
        description="When the book last changed, Unix ms; for a book unchanged since the service "
        "started, when the start rebuilt it from the journal (null only before that)."
    )
    datetime: str | None


class PublicTradeOut(BaseModel):
    """A trade of the market, after CCXT's trade structure (no accounts)."""

    id: str
    market: str
    symbol: str
    side: OrderSide = Field(description="The taker's side.")
    price: str
    amount: str
    cost: str = Field(description="Quote base units.")
    timestamp: int = Field(description="Unix ms.")
    datetime: str


class PublicTradePage(BaseModel):
    items: list[PublicTradeOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next (older) page; null at the end.")


class TickerOut(BaseModel):
    """24-hour statistics, after CCXT's ticker structure. Prices in Vault units, volumes in base units.

    The window is the current minute and the 1,439 before it; fields about trades
    are null when there was none in the window.
    """

    market: str
    symbol: str
    timestamp: int
    datetime: str
    high: str | None
    low: str | None
    bid: str | None
    bid_volume: str | None
    ask: str | None
    ask_volume: str | None
    vwap: str | None = Field(description="Quote volume per 10**18 base units of volume, rounded down.")
    open: str | None
    close: str | None
    last: str | None = Field(description="Price of the last trade, even when older than the window.")
    change: str | None = Field(description="close - open, Vault price units (may be negative).")
    percentage: str | None = Field(description="100 * change / open, two decimals, rounded half-even.")
    average: str | None = Field(description="(open + close) / 2, rounded down.")
    base_volume: str
    quote_volume: str
    trades: int


Timeframe = Literal[
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"
]
Candle = Annotated[
    tuple[int, str, str, str, str, str],
    Field(
        description="[timestamp (Unix ms of the bucket start), open, high, low, close, volume (base units)]"
    ),
]


class OhlcvOut(BaseModel):
    """Candles, oldest first, after CCXT's OHLCV arrays. Buckets without trades have no candle."""

    market: str
    symbol: str
    timeframe: Timeframe
    candles: list[Candle]
