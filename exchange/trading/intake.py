"""Order intake: turn a signed order from the API into a command for its market's writer.

Checks, in order, each refusing with a ``ValidationFailed`` (422) or
``Forbidden`` (403) problem and no state change:

1. the market exists, and the order's base and quote tokens are the market's;
2. the signature names this chain and this Vault (``chain_id``, ``vault``);
3. amounts are uint256/uint64 values, the price a positive multiple of the tick,
   the amount a lot multiple of at least the minimum size;
4. the order is still valid ``expiry_margin_s`` from now (it must outlive settlement);
5. the fee cap covers the market's maker and taker fees;
6. the signature is at most ``MAX_SIGNATURE_BYTES``, the maker is the signed-in
   account, and the signature is the maker's key's (65 bytes, low ``s``, recovering
   to the maker); one that is not can only be a contract wallet's (ERC-1271), and
   the order says so (``CheckedOrder.wallet_check``).

Membership (cached chain reads) and a contract wallet's signature (its
``isValidSignature`` asked on chain) are checked by the service, and what needs the
journal — unused nonce and client order id, and the funds reservation — by the
writer, in the same transaction that journals the order.

The reservation: a sell reserves its base amount; a buy reserves the quote
value at its limit price plus the largest fee its signed cap allows,
``quote + floor(quote * min(max_fee_bps, 10000) / 10000)``. Fills never cost a
buyer more than that: each fill's quote is at or below the limit price, and
each fill's fee is at most ``floor(fill quote * cap / 10000)`` (``amounts.fee_amount``),
whose sum is at most the floor of the sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exchange.kit.addresses import address_refusal
from exchange.kit.errors import Forbidden
from exchange.orderbook import Side, TimeInForce
from exchange.trading.amounts import BPS, fee_cap_bps, quote_amount
from exchange.trading.markets import MarketSpec
from exchange.trading.models import TimeInForce as StoredTimeInForce
from exchange.trading.problems import FieldRefused
from exchange.trading.signing import (
    MAX_SIGNATURE_BYTES,
    OrderDigester,
    OrderFields,
    canonical_signature,
    signature_problem,
    signed_by_key,
)

UINT16_MAX = 2**16 - 1
UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1

TIME_IN_FORCE: dict[str, TimeInForce] = {
    StoredTimeInForce.GTC: TimeInForce.GTC,
    StoredTimeInForce.IOC: TimeInForce.IOC,
    StoredTimeInForce.FOK: TimeInForce.FOK,
    StoredTimeInForce.PO: TimeInForce.POST_ONLY,
}


_ORDER_FIELDS = frozenset(
    ("maker", "base_token", "quote_token", "side", "price", "amount", "max_fee_bps", "nonce", "expiry")
)


class OrderRefused(FieldRefused):
    """The order breaks a rule of the market or of the Vault; nothing was recorded.

    ``extra["field"]`` names the refused field: one of the signed order's, or of the request's.
    """

    type_slug = "order-refused"
    title = "Order refused"

    def __init__(self, detail: str, *, extra: Mapping[str, object] | None = None) -> None:
        field = str((extra or {}).get("field", ""))
        location = (
            ["body", "order", field] if field in _ORDER_FIELDS else ["body", field] if field else ["body"]
        )
        super().__init__(detail, location=location, extra=extra)


class WrongDomain(OrderRefused):
    type_slug = "wrong-signing-domain"
    title = "Signed for another chain or Vault"


class InvalidSignature(OrderRefused):
    type_slug = "invalid-signature"
    title = "Invalid order signature"


class OrderExpired(OrderRefused):
    type_slug = "order-expired"
    title = "Order expired"


class NotOrderMaker(Forbidden):
    type_slug = "not-order-maker"
    title = "Not the order's maker"


@dataclass(frozen=True, slots=True)
class SignedOrderInput:
    """The order as the API received it: decimal strings already parsed to ints."""

    market_id: str
    client_order_id: str
    time_in_force: str
    chain_id: int
    vault: str
    maker: str
    base_token: str
    quote_token: str
    side: str  # "buy" | "sell"
    price_quote: int
    amount_base: int
    max_fee_bps: int
    nonce: int
    expiry_unix: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class CheckedOrder:
    """An order that passed every stateless check: what the writer needs to journal and match it."""

    market_id: str
    account: str  # EIP-55, the signed-in principal
    client_order_id: str
    side: Side
    time_in_force: str
    price_quote: int
    price_ticks: int
    amount_base: int
    max_fee_bps: int
    nonce: int
    expiry_unix: int
    order_hash: str  # 0x-hex EIP-712 digest
    signature: str  # 0x-hex
    reserve_token: str
    reserve_amount: int
    # None: the maker's key signed. Else why the signature is not its key's: only the maker as
    # a contract wallet can still accept it (ERC-1271), and the service must ask it before the
    # order is queued, as the Vault will ask it at settlement.
    wallet_check: str | None = None


def buy_reservation(amount_base: int, price_quote: int, max_fee_bps: int) -> int:
    """Quote units a buy reserves: its value at the limit price plus the largest fee its cap allows."""
    quote = quote_amount(amount_base, price_quote)
    return quote + quote * fee_cap_bps(max_fee_bps) // BPS


def _range(name: str, value: int, maximum: int) -> None:
    """The Vault's field width; what else a value must be (a price on the tick, an amount on the
    lot, neither zero) is checked after, with its own reason."""
    if not 0 <= value <= maximum:
        raise OrderRefused(f"{name} must fit the Vault's field: at most {maximum}", extra={"field": name})


def check_order(
    order: SignedOrderInput,
    *,
    market: MarketSpec,
    digester: OrderDigester,
    account: str,
    now_unix: int,
    expiry_margin_s: int,
) -> CheckedOrder:
    """Every stateless check of an order placed by ``account``; raises on the first failure."""
    if order.chain_id != market.chain_id or order.vault.lower() != market.vault.lower():
        raise WrongDomain(
            f"the order is signed for chain {order.chain_id} and Vault {order.vault}; this market settles "
            f"on chain {market.chain_id} in Vault {market.vault}",
            extra={
                "field": "chain_id" if order.chain_id != market.chain_id else "vault",
                "chain_id": market.chain_id,
                "vault": market.vault,
            },
        )
    for name in ("maker", "base_token", "quote_token"):
        refusal = address_refusal(getattr(order, name))
        if refusal is not None:
            raise OrderRefused(f"{name} {refusal}", extra={"field": name})
    if order.base_token.lower() != market.base_token.lower() or (
        order.quote_token.lower() != market.quote_token.lower()
    ):
        raise OrderRefused(
            f"market {market.market_id} trades base {market.base_token} against quote {market.quote_token}",
            extra={"field": "order"},
        )
    _range("price", order.price_quote, UINT256_MAX)
    _range("amount", order.amount_base, UINT256_MAX)
    _range("max_fee_bps", order.max_fee_bps, UINT16_MAX)
    _range("nonce", order.nonce, UINT64_MAX)
    _range("expiry", order.expiry_unix, UINT64_MAX)
    if order.price_quote <= 0 or order.price_quote % market.tick_size_quote:
        raise OrderRefused(
            f"price must be a positive multiple of the tick size {market.tick_size_quote}",
            extra={"field": "price", "tick_size": str(market.tick_size_quote)},
        )
    if order.amount_base % market.lot_size_base or order.amount_base < market.min_amount_base:
        raise OrderRefused(
            f"amount must be a multiple of the lot size {market.lot_size_base} "
            f"and at least {market.min_amount_base}",
            extra={
                "field": "amount",
                "lot_size": str(market.lot_size_base),
                "min_amount": str(market.min_amount_base),
            },
        )
    if order.expiry_unix <= now_unix + expiry_margin_s:
        raise OrderExpired(
            f"the order expires at {order.expiry_unix}; orders must stay valid for more than "
            f"{expiry_margin_s} s after they are placed",
            extra={"field": "expiry"},
        )
    if order.max_fee_bps < market.max_fee_bps:
        raise OrderRefused(
            f"max_fee_bps {order.max_fee_bps} is below the market's fee of {market.max_fee_bps} bps",
            extra={
                "field": "max_fee_bps",
                "maker_fee_bps": market.maker_fee_bps,
                "taker_fee_bps": market.taker_fee_bps,
            },
        )
    if order.side not in ("buy", "sell"):
        raise OrderRefused("side must be buy or sell", extra={"field": "side"})
    if not 0 < len(order.signature) <= MAX_SIGNATURE_BYTES:
        raise InvalidSignature(
            f"a signature is 1 to {MAX_SIGNATURE_BYTES} bytes (65 for a key's), got {len(order.signature)}",
            extra={"field": "signature"},
        )
    side = Side.BUY if order.side == "buy" else Side.SELL
    fields = OrderFields(
        maker=order.maker,
        base_token=order.base_token,
        quote_token=order.quote_token,
        side=0 if side is Side.BUY else 1,
        price_quote=order.price_quote,
        amount_base=order.amount_base,
        max_fee_bps=order.max_fee_bps,
        nonce=order.nonce,
        expiry_unix=order.expiry_unix,
    )
    digest = digester.digest(fields)
    maker = order.maker.lower()
    if signed_by_key(digest, order.signature, maker):
        wallet_check = None
        signature = canonical_signature(order.signature)  # as the Vault will check it
    else:
        wallet_check = signature_problem(order.signature) or (
            f"the signature does not recover to the maker {order.maker} for this order in this Vault"
        )
        if maker != account.lower():  # no wallet of anybody else's is asked anything
            raise InvalidSignature(wallet_check, extra={"field": "signature"})
        signature = order.signature  # the wallet's own, as it is
    if maker != account.lower():
        raise NotOrderMaker(f"signed in as {account}: you may only place orders made by yourself")
    if side is Side.SELL:
        reserve_token, reserve_amount = market.base_token, order.amount_base
    else:
        reserve_token = market.quote_token
        reserve_amount = buy_reservation(order.amount_base, order.price_quote, order.max_fee_bps)
        if reserve_amount > UINT256_MAX:
            raise OrderRefused("the order's quote value exceeds a uint256", extra={"field": "amount"})
    return CheckedOrder(
        market_id=market.market_id,
        account=account,
        client_order_id=order.client_order_id,
        side=side,
        time_in_force=order.time_in_force,
        price_quote=order.price_quote,
        price_ticks=order.price_quote // market.tick_size_quote,
        amount_base=order.amount_base,
        max_fee_bps=order.max_fee_bps,
        nonce=order.nonce,
        expiry_unix=order.expiry_unix,
        order_hash="0x" + digest.hex(),
        signature="0x" + signature.hex(),
        reserve_token=reserve_token,
        reserve_amount=reserve_amount,
        wallet_check=wallet_check,
    )
