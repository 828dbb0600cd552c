"""Answers of the trading API built from markets, order rows, fills and withdrawals (CCXT-shaped)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from exchange.trading.amounts import PRICE_SCALE_BASE
from exchange.trading.intents import OrderRow
from exchange.trading.markets import MarketSpec
from exchange.trading.models import TradingFill, TradingOrder, TradingWithdrawal
from exchange.trading.schemas import (
    FeeOut,
    MarketLimits,
    MarketOut,
    MarketPrecision,
    MinMax,
    OrderFeeOut,
    OrderOut,
    OrderSide,
    TradeOut,
    WithdrawalOut,
)


def _fraction(bps: int) -> str:
    return f"{bps / 10_000:.4f}".rstrip("0").rstrip(".") if bps else "0"


def market_out(spec: MarketSpec) -> MarketOut:
    return MarketOut(
        id=spec.market_id,
        symbol=spec.symbol,
        base=spec.base_symbol,
        quote=spec.quote_symbol,
        base_token=spec.base_token,
        quote_token=spec.quote_token,
        base_decimals=spec.base_decimals,
        quote_decimals=spec.quote_decimals,
        active=True,
        precision=MarketPrecision(price=str(spec.tick_size_quote), amount=str(spec.lot_size_base)),
        limits=MarketLimits(
            amount=MinMax(min=str(spec.min_amount_base), max=None),
            price=MinMax(min=str(spec.tick_size_quote), max=None),
        ),
        maker=_fraction(spec.maker_fee_bps),
        taker=_fraction(spec.taker_fee_bps),
        maker_fee_bps=spec.maker_fee_bps,
        taker_fee_bps=spec.taker_fee_bps,
        chain_id=spec.chain_id,
        vault=spec.vault,
    )


def order_out(row: OrderRow | TradingOrder, spec: MarketSpec) -> OrderOut:
    return OrderOut(
        id=str(row.id),
        client_order_id=row.client_order_id,
        market=row.market_id,
        symbol=spec.symbol,
        side=row.side,  # type: ignore[arg-type]  # checked by the table's constraint
        time_in_force=row.time_in_force,  # type: ignore[arg-type]
        price=str(row.price_quote),
        amount=str(row.amount_base),
        filled=str(row.filled_base),
        # Not remaining_base: a cancel takes the unfilled part off the book and out of that
        # column, while CCXT's remaining keeps it (filled + remaining == amount).
        remaining=str(row.amount_base - row.filled_base),
        status=row.status,  # type: ignore[arg-type]
        cancel_reason=row.cancel_cause,
        cost=str(row.cost_quote),
        average=str(row.cost_quote * PRICE_SCALE_BASE // row.filled_base) if row.filled_base else None,
        fee=OrderFeeOut(cost=str(row.fee_quote), currency=spec.quote_symbol),
        last_trade_timestamp=None if row.last_trade_at is None else unix_ms(row.last_trade_at),
        reserved=str(row.reserved_amount),
        reserved_token=row.reserved_token,
        max_fee_bps=row.max_fee_bps,
        nonce=str(row.nonce),
        expiry=row.expiry_unix,
        order_hash=row.order_hash,
        timestamp=unix_ms(row.created_at),
        datetime=iso(row.created_at),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def trade_out(fill: TradingFill, account: str, spec: MarketSpec) -> TradeOut:
    taker = fill.taker_account == account
    side: OrderSide = fill.taker_side if taker else ("sell" if fill.taker_side == "buy" else "buy")  # type: ignore[assignment]
    return TradeOut(
        id=str(fill.id),
        order=str(fill.taker_order_id if taker else fill.maker_order_id),
        market=fill.market_id,
        symbol=spec.symbol,
        side=side,
        taker_or_maker="taker" if taker else "maker",
        price=str(fill.price_quote),
        amount=str(fill.amount_base),
        cost=str(fill.quote_amount),
        fee=FeeOut(
            cost=str(fill.buyer_fee if side == "buy" else fill.seller_fee),
            currency=spec.quote_symbol,
            rate_bps=fill.taker_fee_bps if taker else fill.maker_fee_bps,
        ),
        settlement_state=fill.settlement_state,  # type: ignore[arg-type]
        tx_hash=fill.tx_hash,
        timestamp=unix_ms(fill.created_at),
        datetime=iso(fill.created_at),
    )


def withdrawal_out(row: TradingWithdrawal, spec: MarketSpec) -> WithdrawalOut:
    return WithdrawalOut(
        id=str(row.id),
        account=row.account,
        token=row.token,
        amount=str(row.amount),
        nonce=row.nonce,
        expiry=row.expiry_unix,
        digest=row.digest,
        operator_signature=row.operator_signature,
        status=row.status,  # type: ignore[arg-type]
        tx_hash=row.tx_hash,
        vault=spec.vault,
        chain_id=spec.chain_id,
        created_at=row.created_at,
    )


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as CCXT's ``datetime`` fields."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def unix_ms(moment: datetime) -> int:
    """Unix time in whole milliseconds, as CCXT's ``timestamp`` fields."""
    return int(moment.timestamp() * 1000)


def public_trade(spec: MarketSpec, fill_id: int, fill: dict[str, Any] | TradingFill) -> dict[str, Any]:
    """A trade of the market without its accounts (``PublicTradeOut``'s fields), from a fill row or dict."""
    get = fill.__getitem__ if isinstance(fill, dict) else fill.__getattribute__
    created: datetime = get("created_at")
    return {
        "id": str(fill_id),
        "market": spec.market_id,
        "symbol": spec.symbol,
        "side": get("taker_side"),
        "price": str(get("price_quote")),
        "amount": str(get("amount_base")),
        "cost": str(get("quote_amount")),
        "timestamp": unix_ms(created),
        "datetime": iso(created),
    }
