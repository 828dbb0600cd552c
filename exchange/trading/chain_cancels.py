"""Orders the Vault will no longer settle leave the book: cancellations and exits made on chain.

A maker can act in the Vault without the service: ``cancelOrder`` (event
``OrderCancelled(orderHash, maker)``), ``cancelOrdersBelowNonce``
(``NonceCancelled(maker, minValidNonce)``) and ``requestExit``
(``ExitRequested(account, availableAt)``, after which the Vault settles nothing of
the account). Left in the book, such an order would still match, and its fills
would fail at settlement and be voided. :class:`ChainCancellations` reads the
Vault indexer's recorded events (``chain_events``) in id order and sends each
affected resting order's cancel to its market's writer, cause ``on_chain``.

It acts on events as soon as they are recorded, before their confirmations: a
cancellation is safe to apply early (the order could not settle anyway), and an
event a reorganisation takes away leaves the order cancelled, never traded by
mistake. Every start reads the events from the first, so an event recorded just
before a crash is still acted on; cancelling an order that already left the book
does nothing.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.kit.logging import get_logger
from exchange.trading.intents import CancelIntent
from exchange.trading.models import CancelCause
from exchange.trading.service import TradingService
from exchange.trading.settlement_models import ChainEvent, EventState

log = get_logger(__name__)

EVENTS = ("OrderCancelled", "NonceCancelled", "ExitRequested", "ExitCancelled")
_GONE = (EventState.ORPHANED.value, EventState.REVERSED.value)


class ChainCancellations:
    """Follows the Vault's cancellation events of one indexer cursor into the books."""

    def __init__(
        self, trading: TradingService, sessionmaker: async_sessionmaker[AsyncSession], cursor_id: int
    ) -> None:
        self.trading = trading
        self.sessionmaker = sessionmaker
        self.cursor_id = cursor_id
        self.after_id = 0  # the last chain_events id acted on

    async def apply(self) -> int:
        """Act on the events recorded since the last call; how many orders left the book."""
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
        # An exit the account has since called off (replayed after a restart) cancels nothing now.
        last_exit_cancel = {
            str(event.args["account"]): event.id for event in events if event.name == "ExitCancelled"
        }
        cancelled = 0
        for event in events:
            withdrawn = (
                event.name == "ExitRequested"
                and last_exit_cancel.get(str(event.args["account"]), 0) > event.id
            )
            if event.name != "ExitCancelled" and not withdrawn:
                cancelled += await self._act(event)
            self.after_id = event.id
        return cancelled

    async def _act(self, event: ChainEvent) -> int:
        args = event.args
        if event.name == "ExitRequested":
            account = str(args["account"])
            count = 0
            for market_id in self.trading.markets:
                count += len(await self.trading.cancel_all(account, market_id, CancelCause.ON_CHAIN))
            if count:
                log.info("trading.exit_cancelled_orders", account=account, orders=count, tx=event.tx_hash)
            return count
        maker = str(args["maker"])
        count = 0
        for market in self.trading.markets.values():
            if event.name == "OrderCancelled":
                order_hash = str(args["orderHash"]).lower()
                doomed = [row for row in market.writer.live.values() if row.order_hash.lower() == order_hash]
            else:
                below = int(args["minValidNonce"])
                doomed = [
                    row for row in market.writer.live.values() if row.account == maker and row.nonce < below
                ]
            for row in doomed:
                if row.account == maker and await market.writer.submit(
                    CancelIntent(maker, row.sequence, CancelCause.ON_CHAIN)
                ):
                    count += 1
                    log.info(
                        "trading.order_cancelled_on_chain",
                        order_id=row.id,
                        event_name=event.name,
                        tx=event.tx_hash,
                    )
        return count

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.apply()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trading.chain_cancels_failed")
            await asyncio.sleep(interval_s)
