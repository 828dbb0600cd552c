"""Matching engine benchmark: an exchange-core style command mix against the order book.

    .venv/bin/python bench/orderbook.py [--commands 100000] [--seed 7] [--no-native]

The mix follows exchange-core's published test workload: 9% GTC orders, 3% IOC
orders, 6% cancels and 82% amends that move an order's price, seeded. Trades
come from the IOC orders and from moves that cross the spread; the generator
keeps the book at its size, which bounds crossing moves, so about 4-5% of
commands trade (exchange-core quotes about 6%); the run prints the share.
It runs with about 1,000 and about 30,000
resting orders (the book is filled first, untimed). For each it prints
commands/s over the whole stream and the p50/p99/p99.9 latency of one command,
measured in a second, separate pass so that timer overhead does not lower the
throughput figure.

Commands/s is computed from the process's CPU time (``time.process_time``),
because the machine is shared and wall time counts other processes' turns;
the wall-clock figure of the same pass is printed beside it. Each figure is
the best of three passes over the stream (the peers' too), as timeit does.
Latencies are wall-clock, from the better (lower p99) of two timed passes.

Two engines run the same stream: the pure-Python package, and the same sources
compiled by mypyc (``python -m exchange.orderbook.build_native``, rebuilt here
when the sources changed; ``--no-native`` skips it). The native run happens in
a subprocess with the build first on the path and must end in the same state
hash as the Python run.

Peers: the same stream drives two published pure-Python matching engines from
PyPI through thin adapters: lightmatchingengine (the fastest found for small
books) and pyorderbook (heap-based, faster than it on deep books). Neither has
amend, IOC or self-trade prevention, so an amend is cancel + new order and an
IOC is an order whose rest is cancelled. The JSON's ``peer_ratio`` is our
slowest ratio against lightmatchingengine; ``best_peer_ratio`` is our slowest
ratio against whichever peer is faster at each book size.

Numbers are printed; the last line is one JSON object. Nothing passes or fails on time.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyorderbook  # type: ignore[import-untyped]
from lightmatchingengine.lightmatchingengine import (  # type: ignore[import-untyped]
    LightMatchingEngine,
)
from lightmatchingengine.lightmatchingengine import Side as PeerSide

import exchange.orderbook.book as book_module
from exchange.orderbook import (
    Amend,
    Cancel,
    Cancelled,
    Command,
    MarketConfig,
    OrderBook,
    OrderView,
    PlaceLimit,
    Side,
    TimeInForce,
    Trade,
)
from exchange.orderbook.build_native import is_current

REPOSITORY = Path(__file__).resolve().parents[1]
NATIVE_BUILD = REPOSITORY / ".build" / "orderbook-native"
ENGINE = "python" if book_module.__file__.endswith(".py") else "mypyc"
SIZES = (("1k", 1_000), ("30k", 30_000))
# The machine is shared: each throughput figure is the best of this many passes.
REPEATS = 3
MARKET = MarketConfig(
    market_id="BPC-USDC",
    base_asset="BPC",
    quote_asset="USDC",
    tick_size_quote=10_000,
    lot_size_base=10**15,
    min_amount_base=10**15,
    price_scale_base=10**18,
)
MID_PRICE_TICKS = 100_000
ACCOUNTS = [f"0x{index:040x}" for index in range(1, 2001)]


@dataclass
class Workload:
    prefill: list[Command]
    stream: list[Command]
    trading_commands: int


class LiveOrders:
    """Resting order ids with O(1) random choice and removal."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.index: dict[int, int] = {}

    def add(self, order_id: int) -> None:
        self.index[order_id] = len(self.ids)
        self.ids.append(order_id)

    def discard(self, order_id: int) -> None:
        position = self.index.pop(order_id, None)
        if position is None:
            return
        last = self.ids.pop()
        if last != order_id:
            self.ids[position] = last
            self.index[last] = position

    def __len__(self) -> int:
        return len(self.ids)


def build_workload(resting: int, commands: int, seed: int) -> Workload:
    """Generate commands against a scratch book so that every command is meaningful."""
    rng = random.Random(seed)  # noqa: S311 - a seeded workload, not security
    book = OrderBook(MARKET)
    live = LiveOrders()
    lot = MARKET.lot_size_base
    # Wider books for more resting orders: about 30 orders per level near the top.
    depth_scale = max(10, resting // 60)
    next_id = 0

    def submit(command: Command, into: list[Command]) -> bool:
        into.append(command)
        events = book.apply(command)
        traded = False
        for event in events:
            if isinstance(event, Trade):
                traded = True
                if book.order(event.maker_order_id) is None:
                    live.discard(event.maker_order_id)
            elif isinstance(event, Cancelled):
                live.discard(event.order_id)
        if isinstance(command, PlaceLimit) and book.order(command.order_id) is not None:
            live.add(command.order_id)
        elif isinstance(command, Amend) and book.order(command.order_id) is None:
            live.discard(command.order_id)
        return traded

    def passive_price(side: Side) -> int:
        offset = 1 + int(rng.expovariate(1 / depth_scale))
        if side is Side.BUY:
            best_ask = book.best_ask()
            top = (best_ask.price_ticks if best_ask else MID_PRICE_TICKS + 1) - 1
            return max(1, top - offset + 1)
        best_bid = book.best_bid()
        return (best_bid.price_ticks if best_bid else MID_PRICE_TICKS - 1) + offset

    def aggressive_price(side: Side) -> int:
        best = book.best_ask() if side is Side.BUY else book.best_bid()
        if best is None:
            return passive_price(side)
        return best.price_ticks

    def some_live_order() -> OrderView:
        order = book.order(live.ids[rng.randrange(len(live))])
        if order is None:
            raise RuntimeError("the workload lost track of its resting orders")
        return order

    prefill: list[Command] = []
    while len(live) < resting:
        next_id += 1
        side = Side.BUY if next_id % 2 else Side.SELL
        amount = lot * rng.randint(1, 100)
        submit(PlaceLimit(next_id, rng.choice(ACCOUNTS), side, passive_price(side), amount), prefill)

    stream: list[Command] = []
    trading = 0
    for _ in range(commands):
        roll = rng.random()
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        account = rng.choice(ACCOUNTS)
        if roll < 0.09:
            next_id += 1
            price = passive_price(side)
            command: Command = PlaceLimit(next_id, account, side, price, lot * rng.randint(1, 100))
        elif roll < 0.12:
            # Small takers: they trade, but mostly leave the maker resting.
            next_id += 1
            price = aggressive_price(side)
            command = PlaceLimit(next_id, account, side, price, lot * rng.randint(1, 5), TimeInForce.IOC)
        elif roll < 0.18 and len(live):
            order = some_live_order()
            command = Cancel(order.order_id, order.account)
        elif len(live):
            order = some_live_order()
            # New orders add 9% and cancels remove 6%; a crossing move removes one
            # order, so moves cross only while the book is above its size.
            if len(live) > resting and rng.random() < 0.15:
                price = aggressive_price(order.side)
            else:
                step = rng.randint(1, 5) * (1 if rng.random() < 0.5 else -1)
                price = max(1, order.price_ticks + step)
                if order.side is Side.BUY:
                    best_ask = book.best_ask()
                    if best_ask is not None and price >= best_ask.price_ticks:
                        price = best_ask.price_ticks - 1
                else:
                    best_bid = book.best_bid()
                    if best_bid is not None and price <= best_bid.price_ticks:
                        price = best_bid.price_ticks + 1
                if price == order.price_ticks:
                    price += -1 if order.side is Side.BUY else 1
            command = Amend(order.order_id, order.account, max(1, price))
        else:
            continue
        trading += submit(command, stream)
    return Workload(prefill, stream, trading)


def prefilled_book(workload: Workload) -> bytes:
    book = OrderBook(MARKET)
    for command in workload.prefill:
        book.apply(command)
    return book.snapshot()


@dataclass
class Timing:
    cpu_ns: int
    wall_ns: int

    def per_second(self, count: int) -> tuple[float, float]:
        return count / (self.cpu_ns / 1e9), count / (self.wall_ns / 1e9)


def timed(run: Any, *arguments: Any) -> Timing:
    """Run ``run(*arguments)`` once with the garbage collector paused, as a steady service would."""
    gc.collect()
    gc.disable()
    try:
        cpu, wall = time.process_time_ns(), time.perf_counter_ns()
        run(*arguments)
        return Timing(time.process_time_ns() - cpu, time.perf_counter_ns() - wall)
    finally:
        gc.enable()


def apply_all(book: OrderBook, stream: list[Command]) -> None:
    apply = book.apply
    for command in stream:
        apply(command)


def latencies_ns(snapshot: bytes, stream: list[Command]) -> list[int]:
    book = OrderBook.restore(snapshot)
    apply = book.apply
    clock = time.perf_counter_ns
    samples = [0] * len(stream)
    gc.collect()
    gc.disable()
    try:
        for index, command in enumerate(stream):
            started = clock()
            apply(command)
            samples[index] = clock() - started
    finally:
        gc.enable()
    samples.sort()
    return samples


def percentile_us(sorted_samples: list[int], fraction: float) -> float:
    index = min(len(sorted_samples) - 1, int(fraction * len(sorted_samples)))
    return sorted_samples[index] / 1000


def measure_engine(workload: Workload) -> dict[str, Any]:
    """Throughput (best of ``REPEATS`` passes) and latency (the pass with the lower p99)."""
    snapshot = prefilled_book(workload)
    books = [OrderBook.restore(snapshot) for _ in range(REPEATS)]
    best = min((timed(apply_all, book, workload.stream) for book in books), key=lambda timing: timing.cpu_ns)
    book = books[0]
    cpu_per_s, wall_per_s = best.per_second(len(workload.stream))
    samples = min(
        (latencies_ns(snapshot, workload.stream) for _ in range(2)),
        key=lambda sorted_samples: percentile_us(sorted_samples, 0.99),
    )
    return {
        "engine": ENGINE,
        "cmds_per_s": cpu_per_s,
        "wall_cmds_per_s": wall_per_s,
        "p50_us": percentile_us(samples, 0.50),
        "p99_us": percentile_us(samples, 0.99),
        "p999_us": percentile_us(samples, 0.999),
        "resting_after": len(book),
        "state_hash": book.state_hash().hex(),
    }


class LightMatchingEngineAdapter:
    """Drives lightmatchingengine with our commands (prices in ticks, amounts in lots)."""

    name = "lightmatchingengine"

    def __init__(self) -> None:
        self.engine = LightMatchingEngine()
        self.orders: dict[int, Any] = {}
        self.skipped = 0

    def run(self, commands: list[Command]) -> None:
        orders = self.orders
        add = self.engine.add_order
        cancel = self.engine.cancel_order
        lot = MARKET.lot_size_base
        for command in commands:
            if isinstance(command, Amend):
                order = orders.pop(command.order_id, None)
                if order is None or order.leaves_qty <= 0:
                    self.skipped += 1
                    continue
                open_lots = order.leaves_qty
                cancel(order.order_id, "BPC")
                new_order, _ = add("BPC", command.price_ticks, open_lots, order.side)
                if new_order.leaves_qty > 0:
                    orders[command.order_id] = new_order
            elif isinstance(command, PlaceLimit):
                peer_side = PeerSide.BUY if command.side is Side.BUY else PeerSide.SELL
                new_order, _ = add("BPC", command.price_ticks, command.amount_base // lot, peer_side)
                if new_order.leaves_qty > 0:
                    if command.time_in_force is TimeInForce.IOC:
                        cancel(new_order.order_id, "BPC")
                    else:
                        orders[command.order_id] = new_order
            elif isinstance(command, Cancel):
                order = orders.pop(command.order_id, None)
                if order is None or order.leaves_qty <= 0:
                    self.skipped += 1
                    continue
                cancel(order.order_id, "BPC")


class PyOrderBookAdapter:
    """Drives pyorderbook with our commands (prices in ticks, amounts in lots)."""

    name = "pyorderbook"

    def __init__(self) -> None:
        self.book = pyorderbook.Book()
        self.orders: dict[int, pyorderbook.Order] = {}
        self.skipped = 0

    def run(self, commands: list[Command]) -> None:
        book = self.book
        orders = self.orders
        bid, ask = pyorderbook.bid, pyorderbook.ask
        lot = MARKET.lot_size_base
        for command in commands:
            if isinstance(command, Amend):
                order = orders.pop(command.order_id, None)
                if order is None or order.quantity <= 0:
                    self.skipped += 1
                    continue
                book.cancel(order)
                make = bid if order.side is pyorderbook.Side.BID else ask
                new_order = make("BPC", command.price_ticks or 0, order.quantity)
                book.match(new_order)
                if new_order.quantity > 0:
                    orders[command.order_id] = new_order
            elif isinstance(command, PlaceLimit):
                make = bid if command.side is Side.BUY else ask
                new_order = make("BPC", command.price_ticks, command.amount_base // lot)
                book.match(new_order)
                if new_order.quantity > 0:
                    if command.time_in_force is TimeInForce.IOC:
                        book.cancel(new_order)
                    else:
                        orders[command.order_id] = new_order
            elif isinstance(command, Cancel):
                order = orders.pop(command.order_id, None)
                if order is None or order.quantity <= 0:
                    self.skipped += 1
                    continue
                book.cancel(order)


def measure_peer(
    adapter_class: type[LightMatchingEngineAdapter | PyOrderBookAdapter], workload: Workload
) -> tuple[float, int]:
    """Best of ``REPEATS`` passes, each on a freshly filled peer book."""
    rates = []
    skipped = 0
    for _ in range(REPEATS):
        adapter = adapter_class()
        adapter.run(workload.prefill)
        timing = timed(adapter.run, workload.stream)
        rates.append(timing.per_second(len(workload.stream))[0])
        skipped = adapter.skipped
    return max(rates), skipped


def native_results(commands: int, seed: int) -> list[dict[str, Any]] | None:
    """Build the native package if its copy of the sources is stale, then measure it in a subprocess."""
    if not is_current(NATIVE_BUILD):
        print("building the native order book (mypyc) ...", flush=True)
        subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "exchange.orderbook.build_native", "--out", str(NATIVE_BUILD)],
            cwd=REPOSITORY,
            check=True,
        )
    environment = dict(os.environ, PYTHONPATH=str(NATIVE_BUILD))
    completed = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, __file__, "--worker", "--commands", str(commands), "--seed", str(seed)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    results: list[dict[str, Any]] = json.loads(completed.stdout.strip().splitlines()[-1])
    if results[0]["engine"] != "mypyc":
        print("the native build did not load; skipping it")
        return None
    return results


def describe(workload: Workload) -> str:
    kinds: dict[str, int] = {}
    for command in workload.stream:
        name = type(command).__name__
        if isinstance(command, PlaceLimit):
            name = "IOC" if command.time_in_force is TimeInForce.IOC else "GTC"
        kinds[name] = kinds.get(name, 0) + 1
    total = len(workload.stream)
    mix = ", ".join(f"{name} {100 * count / total:.1f}%" for name, count in sorted(kinds.items()))
    return f"{total} commands ({mix}); {100 * workload.trading_commands / total:.1f}% of commands trade"


def engine_line(label: str, result: dict[str, Any]) -> str:
    return (
        f"[{label}] orderbook ({result['engine']}): {result['cmds_per_s']:,.0f} commands/s "
        f"(wall {result['wall_cmds_per_s']:,.0f}); latency p50 {result['p50_us']:.2f} us, "
        f"p99 {result['p99_us']:.2f} us, p99.9 {result['p999_us']:.2f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--commands", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-native", action="store_true", help="skip the mypyc build")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        results = [measure_engine(build_workload(resting, args.commands, args.seed)) for _, resting in SIZES]
        print(json.dumps(results))
        return

    logging.getLogger("pyorderbook").setLevel(logging.WARNING)
    native = None if args.no_native else native_results(args.commands, args.seed)
    peers = {
        adapter.name: f"{adapter.name}=={version(adapter.name)}"
        for adapter in (LightMatchingEngineAdapter, PyOrderBookAdapter)
    }
    summary: dict[str, Any] = {}
    ratios: list[float] = []
    best_ratios: list[float] = []
    for index, (label, resting) in enumerate(SIZES):
        workload = build_workload(resting, args.commands, args.seed)
        python = measure_engine(workload)
        print(
            f"[{label}] resting {resting} -> {python['resting_after']} after the stream; {describe(workload)}"
        )
        print(engine_line(label, python))
        ours = python
        if native is not None:
            ours = native[index]
            same = (
                "same final state hash"
                if ours["state_hash"] == python["state_hash"]
                else "DIFFERENT STATE HASH"
            )
            print(f"{engine_line(label, ours)}; {same} as the Python run")
        peer_rates = {}
        for adapter_class in (LightMatchingEngineAdapter, PyOrderBookAdapter):
            rate, skipped = measure_peer(adapter_class, workload)
            peer_rates[adapter_class.name] = rate
            print(
                f"[{label}] {peers[adapter_class.name]}: {rate:,.0f} commands/s "
                f"({skipped} commands on orders it no longer had); "
                f"ours/theirs {ours['cmds_per_s'] / rate:.2f}x (python {python['cmds_per_s'] / rate:.2f}x)"
            )
        ratios.append(ours["cmds_per_s"] / peer_rates["lightmatchingengine"])
        best_ratios.append(ours["cmds_per_s"] / max(peer_rates.values()))
        summary[f"cmds_per_s_{label}"] = round(ours["cmds_per_s"])
        summary[f"p99_us_{label}"] = round(ours["p99_us"], 2)
        summary[f"python_cmds_per_s_{label}"] = round(python["cmds_per_s"])
    summary["engine"] = "mypyc" if native is not None else "python"
    summary["peer"] = peers["lightmatchingengine"]
    summary["peer_ratio"] = round(min(ratios), 2)
    summary["best_peer_ratio"] = round(min(best_ratios), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
