"""Market specifications: what a market trades and its rules (tick, lot, minimum, fees).

One Vault settles one base/quote pair, so the service runs one market per
Vault: BPC against the Vault's quote token, both read from the Vault at start.

Units. Prices are the Vault's (``exchange.trading.amounts``): quote base units
per 10**18 base units. ``tick_size_quote`` is a price step in those units and
the book's integer price is ``price_ticks = price_quote // tick_size_quote``.
Amounts are base-token base units, multiples of ``lot_size_base``. The book's
``MarketConfig`` uses ``price_scale_base = 10**18``, so its quote value of a fill
is exactly the Vault's ``floor(amount * price / 10**18)``: the configuration
is refused unless one lot at one tick is a whole number of quote units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import error_decoder
from exchange.chain.runtime import ChainRuntime
from exchange.orderbook import MarketConfig
from exchange.settings import Settings
from exchange.trading.amounts import BPS, PRICE_SCALE_BASE


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One market: its tokens, the Vault that settles it, and its trading rules."""

    market_id: str  # "BPC-TUSD": URL-safe
    base_symbol: str
    quote_symbol: str
    base_token: str
    quote_token: str
    base_decimals: int
    quote_decimals: int
    chain_id: int
    vault: str
    tick_size_quote: int
    lot_size_base: int
    min_amount_base: int
    maker_fee_bps: int
    taker_fee_bps: int

    def __post_init__(self) -> None:
        for name in ("maker_fee_bps", "taker_fee_bps"):
            value = getattr(self, name)
            if not 0 <= value <= BPS:
                raise ValueError(f"{name} must lie in [0, {BPS}], got {value}")
        self.book_config()  # refuses ticks and lots that would need rounding

    @property
    def symbol(self) -> str:
        """CCXT's unified symbol, ``BASE/QUOTE``."""
        return f"{self.base_symbol}/{self.quote_symbol}"

    @property
    def max_fee_bps(self) -> int:
        """The highest fee rate an order of this market may be charged (as maker or taker)."""
        return max(self.maker_fee_bps, self.taker_fee_bps)

    def book_config(self) -> MarketConfig:
        """The matching rules, which a restart refuses to change under resting orders.

        Fees are not among them: the book never sees a fee, so they may change between
        runs. The writer then cancels the resting orders whose signed cap the new maker
        fee exceeds (``exchange.trading.writer``); intake holds new orders to both fees.
        """
        return MarketConfig(
            market_id=self.market_id,
            base_asset=self.base_token,
            quote_asset=self.quote_token,
            tick_size_quote=self.tick_size_quote,
            lot_size_base=self.lot_size_base,
            min_amount_base=self.min_amount_base,
            price_scale_base=PRICE_SCALE_BASE,
        )


def _erc20(runtime: ChainRuntime, address: str) -> BoundContract:
    # Any ERC-20 answers symbol() and decimals(); the test token's ABI has both.
    artifacts = compile_contracts()
    abi: list[dict[str, Any]] = artifacts["TestToken"].abi
    return BoundContract(runtime.w3, "ERC20", address, abi, error_decoder(artifacts))


def market_from_chain(runtime: ChainRuntime, settings: Settings) -> MarketSpec:
    """The market of the deployed Vault, with the rules from ``settings`` (blocking: reads the chain)."""
    base_token, quote_token = runtime.pool.vault_tokens()
    base = runtime.pool.bpc if base_token == runtime.pool.bpc.address else _erc20(runtime, base_token)
    quote = (
        runtime.pool.quote
        if runtime.pool.quote is not None and quote_token == runtime.pool.quote.address
        else _erc20(runtime, quote_token)
    )
    base_symbol = str(base.call("symbol"))
    quote_symbol = str(quote.call("symbol"))
    return MarketSpec(
        market_id=f"{base_symbol}-{quote_symbol}",
        base_symbol=base_symbol,
        quote_symbol=quote_symbol,
        base_token=base_token,
        quote_token=quote_token,
        base_decimals=int(base.call("decimals")),
        quote_decimals=int(quote.call("decimals")),
        chain_id=runtime.deployment.chain_id,
        vault=runtime.pool.vault.address,
        tick_size_quote=settings.trading_tick_size_quote,
        lot_size_base=settings.trading_lot_size_base,
        min_amount_base=settings.trading_min_amount_base,
        maker_fee_bps=settings.trading_maker_fee_bps,
        taker_fee_bps=settings.trading_taker_fee_bps,
    )
