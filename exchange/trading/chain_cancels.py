"""Orders the Vault will no longer settle leave the book: cancellations and exits made on chain.

A maker can act in the Vault without the service: ``cancelOrder`` (event
``OrderCancelled(orderHash, maker)``), ``cancelOrdersBelowNonce``
(``NonceCancelled(maker, minValidNonce)``) and ``requestExit``
(``ExitRequested(account, availableAt)``, after which the Vault settles nothing of
the account). Left in the book, such an order would still match, and its fills
would fail at settlement and be voided. :class:`ChainCancellations` reads the
Vault indexer's recorded events (``chain_events``) in id order and sends each
affected resting order's cancel to its market's writer, cause ``on_chain``; from
then on the intake refuses a new order the Vault would not settle (409
``cancelled-on-chain``).

The Vault indexer calls :meth:`ChainCancellations.apply` in every pass, after
recording new events and before crediting any (``ChainIndexer.before_credit``):
an account's ``ExitRequested`` has taken its orders, and their reservations, off
the book before its ``Exited`` debits the ledger, even when both arrive in one
pass. It acts on events as soon as they are recorded, before their confirmations: a
cancellation is safe to apply early (the order could not settle anyway), and an
event a reorganisation takes away leaves the order cancelled, never traded by
mistake. Every start reads the events from the first, so an event recorded just
before a crash is still acted on; cancelling an order that already left the book
does nothing.

An account that exited stays out of trading (no new order, no withdrawal
authorisation) until the ledger has caught up with its exit, even when it calls
``cancelExit`` right after ``exit`` (the Vault allows that):

* from ``ExitRequested`` until ``ExitCancelled``, as above;
* while its ``Exited`` is recorded but not yet credited: the ledger still holds
  what the Vault paid out, and orders backed by it would only fail at settlement
  (and their fills would hold the exit's credit back, ``vault_events``);
* after the credit, while an authorisation the exit released
  (``withdrawal_expiry.expire_for_exit``) is still valid in the Vault, that is
  until the credited block's time reaches its expiry: it can be used against
  money deposited later, whose debit would find that money reserved.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.kit.errors import Conflict
from exchange.kit.logging import get_logger
from exchange.trading.intake import CheckedOrder
from exchange.trading.intents import CancelIntent, ProbeIntent
from exchange.trading.models import CancelCause, TradingWithdrawal, WithdrawalStatus
from exchange.trading.service import TradingService
from exchange.trading.settlement_models import ChainCursor, ChainEvent, EventState

log = get_logger(__name__)

EVENTS = ("OrderCancelled", "NonceCancelled", "ExitRequested", "ExitCancelled", "Exited")
_GONE = (EventState.ORPHANED.value, EventState.REVERSED.value)


class CancelledOnChain(Conflict):
    type_slug = "cancelled-on-chain"
    title = "The Vault already refuses this order"


class ExitHeld(CancelledOnChain):
    """Refused while the account's exit keeps it out: a retry after the exit is settled may pass."""

    transient = True


class AccountExiting(Conflict):
    type_slug = "account-exiting"
    title = "The account is leaving the Vault"
    transient = True  # until its exit is settled: an Idempotency-Key does not keep this answer


class ChainCancellations:
    """Follows the Vault's cancellation events of one indexer cursor into the books and the intake.

    It keeps what the events established (cancelled order hashes, each maker's lowest valid
    nonce, the accounts in exit) and :meth:`refuse` turns away a new order the Vault would not
    settle; the trading service calls it right before handing an order to its writer.
    """

    def __init__(
        self, trading: TradingService, sessionmaker: async_sessionmaker[AsyncSession], cursor_id: int
    ) -> None:
        self.trading = trading
        self.sessionmaker = sessionmaker
        self.cursor_id = cursor_id
        self.after_id = 0  # the chain_events id the next pass reads after (see apply)
        self.cancelled_hashes: set[str] = set()
        self.min_nonces: dict[str, int] = {}
        self.exiting: set[str] = set()
        self.exits_uncredited: dict[int, str] = {}  # Exited events recorded, not yet credited: id → account
        self.exit_holds: dict[str, int] = {}  # account → latest expiry of an authorisation its exit released
        self._sweep_due = False  # events taken in whose orders may still be on a book
        self._holds_due: set[str] = set()  # accounts whose credited exit's holds are still to be read

    def exit_reason(self, account: str) -> str | None:
        """Why ``account`` may neither trade nor withdraw now because of an exit, or None."""
        if account in self.exiting:
            return f"{account} asked the Vault to exit: it settles nothing of the account until cancelExit"
        if account in self.exits_uncredited.values():
            return (
                f"{account} exited the Vault, and the ledger has not yet debited what the Vault paid out: "
                "the account trades again once the exit is credited"
            )
        hold = self.exit_holds.get(account)
        if hold is not None:
            until = datetime.fromtimestamp(hold, UTC).isoformat()
            return (
                f"a withdrawal authorisation open at {account}'s exit stays valid in the Vault until "
                f"{until}: the account trades and withdraws again after that"
            )
        return None

    def reason(self, account: str, order_hash: str, nonce: int) -> str | None:
        """Why the Vault would refuse an order with these fields, or None."""
        return self.exit_reason(account) or self._cancelled(account, order_hash, nonce)

    def _cancelled(self, account: str, order_hash: str, nonce: int) -> str | None:
        """Why the order was cancelled in the Vault (by its hash or its nonce), or None."""
        if order_hash.lower() in self.cancelled_hashes:
            return f"order {order_hash} was cancelled in the Vault"
        floor = self.min_nonces.get(account, 0)
        if nonce < floor:
            return f"the Vault cancelled every order of {account} with a nonce below {floor}"
        return None

    def refuse(self, order: CheckedOrder) -> None:
        """Raise ``CancelledOnChain`` when the Vault already refuses ``order`` (``ExitHeld`` while
        the account's exit keeps it out, a refusal a later retry may get past)."""
        held = self.exit_reason(order.account)
        if held is not None:
            raise ExitHeld(held)
        cancelled = self._cancelled(order.account, order.order_hash, order.nonce)
        if cancelled is not None:
            raise CancelledOnChain(cancelled)

    def refuse_withdrawal(self, account: str) -> None:
        """Raise ``AccountExiting`` while an exit of ``account`` keeps it from withdrawing."""
        reason = self.exit_reason(account)
        if reason is not None:
            raise AccountExiting(reason)

    async def apply(self) -> int:
        """Take in the events recorded since the last call and cancel what they doom; how many orders."""
        async with self.sessionmaker() as session:
            self._holds_due |= await self._exits_now_credited(session)
            # The newest row of the cursor first, then the followed events up to it: the next pass
            # starts after every row read now, not after the last event taken in. Most of the
            # Vault's events are trades, and each pass would otherwise read again every trade since
            # the last cancel or exit. (Read before the events, so a row recorded in between waits
            # for the next pass instead of being passed over.) A followed event whose block left
            # the chain (orphaned, or reversed) after the last one taken in holds the next pass
            # just before it: its block may come back, and the indexer then sets the same row
            # back to seen.
            newest = await session.scalar(
                select(func.max(ChainEvent.id)).where(
                    ChainEvent.cursor_id == self.cursor_id, ChainEvent.id > self.after_id
                )
            )
            events = (
                await session.scalars(
                    select(ChainEvent)
                    .where(
                        ChainEvent.cursor_id == self.cursor_id,
                        ChainEvent.id > self.after_id,
                        ChainEvent.id <= (newest or self.after_id),
                        ChainEvent.name.in_(EVENTS),
                    )
                    .order_by(ChainEvent.id)
                )
            ).all()
            held: int | None = None  # the first gone event after the last one taken in
            for event in events:
                if event.state in _GONE:
                    held = event.id if held is None else held
                    continue
                held = None
                if self._take(event):
                    self._holds_due.add(str(event.args["account"]))
                self._sweep_due = True
            self.after_id = held - 1 if held is not None else newest or self.after_id
            await self._update_exit_holds(session, self._holds_due)
            self._holds_due = set()  # only once read: a failed pass reads them on the next
        if not self._sweep_due:
            return 0
        # From here on the intake refuses such orders; what is already queued reaches the book first.
        cancelled = 0
        for market in self.trading.markets.values():
            await market.writer.submit(ProbeIntent())
            doomed = [
                (row, reason)
                for row in market.writer.live.values()
                if (reason := self.reason(row.account, row.order_hash, row.nonce)) is not None
            ]
            for row, reason in doomed:
                if await market.writer.submit(CancelIntent(row.account, row.sequence, CancelCause.ON_CHAIN)):
                    cancelled += 1
                    log.info("trading.order_cancelled_on_chain", order_id=row.id, reason=reason)
        # Only now: a writer that failed above leaves the sweep due, and the next call (the
        # indexer's next pass, which credits nothing before it) sweeps the books again.
        self._sweep_due = False
        return cancelled

    async def _exits_now_credited(self, session: AsyncSession) -> set[str]:
        """Forget the recorded exits the indexer has dealt with since; the accounts of those it credited."""
        if not self.exits_uncredited:
            return set()
        states = dict(
            (
                await session.execute(
                    select(ChainEvent.id, ChainEvent.state).where(
                        ChainEvent.id.in_(list(self.exits_uncredited))
                    )
                )
            ).all()
        )
        credited: set[str] = set()
        for event_id in [i for i in self.exits_uncredited if states.get(i) != EventState.SEEN]:
            account = self.exits_uncredited.pop(event_id)
            if states.get(event_id) == EventState.CREDITED:
                credited.add(account)
        return credited

    async def _update_exit_holds(self, session: AsyncSession, credited_exits: set[str]) -> None:
        """Hold the accounts whose credited exit released authorisations still valid; free the others."""
        if credited_exits:
            # An authorisation is expired either by its time (then its expiry is behind the
            # credited block's time) or by an exit: the latest expiry is the one that matters.
            latest = (
                await session.execute(
                    select(TradingWithdrawal.account, func.max(TradingWithdrawal.expiry_unix))
                    .where(
                        TradingWithdrawal.account.in_(sorted(credited_exits)),
                        TradingWithdrawal.status == WithdrawalStatus.EXPIRED.value,
                    )
                    .group_by(TradingWithdrawal.account)
                )
            ).all()
            for account, expiry in latest:
                self.exit_holds[account] = max(self.exit_holds.get(account, 0), int(expiry))
        if not self.exit_holds:
            return
        cursor = await session.get(ChainCursor, self.cursor_id)
        if cursor is None:
            return
        w3 = self.trading.runtime.w3
        credited_block = cursor.credited_block
        chain_time = int(await self.trading.chain.run(lambda: w3.eth.get_block(credited_block)["timestamp"]))
        for account, expiry in list(self.exit_holds.items()):
            if expiry <= chain_time:
                del self.exit_holds[account]
                log.info("trading.exit_hold_ended", account=account)

    def _take(self, event: ChainEvent) -> bool:
        """Take in one event; True for an exit already credited (its holds are to be read)."""
        args = event.args
        if event.name == "OrderCancelled":
            self.cancelled_hashes.add(str(args["orderHash"]).lower())
        elif event.name == "NonceCancelled":
            maker = str(args["maker"])
            self.min_nonces[maker] = max(self.min_nonces.get(maker, 0), int(args["minValidNonce"]))
        elif event.name == "ExitRequested":
            self.exiting.add(str(args["account"]))
        elif event.name == "ExitCancelled":
            self.exiting.discard(str(args["account"]))
        elif event.state == EventState.SEEN:  # Exited, not yet credited
            self.exits_uncredited[event.id] = str(args["account"])
        else:
            return event.state == EventState.CREDITED
        return False
