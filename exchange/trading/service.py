"""Trading use cases: place and cancel orders, read orders, trades and balances, authorise withdrawals.

One ``TradingService`` per app (``app.state.trading``), built by :func:`trading_startup`:
it owns one ``MarketWriter`` per market, the membership cache, the rate limiters
and the idempotency store. Nothing here is process-global.

Membership. Only active PoolRegistry members trade. ``isActiveMember`` answers
are cached for ``trading_membership_ttl_s``. A suspension (or expulsion) reaches
the book only through the chain: every ``trading_membership_poll_s`` a poller
follows the registry's ``MemberStatusChanged`` events, drops the cached answer of
every account they name and cancels the open orders of an account that stopped
being active (:meth:`TradingService.cancel_all_orders_of`); the pool
administration routes do not call this service. With the poll at 0 there is no
poller: a suspended member's resting orders stay on the book (its new orders are
refused once its cached answer expires) until the service restarts, when
:meth:`TradingService.start` cancels the orders of every maker no longer active.

Contract wallets. A wallet's order is admitted when the wallet accepts its
signature (ERC-1271), but the Vault asks again at settlement, and a wallet may
change its mind in between. Every ``trading_wallet_recheck_s`` a poller asks the
wallet of each resting wallet order again and cancels the orders refused at two checks
in a row (``wallet_refused``, :meth:`TradingService.recheck_wallet_orders`); an order whose
fill fails on such a refusal is cancelled at once (:meth:`TradingService.fill_failed`).

Errors (all ``DomainError``, rendered once as problem+json)::

    ValidationFailed 422   OrderRefused (WrongDomain, InvalidSignature, OrderExpired), KeyReused,
                           unknown token of a withdrawal
    Forbidden        403   NotActiveMember, NotOrderMaker
    NotFound         404   unknown market, order not yours or not there
    Conflict         409   OrderConflict, PostOnlyWouldTake, OrderNotOpen, LedgerRefused (insufficient
                           balance; ProceedsUnsettled), KeyInUse, and from exchange.trading.chain_cancels
                           CancelledOnChain (ExitHeld) and AccountExiting
    RateLimited      429   per account and per IP, or a market's queue is full
    503                    WriterUnavailable (the market is restarting), ChainUnavailable
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from web3 import EthereumTesterProvider, Web3

from exchange.api.metrics import register_metrics
from exchange.chain.errors import ChainError
from exchange.chain.problems import to_domain_error
from exchange.chain.runtime import ChainRuntime
from exchange.chain.signatures import recover_signer, wallet_accepts
from exchange.db.engine import create_db_engine, create_sessionmaker
from exchange.kit.errors import ChainUnavailable, DomainError, Forbidden, NotFound, RateLimited
from exchange.kit.logging import get_logger
from exchange.kit.ratelimit import RateLimiter
from exchange.kit.secp256k1 import low_s
from exchange.pool.indexer import fetch_events
from exchange.settings import Settings
from exchange.trading import ledger, repository
from exchange.trading.eip712 import WithdrawalAuthorisation, withdrawal_hash, withdrawal_typed_data
from exchange.trading.feed import MarketFeed
from exchange.trading.fill_notices import FillNoticeListener
from exchange.trading.idempotency import IdempotencyStore
from exchange.trading.intake import (
    CheckedOrder,
    InvalidSignature,
    OrderRefused,
    SignedOrderInput,
    check_order,
)
from exchange.trading.intents import (
    CancelAllIntent,
    CancelIntent,
    JournalHead,
    OrderFailed,
    Placed,
    PlaceIntent,
    ReplaceIntent,
    WriterUnavailable,
)
from exchange.trading.ledger import Balance
from exchange.trading.market_data import TickerCache
from exchange.trading.markets import MarketSpec, market_from_chain
from exchange.trading.metrics import trading_metrics
from exchange.trading.models import (
    CancelCause,
    OrderStatus,
    SettlementState,
    TradingFill,
    TradingOrder,
    TradingWithdrawal,
)
from exchange.trading.principals import PrincipalCache
from exchange.trading.problems import FieldRefused
from exchange.trading.repository import LedgerRefused, ProceedsUnsettled
from exchange.trading.settlement_repository import disowned_orders, settled_fills_of_batch
from exchange.trading.signing import OrderDigester, assert_native_backend, signed_by_key
from exchange.trading.writer import MarketWriter

log = get_logger(__name__)

_RECOVERIES_PER_TURN = 200  # signatures a wallet recheck recovers before it lets other tasks run
_WALLET_ERRORS_PER_PASS = 3  # wallets in a row the node cannot ask before a recheck gives up
T = TypeVar("T")

ACTIVE_STATUS = 1  # PoolRegistry.Status.Active
REMEMBERED = 10_000  # the latest fills taken back, and batches sent settled: heard again, nothing


class _Remembered:
    """The latest ``size`` ids handed on to the feeds, so that one heard again (the settler's
    call and the database's notice) is handed on once."""

    def __init__(self, size: int) -> None:
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._size = size

    def __contains__(self, key: int) -> bool:
        return key in self._ids

    def add(self, key: int) -> None:
        self._ids[key] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)


# What a replacement may be: it rests (or takes, then rests), as the order it replaces did.
REPLACING_TIME_IN_FORCE = ("GTC", "PO")


class NotActiveMember(Forbidden):
    type_slug = "not-active-member"
    title = "Not an active pool member"


class UnknownMarket(NotFound):
    type_slug = "unknown-market"
    title = "Unknown market"


def batch_item(step: Callable[..., T], *args: Any) -> T | DomainError:
    """One step for one order of a batch: its result, or what stops that order alone.

    A refusal is returned as it is; an unexpected error is logged with its traceback
    and returned as the order's 500 (``OrderFailed``), whose text reveals nothing.
    """
    try:
        return step(*args)
    except DomainError as error:
        return error
    except Exception as error:
        log.error("trading.batch_order_failed", error_type=type(error).__qualname__, exc_info=error)
        return OrderFailed("the service failed to handle this order; retry it with the same client order id")


def _outcome(outcome: Placed | DomainError | asyncio.Future[Placed]) -> Placed | DomainError:
    """A batch item's outcome: a refusal stays one; a writer's answer is read from its future."""
    return batch_item(outcome.result) if isinstance(outcome, asyncio.Future) else outcome


class ChainAccess:
    """Blocking chain reads from async code: inline on the embedded EVM (not thread-safe, and fast),
    in a worker thread on a JSON-RPC node."""

    def __init__(self, runtime: ChainRuntime) -> None:
        self.runtime = runtime

    async def run(self, action: Callable[[], T]) -> T:
        return await self.runtime.run(action)


class MembershipCache:
    """``isActiveMember`` answers, reused for ``ttl_s``; :meth:`forget` drops one at once.

    A forgotten answer is never stored again by a read that was already under way: on a
    JSON-RPC chain the read runs in a worker thread and may have started before the
    change that caused the :meth:`forget`, so its answer can be stale. Such a read is
    thrown away and the chain asked again, so the caller gets an answer at least as new
    as the change (a suspended member is refused rather than let one more order rest
    after its cancel-all was queued).
    """

    def __init__(
        self,
        check: Callable[[str], Awaitable[bool]],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._ttl_s = ttl_s
        self._clock = clock
        self._answers: dict[str, tuple[bool, float]] = {}
        # How often each account was forgotten; one entry per account whose status ever
        # changed, so it grows no faster than the answers themselves.
        self._forgotten: dict[str, int] = {}

    async def is_active(self, account: str) -> bool:
        cached = self._answers.get(account)
        if cached is not None and self._clock() - cached[1] < self._ttl_s:
            return cached[0]
        while True:
            forgotten = self._forgotten.get(account, 0)
            asked_at = self._clock()
            active = await self._check(account)
            if self._forgotten.get(account, 0) == forgotten:
                self._answers[account] = (active, asked_at)
                return active
            # Forgotten while the chain was asked: the answer may predate the change. Ask again;
            # this repeats only while membership events keep arriving for this very account.

    def forget(self, account: str) -> None:
        self._answers.pop(account, None)
        self._forgotten[account] = self._forgotten.get(account, 0) + 1


@dataclass(frozen=True)
class Market:
    spec: MarketSpec
    writer: MarketWriter
    digester: OrderDigester
    feed: MarketFeed

    @classmethod
    def build(cls, spec: MarketSpec, writer: MarketWriter) -> Market:
        feed = MarketFeed(spec)
        writer.listener = feed
        return cls(spec=spec, writer=writer, digester=OrderDigester(spec.chain_id, spec.vault), feed=feed)


class TradingService:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        runtime: ChainRuntime,
        sessionmaker: async_sessionmaker[AsyncSession],
        markets: list[MarketSpec],
        *,
        writer_sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        notices_engine: AsyncEngine | None = None,
    ) -> None:
        """``writer_sessionmaker`` (default ``sessionmaker``): the writers' own connections, so that
        requests waiting for a writer can never hold every connection the writer needs.
        ``notices_engine``: a PostgreSQL engine to hear failed fills and settled batches on
        (``trading.fill_notices``)."""
        self.settings = settings
        self.runtime = runtime
        self.chain = ChainAccess(runtime)
        self.sessionmaker = sessionmaker
        self.markets: dict[str, Market] = {
            spec.market_id: Market.build(
                spec,
                MarketWriter(
                    spec,
                    writer_sessionmaker or sessionmaker,
                    max_batch=settings.trading_max_batch,
                    checkpoint_every=settings.trading_checkpoint_every,
                    expiry_margin_s=settings.trading_expiry_margin_s,
                    verify_replay=settings.trading_verify_replay_on_start,
                ),
            )
            for spec in markets
        }
        self.membership = MembershipCache(self._is_active_on_chain, settings.trading_membership_ttl_s)
        self.account_limits = RateLimiter(
            settings.trading_rate_account_per_s, settings.trading_rate_account_burst
        )
        self.ip_limits = RateLimiter(settings.trading_rate_ip_per_s, settings.trading_rate_ip_burst)
        self.ws_connections: dict[str, int] = {}  # open WebSocket connections by client IP
        self.idempotency = IdempotencyStore(
            sessionmaker, retention_s=settings.trading_idempotency_retention_s
        )
        self.tickers = TickerCache()
        # Refuses an order the Vault already would not settle (set by exchange.trading.chain_cancels).
        self.order_gate: Callable[[CheckedOrder], None] | None = None
        # Refuses a withdrawal while the account's exit keeps it out (also set by chain_cancels).
        self.withdrawal_gate: Callable[[str], None] | None = None
        self.principals = PrincipalCache(sessionmaker, settings.trading_session_cache_s)
        self._poller: asyncio.Task[None] | None = None
        self._wallet_poller: asyncio.Task[None] | None = None
        self._key_signed: set[str] = set()  # order hashes of resting orders signed by their maker's key
        self._refused_once: set[str] = set()  # order hashes of wallet orders the last recheck found refused
        self._voided = _Remembered(REMEMBERED)  # fills taken back on the feeds
        self._settled = _Remembered(REMEMBERED)  # batches whose fills went to fill subscribers
        self.fill_notices = (
            FillNoticeListener(notices_engine, self.fill_failed, on_settled=self.batch_settled)
            if notices_engine is not None and notices_engine.dialect.name == "postgresql"
            else None
        )

    # ------------------------------------------------------------------ lifecycle

    def charge_ip(self, host: str, tokens: int = 1) -> None:
        """Take ``tokens`` from the client IP's bucket (HTTP routes and WebSocket frames alike)."""
        self.ip_limits.check(f"ip:{host}", f"client {host}", tokens)

    def open_ws_connection(self, host: str) -> None:
        """Count a WebSocket connection of ``host``; ``RateLimited`` when it holds as many as allowed."""
        open_now = self.ws_connections.get(host, 0)
        limit = self.settings.trading_ws_connections_per_ip
        if open_now >= limit:
            raise RateLimited(
                f"client {host} has {open_now} WebSocket connections open, the most allowed: "
                "close one first (one connection carries every subscription)",
                retry_after_seconds=1,
                extra={"limit": limit},
            )
        self.ws_connections[host] = open_now + 1

    def close_ws_connection(self, host: str) -> None:
        left = self.ws_connections.get(host, 0) - 1
        if left > 0:
            self.ws_connections[host] = left
        else:
            self.ws_connections.pop(host, None)

    def refund_ip(self, host: str, tokens: int) -> None:
        """Give back ``tokens`` just taken from the IP's bucket for work another bucket refused."""
        self.ip_limits.refund(f"ip:{host}", tokens)

    def charge_ip_and_account(self, host: str, address: str, *, ip_tokens: int, account_tokens: int) -> None:
        """Take ``ip_tokens`` from the IP's bucket, then ``account_tokens`` from the account's; when
        the account's refuses, the IP's are given back (other clients behind the IP pay for no
        work that was not done)."""
        if ip_tokens:
            self.charge_ip(host, ip_tokens)
        try:
            self.charge_account(address, account_tokens)
        except RateLimited:
            if ip_tokens:
                self.refund_ip(host, ip_tokens)
            raise

    def charge_account(self, address: str, tokens: int = 1) -> None:
        """Take ``tokens`` from the signed-in account's bucket."""
        self.account_limits.check(f"account:{address}", address, tokens)

    async def start(self) -> None:
        for market in self.markets.values():
            await market.writer.start()
        # The membership poller's first block is read before resting orders' makers are
        # checked: a status change mined up to that head is seen by the check (it reads the
        # chain later), one mined after it by the poller. Read the other way round, a
        # suspension mined between the check and the head would be seen by neither.
        from_block: int | None = None
        if self.settings.trading_membership_poll_s > 0:
            from_block = await self.chain.run(lambda: int(self.runtime.w3.eth.block_number)) + 1
        await self._cancel_orders_of_inactive_members()
        if self.fill_notices is not None:
            await self.fill_notices.start()
        if from_block is not None:
            self._poller = asyncio.create_task(self._follow_membership(from_block), name="trading-membership")
        if self.settings.trading_wallet_recheck_s > 0:
            self._wallet_poller = asyncio.create_task(self._follow_wallets(), name="trading-wallets")

    async def stop(self) -> None:
        for poller in (self._poller, self._wallet_poller):
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
        if self.fill_notices is not None:
            await self.fill_notices.stop()
        for market in self.markets.values():
            try:
                await market.writer.stop()
            except Exception:  # every other market is still stopped and checkpointed
                log.exception("trading.writer_stop_failed", market=market.spec.market_id)

    # ------------------------------------------------------------------ markets

    def market(self, market_id: str) -> Market:
        market = self.markets.get(market_id)
        if market is None:
            for candidate in self.markets.values():
                if candidate.spec.symbol == market_id:
                    return candidate
            raise UnknownMarket(f"no market {market_id!r}; GET /v1/markets lists them")
        return market

    def token_symbol(self, token: str) -> str | None:
        for market in self.markets.values():
            if market.spec.base_token == token:
                return market.spec.base_symbol
            if market.spec.quote_token == token:
                return market.spec.quote_symbol
        return None

    async def journal_head(self, market_id: str) -> JournalHead:
        """The market's journal head, probed at most ``trading_journal_head_interval_s`` ago."""
        writer = self.market(market_id).writer
        return await writer.recent_head(self.settings.trading_journal_head_interval_s)

    # ------------------------------------------------------------------ orders

    def _checked(self, account: str, order: SignedOrderInput, now_unix: int) -> tuple[Market, CheckedOrder]:
        market = self.market(order.market_id)
        checked: CheckedOrder = check_order(
            order,
            market=market.spec,
            digester=market.digester,
            account=account,
            now_unix=now_unix,
            expiry_margin_s=self.settings.trading_expiry_margin_s,
        )
        return market, checked

    def _queue(
        self, market: Market, checked: CheckedOrder, intent: PlaceIntent | ReplaceIntent | None = None
    ) -> asyncio.Future[Placed]:
        """Pass the order gate and queue the order (as ``intent``, a place by default) at once, no
        await in between; its outcome's future."""
        if self.order_gate is not None:
            self.order_gate(checked)
        queued = PlaceIntent(checked) if intent is None else intent
        market.writer.enqueue(queued)
        return queued.future

    async def _admit(self, account: str, checked: CheckedOrder) -> None:
        """The account is an active member, and a contract wallet's signature its wallet accepts.

        Membership is asked again after the wallet's call: on a node that runs in a worker
        thread, and the membership poller may take in a suspension meanwhile and run its
        cancel-all (a cache hit unless it did)."""
        await self.require_active_member(account)
        if checked.wallet_check is not None:
            await self._require_wallet_signature(checked)
            await self.require_active_member(account)

    async def place_order(self, account: str, order: SignedOrderInput) -> Placed:
        market, checked = self._checked(account, order, int(time.time()))
        await self._admit(account, checked)
        return await self._queue(market, checked)

    async def replace_order(self, account: str, order_id: int, order: SignedOrderInput) -> Placed:
        """Cancel ``account``'s open order ``order_id`` and place ``order`` in its stead, atomically.

        ``order`` is checked as :meth:`place_order` checks it, and must be in the same market. The
        writer cancels the order and places the replacement in one cycle, or does neither:
        ``OrderNotOpen`` once the order has ended, or the replacement's own refusal. A resend of a
        replacement already placed (same client order id and signed order) answers it, 200.
        """
        if order.time_in_force not in REPLACING_TIME_IN_FORCE:
            # An IOC or FOK order never rests: one that did not fill would leave neither order.
            raise OrderRefused(
                f"a replacement takes the order's place on the book: time_in_force must be one of "
                f"{', '.join(REPLACING_TIME_IN_FORCE)}, not {order.time_in_force}",
                extra={"field": "time_in_force"},
            )
        market, checked = self._checked(account, order, int(time.time()))
        async with self.sessionmaker() as session:
            row = await repository.order_of(session, account, order_id)
        if row is None:
            raise NotFound(f"you have no order {order_id}")
        if row.market_id != market.spec.market_id:
            raise OrderRefused(
                f"order {order_id} is in market {row.market_id}: its replacement must be too",
                extra={"field": "market"},
            )
        await self._admit(account, checked)
        return await self._queue(market, checked, ReplaceIntent(account, row.sequence, checked))

    async def _require_wallet_signature(self, checked: CheckedOrder) -> None:
        """The order of a contract wallet (a signature that is not the maker's key's): the wallet
        must accept it now (ERC-1271), as the Vault will ask it at settlement; else refused.
        The caller asks membership again afterwards (see :meth:`_admit`).

        One chain call per such order (after the membership check, and only for the signed-in
        account's own wallet); orders signed by the maker's key never come here."""
        reason = checked.wallet_check
        if reason is None:
            return
        wallet, w3 = checked.account, self.runtime.w3
        digest = bytes.fromhex(checked.order_hash.removeprefix("0x"))
        signature = bytes.fromhex(checked.signature.removeprefix("0x"))
        try:
            accepted = await self.chain.run(lambda: wallet_accepts(w3, wallet, digest, signature))
        except ChainError as exc:  # 503, for this order alone in a batch
            raise to_domain_error(exc) from exc
        if not accepted and not await self._already_placed(checked):
            raise InvalidSignature(
                f"{reason}, nor does {wallet} accept it as a contract wallet (ERC-1271)",
                extra={"field": "signature"},
            )

    async def _already_placed(self, checked: CheckedOrder) -> bool:
        """Whether ``checked`` is a resend of an order journaled before (same client order id, same
        signed order): the writer answers it as placed, whatever its wallet says of it now, as it
        answers a key's order. Asked only of an order its wallet refuses."""
        async with self.sessionmaker() as session:
            found = await session.scalar(
                select(TradingOrder.id).where(
                    TradingOrder.account == checked.account,
                    TradingOrder.client_order_id == checked.client_order_id,
                    TradingOrder.order_hash == checked.order_hash,
                )
            )
        return found is not None

    async def place_orders(self, account: str, orders: list[SignedOrderInput]) -> list[Placed | DomainError]:
        """Place each of ``orders`` as :meth:`place_order` would; one refusal does not stop the others.

        Membership is checked once, for the whole batch, and contract wallets' signatures
        before anything is queued. Every order that passes its checks is queued before
        any outcome is awaited, with no await in between, so the batch enters its
        market's journal in the order given (usually in one cycle).
        The outcomes come back in that order: the placed order, or the refusal.
        """
        await self.require_active_member(account)
        now_unix = int(time.time())
        checked = [batch_item(self._checked, account, order, now_unix) for order in orders]
        asked = False
        for index, item in enumerate(checked):  # contract wallets are asked before anything is queued
            if not isinstance(item, DomainError) and item[1].wallet_check is not None:
                asked = True
                try:
                    await self._require_wallet_signature(item[1])
                except DomainError as refusal:
                    checked[index] = refusal
        if asked:  # as _admit does, once for all the calls, with no await before the queueing
            await self.require_active_member(account)
        outcomes: list[Placed | DomainError | asyncio.Future[Placed]] = []
        for item in checked:  # an order refused or failing here stops itself only
            outcomes.append(item if isinstance(item, DomainError) else batch_item(self._queue, *item))
        waiting = [outcome for outcome in outcomes if isinstance(outcome, asyncio.Future)]
        await asyncio.gather(*waiting, return_exceptions=True)  # cancelled with the request, like submit
        return [_outcome(outcome) for outcome in outcomes]

    async def require_active_member(self, account: str) -> None:
        if not await self.membership.is_active(account):
            raise NotActiveMember(f"{account} is not an active pool member: only active members trade")

    async def cancel_order(self, account: str, order_id: int) -> TradingOrder:
        """Cancel one of ``account``'s orders and return it (an order that already ended is left alone)."""
        async with self.sessionmaker() as session:
            row = await repository.order_of(session, account, order_id)
        if row is None:
            raise NotFound(f"you have no order {order_id}")
        if row.status == OrderStatus.OPEN:
            await self.market(row.market_id).writer.submit(CancelIntent(account, row.sequence))
            async with self.sessionmaker() as session:
                row = await repository.order_of(session, account, order_id)
            if row is None:  # pragma: no cover - orders are never deleted
                raise NotFound(f"you have no order {order_id}")
        return row

    async def cancel_all(
        self, account: str, market_id: str, cause: CancelCause = CancelCause.USER
    ) -> list[int]:
        ids: list[int] = await self.market(market_id).writer.submit(CancelAllIntent(account, cause))
        return ids

    async def cancel_all_orders_of(self, account: str, reason: str) -> int:
        """Cancel every open order of ``account`` in every market (suspension, expulsion); how many.

        ``reason`` is logged; the orders are marked cancelled because of suspension.
        Also drops the cached membership answer, so the next order asks the chain again.
        """
        account = Web3.to_checksum_address(account)
        self.membership.forget(account)
        cancelled = 0
        for market_id in self.markets:
            cancelled += len(await self.cancel_all(account, market_id, CancelCause.SUSPENDED))
        log.info("trading.member_orders_cancelled", account=account, reason=reason, orders=cancelled)
        return cancelled

    def membership_changed(self, account: str) -> None:
        """Forget the cached membership of ``account`` (its status changed on chain)."""
        self.membership.forget(Web3.to_checksum_address(account))

    async def fill_failed(self, fill_id: int) -> None:
        """A fill failed settlement for good (its transaction committed): its market's feed takes it back,
        once, however many times this is heard (the settler's call and the database's notice)."""
        if fill_id in self._voided:
            return
        async with self.sessionmaker() as session:
            fill = await session.get(TradingFill, fill_id)
        if fill is None or fill.settlement_state != SettlementState.FAILED.value or fill_id in self._voided:
            return
        self._voided.add(fill_id)
        market = self.markets.get(fill.market_id)
        if market is not None:
            market.feed.voided([fill])
        await self._cancel_disowned_order(fill)

    async def batch_settled(self, batch_id: int) -> None:
        """A settlement batch committed settled: its fills go to their accounts' ``fills``
        subscribers, settled, once however many times this is heard (the settler's call and the
        database's notice). Nothing is read while no connection follows any fills."""
        if batch_id in self._settled:
            return
        self._settled.add(batch_id)
        if not any(market.feed.fill_subscribers for market in self.markets.values()):
            return
        async with self.sessionmaker() as session:
            fills = await settled_fills_of_batch(session, batch_id)
        for market_id, rows in itertools.groupby(fills, key=lambda fill: fill.market_id):
            market = self.markets.get(market_id)
            if market is not None:
                market.feed.settled(list(rows))

    async def _cancel_disowned_order(self, fill: TradingFill) -> None:
        """The fill failed because the Vault found an order of it no longer signed: a contract
        wallet that accepted the signature at intake refuses it now (ERC-1271). Nothing on chain
        says so, and the order would go on matching, each of its fills failing the same way at
        settlement: if it still rests, it is cancelled (``wallet_refused``). Should its writer
        be stopping, its recovery cancels it (``MarketWriter``); should its queue be full, the
        next :meth:`recheck_wallet_orders` does."""
        market = self.markets.get(fill.market_id)
        if market is None:
            return
        async with self.sessionmaker() as session:
            orders = await disowned_orders(session, fill.market_id, [fill.id])
        for order in orders:
            try:
                await market.writer.submit(
                    CancelIntent(order.account, order.sequence, CancelCause.WALLET_REFUSED)
                )
            except (WriterUnavailable, RateLimited):  # the next wallet recheck, or the recovery, cancels it
                log.warning("trading.disowned_order_cancel_deferred", order_id=order.id, fill_id=fill.id)
                continue
            log.warning(
                "trading.order_cancelled_no_longer_signed",
                order_id=order.id,
                account=order.account,
                fill_id=fill.id,
            )

    async def recheck_wallet_orders(self) -> int:
        """Ask the wallet of every resting contract-wallet order whether it still accepts the
        order's signature (ERC-1271, as the Vault asks at settlement), and cancel the orders
        their wallets refused at this check and at the one before (``wallet_refused``): how
        many were cancelled. Two refusals in a row: one answer from a node behind the chain (a
        wallet it does not know yet) never ends a good order.

        An order signed by its maker's key is recognised by recovering the signature, once per
        order while it rests, and costs no chain call. A market that cannot take the cancel
        now (restarting, its queue full) is skipped; the next check asks again. A wallet the
        node cannot ask is skipped too (its order keeps what the last check said of it);
        ``_WALLET_ERRORS_PER_PASS`` such failures in a row end the pass with the last one
        (``exchange.chain.errors.ChainError``)."""
        w3 = self.runtime.w3
        resting = [
            (market, row)
            for market in list(self.markets.values())
            for row in list(market.writer.live.values())
        ]
        refused: set[str] = set()
        cancelled = recovered = failures = 0
        try:
            for market, row in resting:
                if row.order_hash in self._key_signed:
                    continue
                recovered += 1
                if recovered % _RECOVERIES_PER_TURN == 0:
                    await asyncio.sleep(0)  # a book of new orders never holds the loop for long
                digest = bytes.fromhex(row.order_hash.removeprefix("0x"))
                signature = bytes.fromhex(row.signature.removeprefix("0x"))
                if signed_by_key(digest, signature, row.account):
                    self._key_signed.add(row.order_hash)
                    continue
                wallet = row.account
                try:
                    accepted = await self.chain.run(
                        functools.partial(wallet_accepts, w3, wallet, digest, signature)
                    )
                except ChainError:
                    failures += 1
                    if row.order_hash in self._refused_once:
                        refused.add(row.order_hash)
                    if failures >= _WALLET_ERRORS_PER_PASS:
                        raise
                    log.warning(
                        "trading.wallet_recheck_skipped", order_id=row.id, account=wallet, exc_info=True
                    )
                    continue
                finally:
                    await asyncio.sleep(0)  # the embedded chain answers inline: let requests in between
                failures = 0
                if accepted:
                    continue
                refused.add(row.order_hash)
                if row.order_hash not in self._refused_once:
                    log.warning("trading.wallet_order_refused", order_id=row.id, account=wallet)
                    continue
                try:
                    done = await market.writer.submit(
                        CancelIntent(row.account, row.sequence, CancelCause.WALLET_REFUSED)
                    )
                except (WriterUnavailable, RateLimited):
                    log.warning("trading.wallet_order_cancel_deferred", order_id=row.id, account=wallet)
                    continue
                if done:
                    cancelled += 1
                    refused.discard(row.order_hash)
                    log.warning("trading.order_cancelled_no_longer_signed", order_id=row.id, account=wallet)
        finally:
            hashes = {row.order_hash for _, row in resting}
            self._key_signed &= hashes
            self._refused_once = refused
        return cancelled

    async def _follow_wallets(self) -> None:
        """Every ``trading_wallet_recheck_s``: :meth:`recheck_wallet_orders`."""
        while True:
            await asyncio.sleep(self.settings.trading_wallet_recheck_s)
            try:
                await self.recheck_wallet_orders()
            except asyncio.CancelledError:
                raise
            except ChainError as exc:
                log.warning("trading.wallet_recheck_deferred", error=str(exc))
            except Exception:
                log.exception("trading.wallet_recheck_failed")

    # ------------------------------------------------------------------ withdrawals

    async def request_withdrawal(
        self, session: AsyncSession, account: str, token: str, amount: int
    ) -> TradingWithdrawal:
        """Reserve ``amount`` of ``token`` and return the operator's co-signed authorisation."""
        token = Web3.to_checksum_address(token)
        if self.token_symbol(token) is None:
            raise FieldRefused(f"{token} is not a token of any market", location=("body", "token"))
        if not 0 < amount < 2**256:
            raise FieldRefused("amount must be a positive uint256", location=("body", "amount"))
        if self.withdrawal_gate is not None:
            self.withdrawal_gate(account)
        await self._refuse_unavailable(session, account, token, amount)  # before any signature
        market = next(iter(self.markets.values())).spec
        nonce = await repository.next_withdrawal_nonce(session, account)
        expiry = int(time.time()) + self.settings.trading_withdrawal_ttl_s
        authorisation = WithdrawalAuthorisation(
            account=account, token=token, amount_base=amount, nonce=nonce, expiry_unix=expiry
        )
        digest = withdrawal_hash(market.chain_id, market.vault, authorisation)
        signature = await self._operator_signature(market, authorisation)
        withdrawal = await repository.add_withdrawal(
            session,
            account=account,
            token=token,
            amount=amount,
            nonce=nonce,
            expiry_unix=expiry,
            digest="0x" + digest.hex(),
            operator_signature="0x" + signature.hex(),
        )
        await repository.apply_postings(
            session,
            ledger.reserve(account, token, amount),
            cause="withdrawal.reserve",
            reference=f"withdrawal:{withdrawal.id}",
        )
        log.info("withdrawal.authorised", account=account, token=token, amount=amount, nonce=nonce)
        return withdrawal

    async def _refuse_unavailable(self, session: AsyncSession, account: str, token: str, amount: int) -> None:
        """Refuse a withdrawal of more than the available balance, or one that needs proceeds of
        fills the Vault has not settled yet, before the operator is asked to sign anything.

        The Vault does not hold unsettled proceeds for the account until their fills settle; a
        fill that fails is voided, taking them back, which a reservation made meanwhile would
        refuse. The balance is locked first: a fill matched meanwhile waits for this transaction,
        so every fill whose proceeds the balance holds is among those read after it.
        """
        balances = await repository.load_balances(session, [(account, token)])
        balance = balances.get((account, token), Balance())
        if amount > balance.available:
            raise LedgerRefused(
                f"{amount} of {token} asked for, {balance.available} available",
                extra={"available": str(balance.available)},
            )
        markets = {key: (m.spec.base_token, m.spec.quote_token) for key, m in self.markets.items()}
        unsettled = await repository.unsettled_proceeds(session, account, token, markets)
        withdrawable = max(balance.available - unsettled, 0)
        if unsettled and amount > withdrawable:
            raise ProceedsUnsettled(
                f"of the {balance.available} available, {unsettled} are proceeds of fills not yet settled "
                f"on chain: at most {withdrawable} can be withdrawn until they settle",
                extra={"available": str(balance.available), "unsettled": str(unsettled)},
            )

    async def _operator_signature(self, market: MarketSpec, authorisation: WithdrawalAuthorisation) -> bytes:
        """The operator's signature: by its key (configured, or the embedded EVM's), else by the node."""
        w3 = self.runtime.w3
        typed = withdrawal_typed_data(market.chain_id, market.vault, authorisation)
        key = await self.chain.run(lambda: self._operator_key())
        if key is not None:
            return bytes(Account.sign_message(encode_typed_data(full_message=typed), key.key).signature)
        operator = Web3.to_checksum_address(str(w3.eth.default_account))
        # Numbers as decimal strings: a node reads a JSON number as a double, so an amount above
        # 2**53 would be signed rounded, and the Vault would refuse the signature.
        sent = {
            **typed,
            "message": {k: str(v) if isinstance(v, int) else v for k, v in typed["message"].items()},
        }

        def node_signs() -> bytes:
            answer: Any = w3.provider.make_request("eth_signTypedData_v4", [operator, sent])  # type: ignore[arg-type]
            if "result" not in answer:
                raise ChainUnavailable(f"the node did not sign the withdrawal: {answer.get('error')}")
            return bytes.fromhex(str(answer["result"]).removeprefix("0x"))

        signature = low_s(await self.chain.run(node_signs))
        signer = recover_signer(encode_typed_data(full_message=typed), signature)  # None if malformed
        if signer != operator:
            raise ChainUnavailable(
                f"the node's signature of the withdrawal is not {operator}'s over it (it recovers to "
                f"{signer}): nothing was authorised"
            )
        return signature

    def _operator_key(self) -> LocalAccount | None:
        secret = self.settings.operator_private_key
        if secret is not None:
            configured: LocalAccount = Account.from_key(secret.get_secret_value())
            return configured
        w3 = self.runtime.w3
        tester = w3.provider.ethereum_tester if isinstance(w3.provider, EthereumTesterProvider) else None
        if tester is not None:
            operator = str(w3.eth.default_account).lower()
            for key in tester.backend.account_keys:
                candidate: LocalAccount = Account.from_key(bytes(key.to_bytes()))
                if candidate.address.lower() == operator:
                    return candidate
        return None

    # ------------------------------------------------------------------ membership

    async def _is_active_on_chain(self, account: str) -> bool:
        registry = self.runtime.pool.registry
        return bool(await self.chain.run(lambda: registry.call("isActiveMember", account)))

    async def _cancel_orders_of_inactive_members(self) -> None:
        accounts = {row.account for market in self.markets.values() for row in market.writer.live.values()}
        for account in sorted(accounts):
            if not await self.membership.is_active(account):
                await self.cancel_all_orders_of(account, "not an active member at start-up")

    async def _follow_membership(self, from_block: int) -> None:
        """Every poll: the registry's status changes since the last, and the orders of the
        accounts no longer active cancelled. A cancel that fails (a market restarting, its
        queue full) is tried again at every later poll until it is done; an account active
        again by then is left alone."""
        registry = self.runtime.pool.registry
        w3 = self.runtime.w3
        to_cancel: dict[str, str] = {}  # account: why, until its orders are cancelled
        while True:
            await asyncio.sleep(self.settings.trading_membership_poll_s)
            try:
                head = await self.chain.run(lambda: int(w3.eth.block_number))
                if head >= from_block:
                    events = await self.chain.run(
                        functools.partial(fetch_events, registry, ("MemberStatusChanged",), from_block, head)
                    )
                    from_block = head + 1
                    for event in events:
                        account = Web3.to_checksum_address(event.args["account"])
                        self.membership.forget(account)
                        if int(event.args["newStatus"]) == ACTIVE_STATUS:
                            to_cancel.pop(account, None)
                        else:
                            to_cancel[account] = f"status changed on chain in block {event.block_number}"
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trading.membership_poll_failed")
            for suspended, reason in list(to_cancel.items()):
                try:
                    await self.cancel_all_orders_of(suspended, reason)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("trading.member_orders_cancel_failed", account=suspended, reason=reason)
                else:
                    del to_cancel[suspended]


def trading_startup() -> Callable[[FastAPI], Any]:
    """Lifespan hook: check the signature backend, build the markets, recover their books, start writing."""

    @asynccontextmanager
    async def hook(app: FastAPI) -> AsyncIterator[None]:
        assert_native_backend()
        settings: Settings = app.state.settings
        runtime: ChainRuntime = app.state.chain
        access = ChainAccess(runtime)
        spec = await access.run(lambda: market_from_chain(runtime, settings))
        writer_engine = create_db_engine(settings)
        service = TradingService(
            settings,
            runtime,
            app.state.db_sessionmaker,
            [spec],
            writer_sessionmaker=create_sessionmaker(writer_engine),
            notices_engine=writer_engine,
        )
        try:
            await service.start()
            app.state.trading = service
            register_metrics(app, "trading", trading_metrics(service))
            log.info("trading.started", markets=list(service.markets), vault=spec.vault)
            yield
        finally:
            await service.stop()
            await writer_engine.dispose()
            log.info("trading.stopped")

    return hook
