"""The trading service's and the settlement's figures for ``GET /metrics`` (``exchange.api.metrics``).

Read when scraped, never recorded on the order path: each market writer's journal head,
open orders, queue and cycle counters, each feed's trades and subscribers, the WebSocket
connections; and the settlement backlog (fills not settled yet, the age of the oldest)
with how far the Vault indexer is behind the chain's head (as its last pass saw it).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client.core import Metric, SummaryMetricFamily
from sqlalchemy import func, select

from exchange.api.metrics import MetricSource, counter, gauge
from exchange.trading.models import SettlementState, TradingFill
from exchange.trading.settlement_models import ChainCursor

if TYPE_CHECKING:  # both register their figures from their lifespan hooks
    from exchange.trading.service import TradingService
    from exchange.trading.settlement_service import Settlement

UNSETTLED = (SettlementState.PENDING, SettlementState.SUBMITTED)


def trading_metrics(service: TradingService) -> MetricSource:
    """The markets' writers and feeds, and the WebSocket connections, as they are now."""

    async def collect() -> list[Metric]:
        markets = list(service.markets.values())
        writers = [((market.spec.market_id,), market.writer) for market in markets]
        feeds = [(market.spec.market_id, market.feed) for market in markets]
        cycles = SummaryMetricFamily(
            "exchange_market_writer_cycle_seconds",
            "Committed writer cycles (one transaction each): how many, and their time read to commit.",
            labels=["market"],
        )
        for labels, writer in writers:
            cycles.add_metric(list(labels), writer.stats.cycles, writer.stats.cycle_seconds)
        subscribers = [
            ((market_id, channel), len(subscribed))
            for market_id, feed in feeds
            for channel, subscribed in (("book", feed.book_subscribers), ("trades", feed.trade_subscribers))
        ] + [
            ((market_id, channel), sum(len(subscribed) for subscribed in table.values()))
            for market_id, feed in feeds
            for channel, table in (("orders", feed.order_subscribers), ("fills", feed.fill_subscribers))
        ]
        return [
            gauge(
                "exchange_market_journal_sequence",
                "The market's journal head: the sequence of its last command.",
                ("market",),
                ((labels, writer.sequence) for labels, writer in writers),
            ),
            gauge(
                "exchange_market_open_orders",
                "Orders resting on the market's book.",
                ("market",),
                ((labels, len(writer.live)) for labels, writer in writers),
            ),
            gauge(
                "exchange_market_writer_queue",
                "Commands waiting for the market writer's next cycle.",
                ("market",),
                ((labels, writer.queued) for labels, writer in writers),
            ),
            cycles,
            counter(
                "exchange_market_writer_commands",
                "Commands (places, replaces, cancels, probes) the committed cycles took.",
                ("market",),
                ((labels, writer.stats.commands) for labels, writer in writers),
            ),
            counter(
                "exchange_market_writer_failed_cycles",
                "Writer cycles rolled back, each followed by a rebuild of the book from the database.",
                ("market",),
                ((labels, writer.stats.failed_cycles) for labels, writer in writers),
            ),
            counter(
                "exchange_market_trades",
                "Trades published since the process started.",
                ("market",),
                (((market_id,), feed.trades) for market_id, feed in feeds),
            ),
            counter(
                "exchange_market_trades_voided",
                "Trades taken back since the process started: their fills failed settlement.",
                ("market",),
                (((market_id,), feed.voids) for market_id, feed in feeds),
            ),
            gauge(
                "exchange_ws_subscribers",
                "WebSocket subscriptions per market and channel.",
                ("market", "channel"),
                subscribers,
            ),
            gauge(
                "exchange_ws_connections",
                "Open WebSocket connections.",
                (),
                [((), sum(service.ws_connections.values()))],
            ),
        ]

    return collect


def settlement_metrics(settlement: Settlement) -> MetricSource:
    """Fills not settled yet (by state, and the age of the oldest) and the Vault indexer's lag."""

    async def collect() -> list[Metric]:
        async with settlement.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(TradingFill.settlement_state, func.count(), func.min(TradingFill.created_at))
                    .where(TradingFill.settlement_state.in_([state.value for state in UNSETTLED]))
                    .group_by(TradingFill.settlement_state)
                )
            ).all()
            vault = settlement.runtime.pool.vault.address
            cursor = (
                await session.execute(
                    select(ChainCursor.scanned_block, ChainCursor.credited_block)
                    .where(ChainCursor.contract == vault)
                    .order_by(ChainCursor.id.desc())
                    .limit(1)
                )
            ).first()
        counts = {state: 0 for state in UNSETTLED}
        counts.update({SettlementState(state): count for state, count, _ in rows})
        oldest = min((created for _, _, created in rows), default=None)
        families: list[Metric] = [
            gauge(
                "exchange_settlement_unsettled_fills",
                "Fills the Vault has not settled yet, by settlement state.",
                ("state",),
                (((state.value,), count) for state, count in counts.items()),
            ),
            gauge(
                "exchange_settlement_oldest_unsettled_seconds",
                "Age of the oldest fill not settled yet (0 when there is none).",
                (),
                [((), max(time.time() - oldest.timestamp(), 0.0) if oldest is not None else 0)],
            ),
        ]
        if cursor is not None:
            blocks = [(("scanned",), cursor.scanned_block), (("credited",), cursor.credited_block)]
            # The head as the indexer's last pass saw it: a scrape never waits for the node.
            position = settlement.indexer.position
            if position is not None:
                blocks.append((("head",), position.head))
            families.append(
                gauge(
                    "exchange_vault_indexer_block",
                    "The chain's head, and the blocks the Vault indexer has scanned and credited.",
                    ("block",),
                    blocks,
                )
            )
        return families

    return collect
