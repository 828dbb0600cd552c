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
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.kit.errors import Conflict
from exchange.kit.logging import get_logger
from exchange.trading.intake import CheckedOrder
from exchange.trading.intents import CancelIntent, ProbeIntent
from exchange.trading.models import CancelCause
from exchange.trading.service import TradingService
from exchange.trading.settlement_models import ChainEvent, EventState

log = get_logger(__name__)

EVENTS = ("OrderCancelled", "NonceCancelled", "ExitRequested", "ExitCancelled")
_GONE = (EventState.ORPHANED.value, EventState.REVERSED.value)


class CancelledOnChain(Conflict):
    type_slug = "cancelled-on-chain"
    title = "The Vault already refuses this order"


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
        self.after_id = 0  # the last chain_events id taken in
        self.cancelled_hashes: set[str] = set()
        self.min_nonces: dict[str, int] = {}
        self.exiting: set[str] = set()
        self._sweep_due = False  # events taken in whose orders may still be on a book

    def reason(self, account: str, order_hash: str, nonce: int) -> str | None:
        """Why the Vault would refuse an order with these fields, or None."""
        if account in self.exiting:
            return f"{account} asked the Vault to exit: it settles nothing of the account until cancelExit"
        if order_hash.lower() in self.cancelled_hashes:
            return f"order {order_hash} was cancelled in the Vault"
        floor = self.min_nonces.get(account, 0)
        if nonce < floor:
            return f"the Vault cancelled every order of {account} with a nonce below {floor}"
        return None

    def refuse(self, order: CheckedOrder) -> None:
        """Raise ``CancelledOnChain`` when the Vault already refuses ``order``."""
        reason = self.reason(order.account, order.order_hash, order.nonce)
        if reason is not None:
            raise CancelledOnChain(reason)

    async def apply(self) -> int:
        """Take in the events recorded since the last call and cancel what they doom; how many orders."""
        async with self.sessionmaker() as session:
            events = (
                await session.scalars(
                    select(ChainEvent)
                    .where(
                        ChainEvent.cursor_id == self.cursor_id,
                        ChainEvent.id > self.after_id,
                        ChainEvent.name.in_(EVENTS),
                        ChainEvent.state.not_in(_GONE),
                    )
                    .order_by(ChainEvent.id)
                )
            ).all()
        for event in events:
            self._take(event)
            self.after_id = event.id
            self._sweep_due = True
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

    def _take(self, event: ChainEvent) -> None:
        args = event.args
        if event.name == "OrderCancelled":
            self.cancelled_hashes.add(str(args["orderHash"]).lower())
        elif event.name == "NonceCancelled":
            maker = str(args["maker"])
            self.min_nonces[maker] = max(self.min_nonces.get(maker, 0), int(args["minValidNonce"]))
        elif event.name == "ExitRequested":
            self.exiting.add(str(args["account"]))
        else:  # ExitCancelled
            self.exiting.discard(str(args["account"]))
