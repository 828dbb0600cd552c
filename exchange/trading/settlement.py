"""The settlement pipeline: fills from the engine, packed into ``Vault.settle`` transactions.

A fill's settlement state goes ``pending`` → ``submitted`` (in the open batch) →
``settled``; or back to ``pending`` when its batch did not run; or ``failed``
(for good, with the reason in ``settlement_failures``). One :meth:`Settler.step`
does one of two things:

**No batch open** — take up to ``batch_size`` pending fills in trade order and
pack them (``exchange.trading.batching.pack``); a fill that has been in
``max_reverts`` reverted batches goes in a batch of its own (see below), and a
batch ends before the fill that would bring its contract-wallet orders past
``WALLET_ORDERS_PER_BATCH`` (each wallet may burn the Vault's ``WALLET_CHECK_GAS``). Simulate
the call (``eth_estimateGas`` from the operator). If the Vault would revert:

* with an error that is not about a fill (not in ``FILL_ERRORS``: the operator
  lost ``OPERATOR_ROLE``, a token refuses the fee transfer, a packing bug…),
  settlement is *blocked*: the error is logged, nothing fails, and the step says
  ``BLOCKED`` (``run`` waits before trying again, ``drain`` raises
  ``SettlementBlocked``). Any probe below that reverts so blocks the same way.
* with an error about a fill, find the first fill that makes it revert (binary
  search over prefixes: ``settle`` checks fills in order, so a prefix reverts
  iff it holds a bad fill) and simulate that fill alone. If it reverts alone
  with an error about a fill, fail it with that error, void its ledger postings,
  and try again next step without it: a bad fill is never sent and never
  retried. If it passes alone, it only reverts after the fills before it (an
  overfill, a balance they spend): those are sent now, and it leads the next
  batch, where it is judged alone.

Otherwise choose the gas limit (``batching.gas_limit``: the estimate, a margin, and a
reserve for each contract-wallet order and each of its fills), cutting the batch
shorter, each cut simulated again, until it fits one transaction (``batching.gas_cap``:
the block's gas limit and EIP-7825's cap); then the nonce (the operator's pending
count) and the fees, sign, and in ONE database transaction write the batch, its
fills and the signed attempt (hash included) and mark the fills ``submitted``. Only then
broadcast. The operator's sender lock (``exchange.chain.senders``) is held from
reading the pending count until the node has the batch, so another transaction
of the operator sent from this process (a foundation transaction) cannot take
the same nonce.

**A batch open** — find out what became of it, reading the operator's mined
nonce *first*, then the receipts of all its attempts (a batch has several when
fees were bumped; they share its nonce, so at most one is mined):

* a receipt with status 1, ``confirmations`` deep: the batch is settled. The
  fills the Vault skipped (``FillSkipped``: a maker withdrew one of their orders
  on chain since the match, or its contract wallet no longer accepts it, see
  ``exchange.trading.skipped_fills``) fail for good
  in the same transaction that settles the others, voided as below, with the
  Vault's reason. Its order states are checked against the database
  (``batching.batch_fate``, the skipped fills adding nothing), its receipt holds a
  Trade per fill not skipped, and the fees it sent to the Fund (those fills')
  leave the ledger's ``vault:fees`` account.
* a receipt with status 0, ``confirmations`` deep: the fills go back to pending,
  so the next step simulates them again (which isolates a bad fill). No fill of
  a batch of several fails for its revert: whoever made it revert (a member
  suspended just before; a maker withdrawing its own order, or its contract
  wallet refusing it, no longer reverts a batch) is found by that simulation,
  and the others are innocent. A fill that has been in
  ``max_reverts`` reverted batches is sent alone from then on, so a revert it
  keeps causing (a state changed before the batch and back after it, which no
  simulation sees) costs one transaction, not the batch; when a batch holding
  only it reverts again, it fails. Reverts whose replay shows an error not about
  a fill count against no fill. A replay the node
  answers with an error of its own instead of a revert (a node that keeps no state
  that old, or geth's "out of gas" without data) closes the batch as an
  unexplained revert, as a replay that passes does, instead of asking again at
  every step.
* no receipt, but the nonce is used: another transaction took it (or a
  node-signed attempt whose hash was never stored). Once the nonce is used at
  the block ``confirmations`` deep (a reorganisation above it could still bring
  the batch's own transaction back), the order states at that block decide:
  unchanged → the fills go back to pending; changed by exactly the batch →
  settled (in the block its nonce was used in); changed by the batch less fills
  it skipped → settled as its receipt says, when the transaction that took the
  nonce is the batch's own call; anything else stops the pipeline
  (``SettlementInconsistent``).
* otherwise the transaction is pending or was never sent: send it again if the
  node does not know it; after ``stuck_after_s`` replace it with the same nonce
  and fees raised by ``fee_bump_percent`` (written down before it is sent).

So a restart in any state neither loses nor repeats a fill: a batch written
but never sent is sent; one sent is found by its hashes; the on-chain filled
amounts of its orders double-check both outcomes. With at most one batch open
per Vault (a partial unique index), the order states can only be "before" or
"after" the open batch.

Two settlers on one database (``exchange serve``'s and an ``exchange settle``)
may follow the same batch. Closing it is an UPDATE conditional on the batch still
being open, in the transaction of its fee sweep: one settler closes it, and the
other, finding it closed (there, or when it reads the settled amounts for the
order states), writes nothing and looks again next step. Opening a batch and
failing a fill take a per-Vault lock (``serialise_settlers``; SQLite runs one
writer at a time), and a fill fails only while it is still pending and no batch
has been opened since its judgement began: a settler that judged a fill alone
while the other's batch was being opened, sent or even mined (a batch the fill
may need, as a sale needs the purchase before it) fails nothing and judges it
again once that batch is decided.

Failed fills: the trade cannot happen on chain, so the fill's ledger postings
are voided (cause ``fill.void``): the buyer gets its quote and fees back, the
seller its base. If the ledger refuses (the money was spent since), the fill
still fails, the refusal is logged, and ``exchange audit`` shows the difference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types
from hexbytes import HexBytes
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import HTTPProvider, Web3
from web3.exceptions import Web3RPCError
from web3.types import BlockIdentifier, TxParams, TxReceipt

from exchange.chain.binding import BoundContract
from exchange.chain.errors import ChainUnavailable, ContractReverted
from exchange.db.base import utc_now
from exchange.kit.logging import get_logger
from exchange.trading import ledger, repository
from exchange.trading import settlement_repository as store
from exchange.trading.batching import (
    BatchFate,
    Fees,
    FillToSettle,
    SettleArguments,
    SignedOrder,
    batch_fate,
    contributions,
    gas_cap,
    gas_limit,
    pack,
)
from exchange.trading.chain_calls import ChainCalls
from exchange.trading.eip712 import OrderSide, VaultOrder
from exchange.trading.ledger import VAULT_EXTERNAL, FillAmounts, Posting
from exchange.trading.operator import BroadcastRefused, OperatorTransactions, SignedTransaction
from exchange.trading.repository import FEES_ACCOUNT, LedgerRefused
from exchange.trading.settlement_models import BatchState
from exchange.trading.settlement_repository import BatchRecord, FillRecord, OrderRecord
from exchange.trading.signing import OrderDigester, OrderFields, signed_by_key
from exchange.trading.skipped_fills import SKIPPED_ERROR, SkipOutsideBatch, SkippedFill, skipped_by_fill
from exchange.trading.vault_events import reversed_postings

log = get_logger(__name__)

_ORDER_CACHE_SIZE = 20_000
# The contract-wallet orders one batch may hold. The Vault lets each wallet burn up to its
# WALLET_CHECK_GAS (500,000) answering isValidSignature, so a batch's gas grows by that much per
# wallet order whatever the wallet does with it; its gas limit reserves about 513,000 more per
# wallet order and 60,000 per fill of one (``batching.gas_limit``), on top of an estimate that
# may already hold the caps the wallets burnt. 16 such wallets can ask for some 20 million, past
# EIP-7825's 16,777,216 a transaction and near a block's gas: a batch whose limit does not fit
# (``batching.gas_cap``) is cut shorter before it is sent (``Settler._fit``, each cut simulated
# again); the bound keeps wallets that burn their caps to a share of a block that leaves every
# other member's fills room.
WALLET_ORDERS_PER_BATCH = 16


class SettlementInconsistent(Exception):
    """The chain's order states match neither outcome of the open batch: a person must look."""


class _BatchClosed(Exception):
    """Another settler closed the open batch meanwhile, and did all that closing it does."""


class SettlementBlocked(Exception):
    """The Vault refuses any batch for a reason not about a fill (``Settler.blocked_by``)."""


class _FillsMoved(Exception):
    """A fill of the batch being written is no longer pending: the transaction is rolled back."""


# The Vault's custom errors in ``settle`` that are about a fill (its orders, their makers, its
# amounts): the fill can never settle, so it fails. Any other revert (AccessControl's
# ``AccessControlUnauthorizedAccount``, ``SafeERC20FailedOperation`` or a token's own error from
# the fee transfer, ``VaultUnsupportedMarket`` for a Vault of other tokens than the settler's,
# ``VaultLengthMismatch`` and ``VaultUnknownOrderIndex`` from packing, ``Panic``…) would
# refuse every fill alike: it blocks settlement instead. ``VaultInvalidSignature`` comes only from
# a Vault deployed before ``settle`` skipped the fills of an order whose signature its maker does
# not accept (``SkipReason.WALLET_REFUSED``, with or without code: EIP-7702).
FILL_ERRORS = frozenset(
    {
        "VaultOrderExpired",
        "VaultNotActiveMember",
        "VaultInvalidSignature",
        "VaultSameSide",
        "VaultPriceOutsideLimit",
        "VaultFeeAboveCap",
        "VaultOrderOverfilled",
        "VaultFillTooSmall",
        "VaultInsufficientBalance",
    }
)
# A mined revert whose replay at its block passes: the state that reverted it was undone in the
# block (or the gas ran out). Only a batch of one fill blames that fill for it.
UNEXPLAINED_REVERT = "SettlementReverted"
# The reverts of mined batches that count against their fills (``max_reverts``).
FILL_REVERTS = FILL_ERRORS | {UNEXPLAINED_REVERT}


def _about_a_fill(error: ContractReverted) -> bool:
    return error.error_name in FILL_ERRORS


@dataclass(frozen=True, slots=True)
class _Prefix:
    """The fills before a culprit that passes alone: they are settled first, with this estimate."""

    length: int
    gas_estimate: int


class StepOutcome(StrEnum):
    IDLE = "idle"  # nothing pending, nothing open
    OPENED = "opened"  # a batch was written and sent
    WAITING = "waiting"  # the open batch is not decided yet
    SETTLED = "settled"
    RETURNED = "returned"  # the open batch did not run: its fills are pending again
    FILL_FAILED = "fill_failed"  # a fill was given up
    BLOCKED = "blocked"  # the Vault refuses any batch for a reason not about a fill: nothing failed


@dataclass(frozen=True, slots=True)
class SettlementConfig:
    batch_size: int = 50
    confirmations: int = 0
    fee_bump_percent: int = 20
    stuck_after_s: float = 30.0
    max_fee_per_gas_wei: int = 500 * 10**9
    max_reverts: int = 3
    gas_margin_percent: int = 25


class Settler:
    """Settles one Vault's fills; one instance per Vault (the open-batch index refuses a second batch)."""

    def __init__(
        self,
        vault: BoundContract,
        operator: OperatorTransactions,
        sessionmaker: async_sessionmaker[AsyncSession],
        calls: ChainCalls,
        *,
        chain_id: int,
        base_token: str,
        quote_token: str,
        config: SettlementConfig,
    ) -> None:
        self.vault = vault
        self.operator = operator
        self.chain_id = chain_id
        self.base_token = Web3.to_checksum_address(base_token)
        self.quote_token = Web3.to_checksum_address(quote_token)
        self.config = config
        self._sessionmaker = sessionmaker
        self._calls = calls
        self._lock = asyncio.Lock()
        self._orders: dict[int, SignedOrder] = {}
        self._digester = OrderDigester(chain_id, vault.address)
        settle_abi = vault.contract.get_function_by_name("settle").abi
        self._settle_types = get_abi_input_types(settle_abi)
        self._settle_selector = function_abi_to_4byte_selector(settle_abi)
        # Told of each fill failed for good, after its transaction committed (the service's feed).
        self.fill_failed: Callable[[int], Awaitable[None]] | None = None
        # Told of each batch settled, after its transaction committed (the service's feed).
        self.batch_settled: Callable[[int], Awaitable[None]] | None = None
        # The revert of the last step that said BLOCKED.
        self.blocked_by: ContractReverted | None = None

    # --- loop -----------------------------------------------------------------------------------

    async def step(self) -> StepOutcome:
        """Advance settlement by one decision (see the module docstring)."""
        async with self._lock:
            try:
                return await self._decide()
            except repository.BalancesBusy as busy:  # rolled back: the market writer had them; again soon
                log.info("settlement.balances_busy", detail=busy.detail)
                return StepOutcome.WAITING

    async def _decide(self) -> StepOutcome:
        async with self._sessionmaker() as session, session.begin():
            batch = await store.open_batch(session, self.vault.address)
        if batch is not None:
            try:
                return await self._follow(batch)
            except _BatchClosed:  # nothing was written: the other settler swept and moved the fills
                log.info("settlement.batch_closed_elsewhere", batch_id=batch.id)
                return StepOutcome.WAITING
        return await self._open()

    async def drain(self, *, poll_s: float, timeout_s: float | None = None) -> None:
        """Step until no fill is pending and no batch is open (``exchange settle --once``, tests).

        Raises ``SettlementBlocked`` when a step is blocked: waiting would not unblock it.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            outcome = await self.step()
            if outcome is StepOutcome.IDLE:
                return
            if outcome is StepOutcome.BLOCKED:
                raise SettlementBlocked(f"the Vault refuses settlement: {self.blocked_by}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"settlement still busy after {timeout_s} s (last step: {outcome})")
            if outcome is StepOutcome.WAITING:
                await asyncio.sleep(poll_s)

    async def run(self, interval_s: float) -> None:
        """Settle until cancelled; a failed step is logged and retried, an inconsistency stops the loop."""
        while True:
            try:
                outcome = await self.step()
            except asyncio.CancelledError:
                raise
            except SettlementInconsistent as exc:
                log.critical("settlement.halted", error=str(exc))
                raise
            except Exception as exc:  # a node or database hiccup must not end the loop
                log.error("settlement.step_failed", error=str(exc), exc_info=exc)
                outcome = StepOutcome.WAITING
            if outcome in (StepOutcome.IDLE, StepOutcome.WAITING, StepOutcome.BLOCKED):
                await asyncio.sleep(interval_s)

    # --- opening a batch ------------------------------------------------------------------------

    async def _open(self) -> StepOutcome:
        async with self._sessionmaker() as session, session.begin():
            fills = await store.pending_fills(session, self.config.batch_size)
            if not fills:
                return StepOutcome.IDLE
            reverts = await store.reverted_batches_of(session, [fill.id for fill in fills], FILL_REVERTS)
            newest = await store.newest_batch(session, self.vault.address)
            if newest.open:  # another settler's batch: judge nothing before it is decided
                return StepOutcome.WAITING
            judged_after = newest.id
        fills = self._next_batch(fills, reverts)
        fills = fills[: self._within_wallet_budget(fills)]
        to_settle: list[FillToSettle] = []
        for fill in fills:
            mismatch = self._hash_mismatch(fill)
            if mismatch is not None:
                return await self._fail(
                    fill,
                    "OrderHashMismatch",
                    {"order_id": mismatch},
                    batch_id=None,
                    judged_after=judged_after,
                )
            to_settle.append(self._to_settle(fill))
        arguments = pack(to_settle)
        try:
            estimate = await self._simulate(arguments)
        except ContractReverted as reverted:
            found = await self._isolate(fills, to_settle, reverted, judged_after)
            if isinstance(found, StepOutcome):
                return found
            fills, to_settle = fills[: found.length], to_settle[: found.length]
            arguments, estimate = pack(to_settle), found.gas_estimate
        fitted = await self._fit(fills, to_settle, arguments, estimate)
        if fitted is None:
            return StepOutcome.WAITING
        fills, arguments, gas = fitted
        async with self._calls.sending(self.operator.address):  # the nonce until the node has the batch
            return await self._open_batch(fills, arguments, gas)

    def _gas_limit(self, fills: Sequence[FillRecord], estimate: int) -> int:
        """``batching.gas_limit`` for ``fills`` simulated at ``estimate`` (or an estimate above theirs)."""
        wallet_orders = len(self._wallet_orders(fills))
        wallet_fills = sum(1 for fill in fills if self._wallet_orders([fill]))
        return gas_limit(estimate, self.config.gas_margin_percent, wallet_orders, wallet_fills)

    async def _fit(
        self,
        fills: list[FillRecord],
        to_settle: list[FillToSettle],
        arguments: SettleArguments,
        estimate: int,
    ) -> tuple[list[FillRecord], SettleArguments, int] | None:
        """The batch, cut to its longest prefix whose gas limit fits one transaction (``gas_cap``:
        the block's gas limit and EIP-7825's cap), with that limit. A limit clipped to the cap
        would leave a wallet that refuses once the batch is mined short of its cap (the batch
        reverts, ``VaultWalletCheckOutOfGas``), and one above EIP-7825's cap is refused at
        broadcast: either would come back at every step. A prefix does less than the batch, so
        the batch's estimate bounds its own; the prefix chosen is simulated again for its own,
        and cut again if that still does not fit. None when that simulation reverts (the chain
        moved): the next step starts over."""
        cap = gas_cap(await self._calls.run(self.operator.block_gas_limit))
        count, gas = len(fills), self._gas_limit(fills, estimate)
        while gas > cap and count > 1:
            # The longest shorter prefix that fits at the longer batch's estimate; when none does,
            # half the batch, and let the prefix's own estimate tell.
            count = next(
                (n for n in range(count - 1, 0, -1) if self._gas_limit(fills[:n], estimate) <= cap),
                max(count // 2, 1),
            )
            arguments = pack(to_settle[:count])
            try:
                estimate = await self._simulate(arguments)
            except ContractReverted as reverted:
                log.info("settlement.shortened_batch_refused", fills=count, error_name=reverted.error_name)
                return None
            gas = self._gas_limit(fills[:count], estimate)
        if count < len(fills):
            log.warning(
                "settlement.batch_shortened", fills=len(fills), kept=count, gas_limit=gas, gas_cap=cap
            )
        if gas > cap:  # one fill (two orders at most) needs more than a transaction may have
            log.error("settlement.gas_limit_clipped", fill_id=fills[0].id, gas_limit=gas, gas_cap=cap)
            gas = cap
        return fills[:count], arguments, gas

    async def _open_batch(self, fills: list[FillRecord], arguments: SettleArguments, gas: int) -> StepOutcome:
        """Choose the nonce and fees, write the batch down, then send it (the module docstring)."""
        operator = self.operator
        nonce, fees = await self._calls.run(lambda: (operator.pending_nonce(), operator.fees()))
        fees = self._capped(fees)
        calldata = self._calldata(arguments)
        tx = operator.transaction(self.vault.address, calldata, nonce=nonce, gas=gas, fees=fees)
        signed = operator.sign(tx)
        try:
            async with self._sessionmaker() as session, session.begin():
                opened = await store.open_new_batch(
                    session,
                    chain_id=self.chain_id,
                    vault=self.vault.address,
                    operator=operator.address,
                    nonce=nonce,
                    gas_limit=gas,
                    calldata=calldata,
                    fill_ids=arguments.fill_ids,
                    tx_hash=signed.tx_hash if signed else None,
                    max_fee_per_gas_wei=fees.max_fee_per_gas_wei,
                    max_priority_fee_per_gas_wei=fees.max_priority_fee_per_gas_wei,
                )
                if opened is None:
                    raise _FillsMoved
        except _FillsMoved:  # a fill left "pending" meanwhile: nothing was written, look again
            return StepOutcome.WAITING
        batch_id, attempt_id = opened
        log.info(
            "settlement.batch_opened",
            batch_id=batch_id,
            fills=len(fills),
            orders=len(arguments.orders),
            nonce=nonce,
            gas_limit=gas,
            tx_hash=signed.tx_hash if signed else None,
        )
        await self._send(
            batch_id, attempt_id, tx_nonce=nonce, gas=gas, calldata=calldata, fees=fees, signed=signed
        )
        return StepOutcome.OPENED

    def _next_batch(self, fills: list[FillRecord], reverts: dict[int, int]) -> list[FillRecord]:
        """The fills in trade order up to the first that has been in ``max_reverts`` reverted
        batches, which goes alone when it comes first."""
        for index, fill in enumerate(fills):
            if reverts.get(fill.id, 0) >= self.config.max_reverts:
                return fills[: index or 1]
        return fills

    def _within_wallet_budget(self, fills: list[FillRecord]) -> int:
        """How many of ``fills``, in order, hold at most ``WALLET_ORDERS_PER_BATCH`` distinct
        contract-wallet orders (at least one fill: it holds two orders at most)."""
        wallets: set[int] = set()
        for index, fill in enumerate(fills):
            wallets |= self._wallet_orders([fill])
            if len(wallets) > WALLET_ORDERS_PER_BATCH:
                return max(index, 1)
        return len(fills)

    def _wallet_orders(self, fills: Sequence[FillRecord]) -> set[int]:
        """The ids of the contract-wallet orders ``fills`` use."""
        return {
            order.id for fill in fills for order in (fill.maker, fill.taker) if self._signed(order).wallet
        }

    def _to_settle(self, fill: FillRecord) -> FillToSettle:
        return FillToSettle(
            fill_id=fill.id,
            maker=self._signed(fill.maker),
            taker=self._signed(fill.taker),
            maker_fee_bps=fill.maker_fee_bps,
            taker_fee_bps=fill.taker_fee_bps,
            amount_base=fill.amount_base,
            price_quote=fill.price_quote,
        )

    def _signed(self, order: OrderRecord) -> SignedOrder:
        """The order as the Vault takes it (cached: a resting order is in many fills)."""
        cached = self._orders.get(order.id)
        if cached is None:
            if len(self._orders) >= _ORDER_CACHE_SIZE:
                self._orders.clear()
            vault_order = VaultOrder(
                maker=order.account,
                base_token=self.base_token,
                quote_token=self.quote_token,
                side=OrderSide.BUY if order.side == "buy" else OrderSide.SELL,
                price_quote=order.price_quote,
                amount_base=order.amount_base,
                max_fee_bps=order.max_fee_bps,
                nonce=order.nonce,
                expiry_unix=order.expiry_unix,
            )
            digest = self._digester.digest(OrderFields.from_vault_order(vault_order))
            signature = bytes(HexBytes(order.signature))
            wallet = not signed_by_key(digest, signature, order.account)
            cached = SignedOrder(vault_order, signature, "0x" + digest.hex(), wallet)
            self._orders[order.id] = cached
        return cached

    def _hash_mismatch(self, fill: FillRecord) -> int | None:
        """The id of an order whose stored fields do not hash to its stored hash (never sent)."""
        for order in (fill.maker, fill.taker):
            if self._signed(order).order_hash != order.order_hash.lower():
                return order.id
        return None

    def _calldata(self, arguments: SettleArguments) -> bytes:
        encoded = abi_encode(self._settle_types, [arguments.orders, arguments.signatures, arguments.fills])
        return self._settle_selector + encoded

    async def _simulate(self, arguments: SettleArguments) -> int:
        """Gas the call needs; raises ``ContractReverted`` with the Vault's custom error."""
        vault = self.vault
        call: TxParams = {
            "from": self.operator.address,
            "to": vault.address,
            "data": HexBytes(self._calldata(arguments)),
        }
        # BoundContract decodes reverts of both the embedded EVM and JSON-RPC nodes.
        return await self._calls.run(lambda: vault.estimate_gas(call))

    async def _isolate(
        self,
        fills: Sequence[FillRecord],
        to_settle: Sequence[FillToSettle],
        error: ContractReverted,
        judged_after: int | None,
    ) -> StepOutcome | _Prefix:
        """Fail the first fill that makes the batch revert, if the revert is about it (module docstring).

        The shortest reverting prefix ends with it; the prefix before it passed, with the estimate kept.
        """
        if not _about_a_fill(error):
            return self._blocked(error)
        low, high = 1, len(to_settle)  # the prefix of length `high` reverts, with `error`
        passing_estimate = 0  # of the prefix of length `low - 1`, once a probe passed
        while low < high:
            middle = (low + high) // 2
            try:
                passing_estimate = await self._simulate(pack(to_settle[:middle]))
            except ContractReverted as reverted:
                if not _about_a_fill(reverted):
                    return self._blocked(reverted)
                high, error = middle, reverted
            else:
                low = middle + 1
        culprit = fills[high - 1]
        if high > 1:  # the prefix of length 1 was the culprit alone already
            try:
                await self._simulate(pack([to_settle[high - 1]]))
            except ContractReverted as reverted:
                if not _about_a_fill(reverted):
                    return self._blocked(reverted)
                error = reverted
            else:
                log.info(
                    "settlement.fill_deferred",
                    fill_id=culprit.id,
                    error_name=error.error_name,
                    error_args=error.error_args,
                    settled_first=high - 1,
                )
                return _Prefix(high - 1, passing_estimate)
        log.warning(
            "settlement.fill_refused",
            fill_id=culprit.id,
            error_name=error.error_name,
            error_args=error.error_args,
            probed_prefix=high,
        )
        return await self._fail(
            culprit, error.error_name, _json_args(error.error_args), batch_id=None, judged_after=judged_after
        )

    def _blocked(self, error: ContractReverted) -> StepOutcome:
        self.blocked_by = error
        log.error(
            "settlement.blocked",
            error_name=error.error_name,
            error_args=error.error_args,
            contract=error.contract,
        )
        return StepOutcome.BLOCKED

    def _capped(self, fees: Fees) -> Fees:
        cap = self.config.max_fee_per_gas_wei
        return Fees(min(fees.max_fee_per_gas_wei, cap), min(fees.max_priority_fee_per_gas_wei, cap))

    async def _send(
        self,
        batch_id: int,
        attempt_id: int,
        *,
        tx_nonce: int,
        gas: int,
        calldata: bytes,
        fees: Fees,
        signed: SignedTransaction | None,
    ) -> None:
        operator = self.operator
        tx = operator.transaction(self.vault.address, calldata, nonce=tx_nonce, gas=gas, fees=fees)
        try:
            tx_hash = await self._calls.run(lambda: operator.broadcast(tx, signed))
        except BroadcastRefused as refusal:
            # Not an outcome: receipts and the mined nonce will tell what happened.
            log.warning(
                "settlement.broadcast_refused", batch_id=batch_id, nonce=tx_nonce, reason=str(refusal)[:300]
            )
            return
        async with self._sessionmaker() as session, session.begin():
            await store.mark_sent(session, batch_id, attempt_id, tx_hash)
        log.info("settlement.sent", batch_id=batch_id, nonce=tx_nonce, tx_hash=tx_hash)

    # --- following the open batch ---------------------------------------------------------------

    async def _follow(self, batch: BatchRecord) -> StepOutcome:
        operator = self.operator
        mined_nonce = await self._calls.run(operator.mined_nonce)  # before the receipts: see the docstring
        head = await self._calls.run(operator.head)
        for attempt in reversed(batch.attempts):
            if attempt.tx_hash is None:
                continue
            tx_hash = attempt.tx_hash
            receipt = await self._calls.run(partial(operator.receipt, tx_hash))
            if receipt is None:
                continue
            if head - int(receipt["blockNumber"]) < self.config.confirmations:
                return StepOutcome.WAITING
            if receipt["status"] == 1:
                skipped = self._skipped(batch, receipt)
                await self._check_fate(batch, BatchFate.EXECUTED, skipped)
                await self._close_settled(batch, tx_hash, receipt, skipped=skipped)
                return StepOutcome.SETTLED
            await self._close_reverted(batch, tx_hash, receipt)
            return StepOutcome.RETURNED
        if mined_nonce > batch.nonce:
            # Decided from a block ``confirmations`` deep, as a receipt is: above it, a reorganisation
            # may still bring back the batch's own transaction in place of the one that took its nonce.
            deep = head - self.config.confirmations
            if deep < 0 or await self._calls.run(partial(operator.mined_nonce, deep)) <= batch.nonce:
                return StepOutcome.WAITING
            fate = await self._fate(batch, block=deep)
            if fate is BatchFate.EXECUTED:  # in the block its nonce was used in, as a receipt would say
                ran_in = await self._calls.run(partial(operator.first_block_past, batch.nonce, deep))
                await self._close_settled(batch, None, None, block_number=ran_in)
                return StepOutcome.SETTLED
            # Its own transaction may have run and skipped fills: some (the states match neither
            # outcome), or all (they match not having run).
            if await self._settled_with_skips(batch, deep):
                return StepOutcome.SETTLED
            if fate is BatchFate.NOT_EXECUTED:
                async with self._sessionmaker() as session, session.begin():
                    if not await store.close_returned(session, batch.id, BatchState.DROPPED):
                        raise _BatchClosed
                log.warning("settlement.batch_dropped", batch_id=batch.id, nonce=batch.nonce)
                return StepOutcome.RETURNED
            raise SettlementInconsistent(f"batch {batch.id}: the Vault's order states match neither outcome")
        await self._nudge(batch)
        return StepOutcome.WAITING

    def _skipped(self, batch: BatchRecord, receipt: TxReceipt) -> dict[int, SkippedFill]:
        """The batch's fills that its mined transaction skipped, by fill id."""
        try:
            return skipped_by_fill(self.vault, receipt, [fill.id for fill in batch.fills])
        except SkipOutsideBatch as error:
            raise SettlementInconsistent(f"batch {batch.id}: {error}") from error

    async def _settled_with_skips(self, batch: BatchRecord, deep: int) -> bool:
        """The batch's own transaction, whose hash was never stored (a node signed it), took its
        nonce and skipped fills, so that the order states match neither outcome (or, all skipped,
        match its not having run): its receipt, found in the block the nonce was used in, names
        them. True when it closed the batch so; False when another transaction took the nonce."""
        operator, vault = self.operator, self.vault.address
        ran_in = await self._calls.run(partial(operator.first_block_past, batch.nonce, deep))
        mined = await self._calls.run(
            partial(operator.mined_call, batch.nonce, ran_in, vault, bytes(batch.calldata))
        )
        if mined is None or mined[1]["status"] != 1:
            return False
        tx_hash, receipt = mined
        skipped = self._skipped(batch, receipt)
        if not skipped or await self._fate(batch, block=deep, skipped=skipped) is not BatchFate.EXECUTED:
            return False
        await self._close_settled(batch, tx_hash, receipt, skipped=skipped)
        return True

    async def _fate(
        self, batch: BatchRecord, block: BlockIdentifier = "latest", skipped: Collection[int] = ()
    ) -> BatchFate:
        """What became of the batch, from its orders' filled amounts; fills in ``skipped`` (ids)
        added nothing to them when it ran."""
        added = contributions([self._to_settle(fill) for fill in batch.fills if fill.id not in skipped])
        for fill in batch.fills:  # the orders of skipped fills alone: unchanged whether it ran or not
            added.setdefault(fill.maker.order_hash.lower(), 0)
            added.setdefault(fill.taker.order_hash.lower(), 0)
        ids = {fill.maker.order_hash.lower(): fill.maker.id for fill in batch.fills}
        ids |= {fill.taker.order_hash.lower(): fill.taker.id for fill in batch.fills}
        async with self._sessionmaker() as session, session.begin():
            settled = await store.settled_amounts(session, ids.values())
            # Read after the amounts: a batch still open then was not yet counted in them.
            if not await store.batch_is_open(session, batch.id):
                raise _BatchClosed
        before = {order: settled.get(order_id, 0) for order, order_id in ids.items()}
        vault = self.vault

        def read_states() -> dict[str, int]:
            hashes = sorted(added)
            if not isinstance(vault.w3.provider, HTTPProvider):
                return {
                    order: int(vault.call("orderState", HexBytes(order), block=block)[0]) for order in hashes
                }
            # One JSON-RPC batch instead of a round trip per order.
            with vault.w3.batch_requests() as batch:
                for order in hashes:
                    batch.add(
                        vault.contract.functions.orderState(HexBytes(order)).call(block_identifier=block)
                    )
                states: list[Any] = list(batch.execute())
            return {order: int(state[0]) for order, state in zip(hashes, states, strict=True)}

        on_chain = await self._calls.run(read_states)
        return batch_fate(before, added, on_chain)

    async def _check_fate(
        self, batch: BatchRecord, expected: BatchFate, skipped: Collection[int] = ()
    ) -> None:
        fate = await self._fate(batch, skipped=skipped)
        if fate is not expected:
            raise SettlementInconsistent(
                f"batch {batch.id}: its receipt says {expected.value}, the order states say {fate.value}"
            )

    async def _close_settled(
        self,
        batch: BatchRecord,
        tx_hash: str | None,
        receipt: TxReceipt | None,
        *,
        block_number: int | None = None,
        skipped: Mapping[int, SkippedFill] | None = None,
    ) -> None:
        """Close the batch settled and sweep its fees; ``block_number``, without a receipt, the
        block it ran in. The ``skipped`` fills (by id) fail for good and are voided, in the same
        transaction, as a fill the Vault refused is."""
        skipped = skipped or {}
        fees = sum(fill.fees for fill in batch.fills if fill.id not in skipped)
        if receipt is not None:
            self._cross_check(batch, receipt, fees, len(skipped))
        failed = [fill for fill in batch.fills if fill.id in skipped]
        async with self._sessionmaker() as session, session.begin():
            closed = await store.close_settled(
                session,
                batch.id,
                tx_hash=tx_hash,
                block_number=int(receipt["blockNumber"]) if receipt else block_number,
                gas_used=int(receipt["gasUsed"]) if receipt else None,
                skipped={fill.id: (SKIPPED_ERROR, skipped[fill.id].failure_args()) for fill in failed},
            )
            if not closed:  # the other settler's sweep committed with its close
                raise _BatchClosed
            if failed:
                # Every balance the voids and the sweep move, locked in one read: a read of several
                # rows may not wait (exchange.trading.repository), so under load one attempt to
                # find them all free, rather than one per voided fill.
                keys = {
                    (posting.account, posting.token)
                    for fill in failed
                    for posting in self.fill_postings(fill)
                }
                await repository.load_balances(session, keys | {(FEES_ACCOUNT, self.quote_token)})
            for fill in failed:
                await self._void(session, fill)
            if fees:
                # The Vault sent the batch's fees to the Fund: they leave the Vault's side of the ledger.
                sweep = [
                    Posting(FEES_ACCOUNT, self.quote_token, -fees),
                    Posting(VAULT_EXTERNAL, self.quote_token, fees),
                ]
                await repository.apply_postings(
                    session, sweep, cause="fees.collected", reference=f"batch:{batch.id}"
                )
        log.info(
            "settlement.batch_settled",
            batch_id=batch.id,
            fills=len(batch.fills) - len(failed),
            skipped=len(failed),
            tx_hash=tx_hash,
            gas_used=int(receipt["gasUsed"]) if receipt else None,
        )
        for fill in failed:
            skip = skipped[fill.id]
            log.warning(
                "settlement.fill_skipped",
                fill_id=fill.id,
                batch_id=batch.id,
                order_hash=skip.order_hash,
                reason=skip.reason.name,
            )
            await self._notify_failed(fill)
        if self.batch_settled is not None:
            try:
                await self.batch_settled(batch.id)
            except Exception:  # the batch stays settled; only the live notice is lost
                log.exception("settlement.batch_settled_notice", batch_id=batch.id)

    def _cross_check(self, batch: BatchRecord, receipt: TxReceipt, fees: int, skipped: int) -> None:
        """The receipt holds one Trade per fill it did not skip and a FeesCollected of their fees."""
        trades, collected = receipt_trades_and_fees(self.vault, receipt)
        if trades != len(batch.fills) - skipped or collected != fees:
            log.error(
                "settlement.receipt_mismatch",
                batch_id=batch.id,
                fills=len(batch.fills),
                skipped=skipped,
                trades=trades,
                fees_expected=fees,
                fees_collected=collected,
            )

    async def _close_reverted(self, batch: BatchRecord, tx_hash: str, receipt: TxReceipt) -> None:
        error = await self._revert_reason(batch, int(receipt["blockNumber"]))
        async with self._sessionmaker() as session, session.begin():
            closed = await store.close_returned(
                session,
                batch.id,
                BatchState.REVERTED,
                error_name=error.error_name,
                error_args=_json_args(error.error_args),
                tx_hash=tx_hash,
                block_number=int(receipt["blockNumber"]),
            )
            if not closed:
                raise _BatchClosed
            reverts = await store.reverted_batches_of(
                session, [fill.id for fill in batch.fills], FILL_REVERTS
            )
        log.warning(
            "settlement.batch_reverted", batch_id=batch.id, tx_hash=tx_hash, error_name=error.error_name
        )
        # Only a fill alone in its batch is blamed; the others are judged by the next simulation.
        if len(batch.fills) == 1 and error.error_name in FILL_REVERTS:
            (fill,) = batch.fills
            if reverts.get(fill.id, 0) >= self.config.max_reverts:
                await self._fail(
                    fill,
                    error.error_name,
                    _json_args(error.error_args),
                    batch_id=batch.id,
                    judged_after=batch.id,
                )

    async def _revert_reason(self, batch: BatchRecord, block_number: int) -> ContractReverted:
        """Replay the batch's call for the custom error.

        On the state at the end of its block: the reverted transaction changed nothing, and what
        made it revert (a transaction before it in the block) is part of that state.
        """
        w3, vault, sender = self.vault.w3, self.vault, self.operator.address
        call = {"from": sender, "to": vault.address, "data": HexBytes(batch.calldata), "gas": batch.gas_limit}
        try:
            await self._calls.run(lambda: vault.guarded(lambda: w3.eth.call(call, block_number)))  # type: ignore[arg-type]
        except ContractReverted as reverted:
            return reverted
        except ChainUnavailable as unavailable:
            if not isinstance(unavailable.__cause__, Web3RPCError):
                raise  # no answer: ask again next step
            # The node answered the replay with an error of its own, not a revert: a node that
            # keeps no state that old ("missing trie node"), or geth's "out of gas" without data.
            # Asking again would get the same answer at every step, and the batch reverted all
            # the same (its receipt says so): it is closed without a reason.
            log.warning(
                "settlement.revert_replay_refused",
                batch_id=batch.id,
                block_number=block_number,
                reason=str(unavailable.__cause__)[:300],
            )
            return ContractReverted(UNEXPLAINED_REVERT, {}, vault.name, "0x")
        # The replay passes: out of gas, or a state that a later transaction of the block undid.
        return ContractReverted(UNEXPLAINED_REVERT, {}, vault.name, "0x")

    async def _nudge(self, batch: BatchRecord) -> None:
        """Not mined yet: resend what the node lost; replace what is stuck."""
        latest = batch.attempts[-1]
        fees = Fees(latest.max_fee_per_gas_wei, latest.max_priority_fee_per_gas_wei)
        operator = self.operator
        if utc_now() - latest.created_at >= timedelta(seconds=self.config.stuck_after_s):
            suggested = await self._calls.run(operator.fees)
            bumped = fees.bumped(self.config.fee_bump_percent)
            raised = Fees(
                max(bumped.max_fee_per_gas_wei, suggested.max_fee_per_gas_wei),
                max(bumped.max_priority_fee_per_gas_wei, suggested.max_priority_fee_per_gas_wei),
            )
            if raised.max_fee_per_gas_wei > self.config.max_fee_per_gas_wei:
                log.warning(
                    "settlement.fee_cap_reached",
                    batch_id=batch.id,
                    max_fee_per_gas_wei=fees.max_fee_per_gas_wei,
                )
            else:
                tx = operator.transaction(
                    self.vault.address, batch.calldata, nonce=batch.nonce, gas=batch.gas_limit, fees=raised
                )
                signed = operator.sign(tx)
                async with self._sessionmaker() as session, session.begin():
                    attempt_id = await store.add_attempt(
                        session,
                        batch.id,
                        tx_hash=signed.tx_hash if signed else None,
                        max_fee_per_gas_wei=raised.max_fee_per_gas_wei,
                        max_priority_fee_per_gas_wei=raised.max_priority_fee_per_gas_wei,
                    )
                log.info(
                    "settlement.fee_bumped",
                    batch_id=batch.id,
                    nonce=batch.nonce,
                    max_fee_per_gas_wei=raised.max_fee_per_gas_wei,
                    tx_hash=signed.tx_hash if signed else None,
                )
                await self._send(
                    batch.id,
                    attempt_id,
                    tx_nonce=batch.nonce,
                    gas=batch.gas_limit,
                    calldata=batch.calldata,
                    fees=raised,
                    signed=signed,
                )
                return
        known = latest.tx_hash is not None and await self._calls.run(
            lambda: operator.is_known(str(latest.tx_hash))
        )
        if not known:
            tx = operator.transaction(
                self.vault.address, batch.calldata, nonce=batch.nonce, gas=batch.gas_limit, fees=fees
            )
            await self._send(
                batch.id,
                latest.id,
                tx_nonce=batch.nonce,
                gas=batch.gas_limit,
                calldata=batch.calldata,
                fees=fees,
                signed=operator.sign(tx),
            )

    # --- failures -------------------------------------------------------------------------------

    async def _fail(
        self,
        fill: FillRecord,
        error_name: str,
        error_args: dict[str, Any],
        *,
        batch_id: int | None,
        judged_after: int | None,
    ) -> StepOutcome:
        """Fail the fill for good and void its ledger postings (in one transaction): ``FILL_FAILED``.

        ``judged_after``: the newest batch when the judgement began. ``WAITING``, and nothing
        written, when another settler has opened a batch since (still open, or mined and closed
        already: the judgement may not have seen it, and it may be what the fill needs) or took
        the fill: it is judged again on the chain as it is then.
        """
        vault = self.vault.address
        async with self._sessionmaker() as session, session.begin():
            await store.serialise_settlers(session, vault)
            newest = await store.newest_batch(session, vault)  # an open batch is the newest
            if (
                newest.open
                or newest.id != judged_after
                or not await store.fail_fill(
                    session, fill.id, error_name=error_name, error_args=error_args, batch_id=batch_id
                )
            ):
                log.info("settlement.fail_given_up", fill_id=fill.id, error_name=error_name)
                return StepOutcome.WAITING
            await self._void(session, fill)
        log.warning("settlement.fill_failed", fill_id=fill.id, error_name=error_name, error_args=error_args)
        await self._notify_failed(fill)
        return StepOutcome.FILL_FAILED

    async def _void(self, session: AsyncSession, fill: FillRecord) -> None:
        """Undo the failed fill's ledger postings, in the transaction that fails it (module docstring)."""
        try:
            async with session.begin_nested():
                await repository.apply_postings(
                    session,
                    reversed_postings(self.fill_postings(fill)),
                    cause="fill.void",
                    reference=f"trade:{fill.market_id}:{fill.trade_id}",
                )
        except LedgerRefused as refusal:
            log.error("settlement.void_refused", fill_id=fill.id, reason=refusal.detail)

    async def _notify_failed(self, fill: FillRecord) -> None:
        """Tell the service's feed, once the failure committed."""
        if self.fill_failed is not None:
            try:
                await self.fill_failed(fill.id)
            except Exception:  # the fill stays failed; only the live notice is lost
                log.exception("settlement.fill_failed_notice", fill_id=fill.id)

    def fill_postings(self, fill: FillRecord) -> list[Posting]:
        """The totals the fill moved in the ledger when it matched (its reservations stay spent)."""
        return fill_totals(
            FillAmounts(
                buyer=fill.buyer,
                seller=fill.seller,
                base_token=self.base_token,
                quote_token=self.quote_token,
                base_amount=fill.amount_base,
                quote_amount=fill.quote_amount,
                buyer_fee=fill.buyer_fee,
                seller_fee=fill.seller_fee,
            )
        )


def receipt_trades_and_fees(vault: BoundContract, receipt: TxReceipt) -> tuple[int, int]:
    """The number of ``vault``'s Trade events in a settlement receipt, and the fees it sent the Fund.

    The fees are FeesCollected's ``amount``, what left the Vault: the fills' fees. Its
    ``received``, what reached the Fund, is less when the quote token takes a fee on transfer.
    """
    events = vault.contract.events
    trade_topic, fees_topic = bytes(HexBytes(events.Trade.topic)), bytes(HexBytes(events.FeesCollected.topic))
    trades, fees = 0, 0
    for entry in receipt["logs"]:
        if not entry["topics"] or entry["address"] != vault.address:
            continue
        topic = bytes(entry["topics"][0])
        if topic == trade_topic:
            trades += 1
        elif topic == fees_topic:
            fees += int(events.FeesCollected().process_log(entry)["args"]["amount"])
    return trades, fees


def fill_totals(amounts: FillAmounts) -> list[Posting]:
    """What a fill moved in the ledger's totals when it matched (``ledger.fill`` without reservations)."""
    return [Posting(p.account, p.token, p.total_delta) for p in ledger.fill(amounts, FEES_ACCOUNT)]


def _json_args(args: dict[str, Any]) -> dict[str, Any]:
    """Custom error arguments as JSON: integers as decimal strings (uint256 exceeds JSON numbers)."""
    return {
        key: str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        for key, value in args.items()
    }
