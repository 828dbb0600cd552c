"""A deliberately naive order book: lists, linear scans, copy-and-try for FOK.

It implements the rules of ``exchange.orderbook`` in the most obvious way so
that property tests can demand identical events from the real book. Speed is
no concern here; clarity is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from exchange.orderbook import (
    Accepted,
    Amend,
    Amended,
    Cancel,
    CancelAll,
    Cancelled,
    CancelReason,
    Command,
    Event,
    LevelChanged,
    MarketConfig,
    PlaceLimit,
    PlaceMarket,
    Rejected,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    Trade,
)


@dataclass
class RefOrder:
    order_id: int
    account: str
    side: Side
    price_ticks: int
    original_base: int
    filled_base: int
    remaining_base: int
    cancelled_base: int
    time_in_force: TimeInForce
    self_trade: SelfTradePrevention
    queued_at: int  # smaller is older within a price


def positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_account(value: object) -> bool:
    return isinstance(value, str) and value != ""


class ReferenceBook:
    def __init__(self, market: MarketConfig) -> None:
        self.market = market
        self.resting: list[RefOrder] = []
        self.last_order_id = 0
        self.last_trade_id = 0
        self.clock = 0  # priority stamps
        self.touched: list[tuple[Side, int]] = []

    # ------------------------------------------------------------- helpers

    def stamp(self) -> int:
        self.clock += 1
        return self.clock

    def touch(self, side: Side, price_ticks: int) -> None:
        if (side, price_ticks) not in self.touched:
            self.touched.append((side, price_ticks))

    def level(self, side: Side, price_ticks: int) -> tuple[int, int]:
        orders = [o for o in self.resting if o.side is side and o.price_ticks == price_ticks]
        return sum(o.remaining_base for o in orders), len(orders)

    def sorted_side(self, side: Side) -> list[RefOrder]:
        orders = [o for o in self.resting if o.side is side]
        if side is Side.BUY:
            return sorted(orders, key=lambda o: (-o.price_ticks, o.queued_at))
        return sorted(orders, key=lambda o: (o.price_ticks, o.queued_at))

    def find(self, order_id: object) -> RefOrder | None:
        for order in self.resting:
            if order.order_id == order_id:
                return order
        return None

    def amount_problem(self, amount: object) -> RejectReason | None:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return RejectReason.AMOUNT_NOT_POSITIVE_INTEGER
        if amount % self.market.lot_size_base != 0:
            return RejectReason.AMOUNT_NOT_LOT_MULTIPLE
        if amount < self.market.min_amount_base:
            return RejectReason.AMOUNT_BELOW_MINIMUM
        return None

    def order_problem(
        self, order_id: object, account: object, side: object, rule: object
    ) -> RejectReason | None:
        if not isinstance(order_id, int) or isinstance(order_id, bool) or order_id <= 0:
            return RejectReason.INVALID_ORDER_ID
        if order_id <= self.last_order_id:
            return RejectReason.ORDER_ID_NOT_INCREASING
        if not isinstance(account, str) or account == "":
            return RejectReason.INVALID_ACCOUNT
        if side not in (Side.BUY, Side.SELL):
            return RejectReason.INVALID_SIDE
        if rule not in list(SelfTradePrevention):
            return RejectReason.INVALID_SELF_TRADE_PREVENTION
        return None

    @staticmethod
    def valid_id(order_id: object) -> int | None:
        if isinstance(order_id, int) and not isinstance(order_id, bool) and order_id > 0:
            return order_id
        return None

    @staticmethod
    def valid_account(account: object) -> str:
        return account if isinstance(account, str) else ""

    def crosses(self, side: Side, limit: int | None, maker_price: int) -> bool:
        if limit is None:
            return True
        return maker_price <= limit if side is Side.BUY else maker_price >= limit

    def would_cross(self, side: Side, limit: int) -> bool:
        opposite = Side.SELL if side is Side.BUY else Side.BUY
        return any(self.crosses(side, limit, o.price_ticks) for o in self.resting if o.side is opposite)

    def remove(self, order: RefOrder) -> None:
        self.touch(order.side, order.price_ticks)
        self.resting.remove(order)

    # ------------------------------------------------------------ matching

    def match(
        self, taker: RefOrder, limit: int | None, budget: int | None, events: list[Event]
    ) -> tuple[bool, int]:
        """Returns (stopped by self-trade, unspent budget)."""
        opposite = Side.SELL if taker.side is Side.BUY else Side.BUY
        lot = self.market.lot_size_base
        while True:
            if budget is None and taker.remaining_base == 0:
                return False, 0
            makers = [o for o in self.sorted_side(opposite) if self.crosses(taker.side, limit, o.price_ticks)]
            if not makers:
                return False, budget or 0
            maker = makers[0]
            if maker.account == taker.account:
                rule = taker.self_trade
                if rule in (SelfTradePrevention.EXPIRE_MAKER, SelfTradePrevention.EXPIRE_BOTH):
                    self.remove(maker)
                    amount = maker.remaining_base
                    maker.cancelled_base += amount
                    maker.remaining_base = 0
                    events.append(
                        Cancelled(maker.order_id, maker.account, maker.side, CancelReason.SELF_TRADE, amount)
                    )
                if rule in (SelfTradePrevention.EXPIRE_TAKER, SelfTradePrevention.EXPIRE_BOTH):
                    return True, budget or 0
                continue
            fill = min(maker.remaining_base, taker.remaining_base)
            one_lot_quote = self.market.quote_amount(maker.price_ticks, lot)
            if budget is not None:
                fill = min(fill, (budget // one_lot_quote) * lot)
                if fill == 0:
                    return False, budget
                budget -= self.market.quote_amount(maker.price_ticks, fill)
            self.touch(maker.side, maker.price_ticks)
            self.last_trade_id += 1
            events.append(
                Trade(
                    self.last_trade_id,
                    maker.order_id,
                    maker.account,
                    taker.order_id,
                    taker.account,
                    taker.side,
                    maker.price_ticks,
                    fill,
                    self.market.quote_amount(maker.price_ticks, fill),
                )
            )
            maker.filled_base += fill
            maker.remaining_base -= fill
            taker.filled_base += fill
            taker.remaining_base -= fill
            if maker.remaining_base == 0:
                self.resting.remove(maker)

    def fills_completely(self, taker: RefOrder, limit: int | None) -> bool:
        trial = copy.deepcopy(self)
        trial_taker = copy.deepcopy(taker)
        stopped, _ = trial.match(trial_taker, limit, None, [])
        return not stopped and trial_taker.remaining_base == 0

    @staticmethod
    def kill(order: RefOrder, reason: CancelReason, events: list[Event]) -> None:
        amount = order.remaining_base
        order.cancelled_base += amount
        order.remaining_base = 0
        events.append(Cancelled(order.order_id, order.account, order.side, reason, amount))

    # ------------------------------------------------------------ commands

    def apply(self, command: Command) -> list[Event]:
        self.touched = []
        if isinstance(command, PlaceLimit):
            events = self.place_limit(command)
        elif isinstance(command, PlaceMarket):
            events = self.place_market(command)
        elif isinstance(command, Cancel):
            events = self.cancel(command)
        elif isinstance(command, Amend):
            events = self.amend(command)
        else:
            events = self.cancel_all(command)
        for side, price in self.touched:
            amount, count = self.level(side, price)
            events.append(LevelChanged(side, price, amount, count))
        return events

    def place_limit(self, c: PlaceLimit) -> list[Event]:
        reason = self.order_problem(c.order_id, c.account, c.side, c.self_trade)
        if reason is None and (not positive_int(c.price_ticks)):
            reason = RejectReason.PRICE_NOT_POSITIVE_INTEGER
        if reason is None and c.time_in_force not in list(TimeInForce):
            reason = RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        if reason is None:
            reason = self.amount_problem(c.amount_base)
        if (
            reason is None
            and c.time_in_force is TimeInForce.POST_ONLY
            and self.would_cross(c.side, c.price_ticks)
        ):
            reason = RejectReason.WOULD_TAKE
        if reason is not None:
            return [Rejected(self.valid_id(c.order_id), self.valid_account(c.account), reason)]
        self.last_order_id = c.order_id
        order = RefOrder(
            c.order_id,
            c.account,
            c.side,
            c.price_ticks,
            c.amount_base,
            0,
            c.amount_base,
            0,
            c.time_in_force,
            c.self_trade,
            0,
        )
        events: list[Event] = [
            Accepted(
                c.order_id,
                c.account,
                c.side,
                c.price_ticks,
                c.amount_base,
                None,
                c.time_in_force,
                c.self_trade,
            )
        ]
        if c.time_in_force is TimeInForce.FOK and not self.fills_completely(order, c.price_ticks):
            self.kill(order, CancelReason.FOK, events)
            return events
        stopped, _ = self.match(order, c.price_ticks, None, events)
        if stopped:
            self.kill(order, CancelReason.SELF_TRADE, events)
        if order.remaining_base > 0:
            if c.time_in_force is TimeInForce.IOC:
                self.kill(order, CancelReason.IOC_REMAINDER, events)
            else:
                order.queued_at = self.stamp()
                self.resting.append(order)
                self.touch(order.side, order.price_ticks)
        return events

    def place_market(self, c: PlaceMarket) -> list[Event]:
        reason = self.order_problem(c.order_id, c.account, c.side, c.self_trade)
        if reason is None and c.time_in_force not in (TimeInForce.IOC, TimeInForce.FOK):
            reason = RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        if reason is None:
            if c.quote_budget is None and c.amount_base is None:
                reason = RejectReason.MARKET_ORDER_SIZE
            elif c.quote_budget is None:
                reason = self.amount_problem(c.amount_base)
            elif c.amount_base is not None or c.side is not Side.BUY:
                reason = RejectReason.MARKET_ORDER_SIZE
            elif c.time_in_force is TimeInForce.FOK:
                reason = RejectReason.TIME_IN_FORCE_NOT_ALLOWED
            elif not positive_int(c.quote_budget):
                reason = RejectReason.QUOTE_BUDGET_NOT_POSITIVE_INTEGER
        if reason is not None:
            return [Rejected(self.valid_id(c.order_id), self.valid_account(c.account), reason)]
        self.last_order_id = c.order_id
        events: list[Event] = [
            Accepted(
                c.order_id,
                c.account,
                c.side,
                None,
                c.amount_base,
                c.quote_budget,
                c.time_in_force,
                c.self_trade,
            )
        ]
        if c.quote_budget is not None:
            huge = 10**30  # the budget is the only limit
            order = RefOrder(
                c.order_id, c.account, c.side, 0, huge, 0, huge, 0, c.time_in_force, c.self_trade, 0
            )
            stopped, unspent = self.match(order, None, c.quote_budget, events)
            if unspent:
                reason_end = CancelReason.SELF_TRADE if stopped else CancelReason.IOC_REMAINDER
                events.append(Cancelled(c.order_id, c.account, c.side, reason_end, 0, unspent))
            return events
        assert c.amount_base is not None
        order = RefOrder(
            c.order_id,
            c.account,
            c.side,
            0,
            c.amount_base,
            0,
            c.amount_base,
            0,
            c.time_in_force,
            c.self_trade,
            0,
        )
        if c.time_in_force is TimeInForce.FOK and not self.fills_completely(order, None):
            self.kill(order, CancelReason.FOK, events)
            return events
        stopped, _ = self.match(order, None, None, events)
        if stopped:
            self.kill(order, CancelReason.SELF_TRADE, events)
        if order.remaining_base > 0:
            self.kill(order, CancelReason.IOC_REMAINDER, events)
        return events

    def cancel(self, c: Cancel) -> list[Event]:
        order = self.find(c.order_id)
        if order is None:
            return [
                Rejected(
                    self.valid_id(c.order_id), self.valid_account(c.account), RejectReason.ORDER_NOT_FOUND
                )
            ]
        if order.account != c.account:
            return [Rejected(order.order_id, self.valid_account(c.account), RejectReason.NOT_ORDER_OWNER)]
        events: list[Event] = []
        self.remove(order)
        self.kill(order, CancelReason.USER, events)
        return events

    def cancel_all(self, c: CancelAll) -> list[Event]:
        if not is_account(c.account):
            return [Rejected(None, self.valid_account(c.account), RejectReason.INVALID_ACCOUNT)]
        events: list[Event] = []
        for order in sorted((o for o in self.resting if o.account == c.account), key=lambda o: o.order_id):
            self.remove(order)
            self.kill(order, CancelReason.USER, events)
        return events

    def amend(self, c: Amend) -> list[Event]:
        order = self.find(c.order_id)
        if order is None:
            return [
                Rejected(
                    self.valid_id(c.order_id), self.valid_account(c.account), RejectReason.ORDER_NOT_FOUND
                )
            ]
        if order.account != c.account:
            return [Rejected(order.order_id, self.valid_account(c.account), RejectReason.NOT_ORDER_OWNER)]
        new_price = order.price_ticks if c.price_ticks is None else c.price_ticks
        new_amount = order.remaining_base if c.amount_base is None else c.amount_base
        reason = None
        if c.price_ticks is not None and (not positive_int(c.price_ticks)):
            reason = RejectReason.PRICE_NOT_POSITIVE_INTEGER
        if reason is None and c.amount_base is not None:
            reason = self.amount_problem(c.amount_base)
        if reason is None and new_price == order.price_ticks and new_amount == order.remaining_base:
            reason = RejectReason.AMEND_NO_CHANGE
        if (
            reason is None
            and new_price != order.price_ticks
            and order.time_in_force is TimeInForce.POST_ONLY
            and self.would_cross(order.side, new_price)
        ):
            reason = RejectReason.WOULD_TAKE
        if reason is not None:
            return [Rejected(order.order_id, order.account, reason)]

        old_remaining = order.remaining_base
        if new_amount < old_remaining:
            order.cancelled_base += old_remaining - new_amount
        else:
            order.original_base += new_amount - old_remaining
        keeps_priority = new_price == order.price_ticks and new_amount < old_remaining
        self.touch(order.side, order.price_ticks)
        order.remaining_base = new_amount
        events: list[Event] = [
            Amended(order.order_id, order.account, order.side, new_price, new_amount, keeps_priority)
        ]
        if keeps_priority:
            return events
        if new_price == order.price_ticks:
            order.queued_at = self.stamp()
            return events
        self.resting.remove(order)
        order.price_ticks = new_price
        stopped, _ = self.match(order, new_price, None, events)
        if stopped:
            self.kill(order, CancelReason.SELF_TRADE, events)
        if order.remaining_base > 0:
            order.queued_at = self.stamp()
            self.resting.append(order)
            self.touch(order.side, order.price_ticks)
        return events
