"""Order intake over HTTP: acknowledged orders per second and acknowledgement latency, durability on.

The service runs as its own process (``exchange serve``) on PostgreSQL with
``fsync`` and ``synchronous_commit`` on (new WAL files not zero-filled first, as
``bench/_pg.py`` explains), and a Hardhat node as its chain; this
process is the client, on loopback. Traders are admitted on chain, credited in
the ledger and signed in; every order is signed (EIP-712, secp256k1) before the
clock starts. Then ``--connections`` keep-alive connections send a bounded
number of orders as fast as the service acknowledges them (a closed loop):
each acknowledgement (201) comes after the order's journal transaction
committed. About half the orders cross the book and trade. The default of 48
connections is about the most this 2-core machine (client included) carries with the
acknowledgements' p99 within 25 ms; fewer give lower latency and rate, more give a
little more rate at a p99 beyond it. Meanwhile
``--ws-subscribers`` WebSocket clients in a third process (``bench/ws_subscribers.py``)
follow the book stream and time each diff from the cycle that matched it to
its arrival, checking that no sequence is skipped. With ``--batch N`` the
closed loop places N orders per request (``POST /v1/orders/batch``, one
trader's orders each); every placed order of a batch counts, with its
request's latency.

With ``--rates R1,R2,…`` the benchmark first offers orders at fixed rates (an
open loop, before the closed-loop run and without subscribers): order *i* of a
phase is due at ``start + i / R`` and its latency counts from that moment, so
time spent waiting for a free connection is included (no coordinated omission).
Each phase prints its acknowledged rate and p50/p99; the final JSON carries them
under ``at_rate``. The closed loop measures what the service sustains; the open
loop, what latency a client sees at a load the service can carry.

Besides latencies it prints the server's and the client's CPU per acknowledged order
and how busy the machine's cores were during the closed loop: a share well under
100% means the run was bound by the order of its steps (a cycle's statements wait on
PostgreSQL while the service has nothing else to do), not by the cores.

With ``--prefill-orders N`` the database first gets a past: N ended orders of another
market over 10,000 accounts, a settled fill for every pair and their ledger entries
(``bench/_prefill.py``), so that the run's inserts and unique checks meet indexes of that
size rather than an empty database's.

The service's rate limits are raised for the run (one client IP, few accounts).
PostgreSQL: a private cluster in a temporary directory, or ``BENCH_DATABASE_URL``
(an empty database the benchmark may fill).

    .venv/bin/python bench/api_orders.py [--orders 30000] [--connections 48] [--ws-subscribers 500]
        [--rates 200,400,600 --rate-orders 6000] [--batch 1] [--prefill-orders 1000000]

The last line is JSON: ``{"orders_per_s", "p50_ms", "p99_ms", "ws_subscribers", "ws_p99_ms"}``,
plus ``"at_rate"`` with ``--rates``: per offered rate, the acknowledged rate, p50/p99 of
the acknowledged orders, how many were refused (any answer but 201; their latency is
not in the percentiles) and the server's CPU per acknowledged order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._pg import postgres_url  # noqa: E402
from bench._prefill import prefilled  # noqa: E402
from bench.ws_subscribers import fanout  # noqa: E402
from exchange.trading.signing import OrderDigester  # noqa: E402
from tests.chain.nodes import hardhat_node  # noqa: E402
from tests.trading_service.live import (  # noqa: E402
    Connection,
    LiveTrader,
    MarketInfo,
    accounts,
    admit,
    credit,
    market_info,
    order_request,
    running_server,
    sign_in,
)


def prepare_orders(
    market: MarketInfo, traders: list[LiveTrader], count: int, seed: int, batch: int = 1
) -> list[tuple[bytes, str]]:
    """``count`` signed orders (body, bearer token) around a mid price, about half of them crossing.

    Traders take turns by runs of ``batch`` orders, so each batch is one trader's."""
    rng = random.Random(seed)  # noqa: S311  (a reproducible load, not a secret)
    digester = OrderDigester(market.chain_id, market.vault)
    mid_ticks = 1_000
    expiry = int(time.time()) + 24 * 3600
    orders = []
    for index in range(count):
        trader = traders[index // batch % len(traders)]
        side = "buy" if rng.random() < 0.5 else "sell"
        ticks = mid_ticks + rng.randint(-3, 3)
        body = order_request(
            market,
            digester,
            trader,
            side=side,
            price_quote=ticks * market.tick_size,
            amount_base=rng.randint(10, 50) * market.lot_size,
            client_order_id=f"b{index}",
            expiry_unix=expiry,
        )
        orders.append((body, trader.token))
    return orders


def requests_of(orders: list[tuple[bytes, str]], batch: int) -> list[tuple[str, bytes, str, int]]:
    """The requests (path, body, token, orders) that place ``orders``: one each, or up to ``batch``
    consecutive orders of one trader at a time."""
    if batch == 1:
        return [("/v1/orders", body, token, 1) for body, token in orders]
    chunks: list[list[tuple[bytes, str]]] = []
    for order in orders:
        if chunks and len(chunks[-1]) < batch and chunks[-1][0][1] == order[1]:
            chunks[-1].append(order)
        else:
            chunks.append([order])
    return [
        (
            "/v1/orders/batch",
            b'{"orders":[' + b",".join(body for body, _ in chunk) + b"]}",
            chunk[0][1],
            len(chunk),
        )
        for chunk in chunks
    ]


def answers(status: int, reply: bytes, batched: bool, count: int) -> list[tuple[int, bytes]]:
    """Each of the ``count`` orders' status and answer: the response's, or, for a batch, each result's."""
    if not batched or status != 200:
        return [(status, reply)] * count
    return [(result["status"], json.dumps(result).encode()) for result in json.loads(reply)["results"]]


async def load(
    port: int, orders: list[tuple[bytes, str]], connections: int, batch: int = 1
) -> tuple[list[float], dict[int, int], float]:
    """Send every order over ``connections`` connections; latencies (s) of 201s, status counts, wall time.

    A batched order's latency is its request's: placed orders are acknowledged together."""
    pending = iter(requests_of(orders, batch))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    refusals: dict[int, str] = {}

    async def worker() -> None:
        connection = await Connection.open(port)
        try:
            for path, body, token, count in pending:
                started = time.perf_counter()
                headers = {"Authorization": f"Bearer {token}"}
                status, reply = await connection.request("POST", path, body, headers)
                elapsed = time.perf_counter() - started
                for order_status, answer in answers(status, reply, batch > 1, count):
                    statuses[order_status] = statuses.get(order_status, 0) + 1
                    if order_status == 201:
                        latencies.append(elapsed)
                    elif order_status not in refusals:
                        refusals[order_status] = answer.decode(errors="replace")[:500]
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    for status, reply in refusals.items():
        print(f"first {status} answer: {reply}", file=sys.stderr)
    return latencies, statuses, time.perf_counter() - started


async def offered(
    port: int, orders: list[tuple[bytes, str]], rate: float, connections: int
) -> tuple[list[float], dict[int, int], float]:
    """Offer ``orders`` at ``rate`` per second (an open loop); latencies count from each order's due time."""
    queue: asyncio.Queue[tuple[float, bytes, str] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        connection = await Connection.open(port)
        try:
            while (item := await queue.get()) is not None:
                due, body, token = item
                status, _ = await connection.request(
                    "POST", "/v1/orders", body, {"Authorization": f"Bearer {token}"}
                )
                statuses[status] = statuses.get(status, 0) + 1
                if status == 201:
                    latencies.append(time.perf_counter() - due)
        finally:
            await connection.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    started = time.perf_counter()
    for index, (body, token) in enumerate(orders):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((due, body, token))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, statuses, time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_ticks() -> tuple[int, int]:
    """Clock ticks the whole machine (all cores) spent busy, and in all, so far (from /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # less idle and iowait


async def writer_cycles(port: int, market_id: str) -> tuple[float, float, float]:
    """The market writer's committed cycles, the commands they took and their seconds so far
    (``GET /metrics``)."""
    connection = await Connection.open(port)
    try:
        _, text = await connection.request("GET", "/metrics")
    finally:
        await connection.close()
    wanted = {
        "exchange_market_writer_cycle_seconds_count": 0,
        "exchange_market_writer_commands_total": 1,
        "exchange_market_writer_cycle_seconds_sum": 2,
    }
    figures = [0.0, 0.0, 0.0]
    for line in text.decode().splitlines():
        name, _, rest = line.partition("{")
        if name in wanted and f'market="{market_id}"' in rest:
            figures[wanted[name]] = float(rest.rsplit(" ", 1)[1])
    return figures[0], figures[1], figures[2]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=30_000, help="measured orders")
    parser.add_argument("--warmup", type=int, default=2_000, help="orders before the clock starts")
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--traders", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="orders per request in the closed loop: 1 posts /v1/orders, more post /v1/orders/batch",
    )
    parser.add_argument(
        "--ws-subscribers", type=int, default=500, help="WebSocket book subscribers during the load (0: none)"
    )
    parser.add_argument(
        "--rates",
        default="",
        help="comma-separated offered rates (orders/s) measured in an open loop first (empty: none)",
    )
    parser.add_argument("--rate-orders", type=int, default=6_000, help="orders offered per rate")
    parser.add_argument(
        "--prefill-orders",
        type=int,
        default=0,
        help="past orders (of another market, with their fills and ledger entries) written into the "
        "database before the service starts, so that the run meets tables of that size (0: empty)",
    )
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="bench-orders-"))
    try:
        with (
            postgres_url(durable=True) as empty_url,
            prefilled(empty_url, args.prefill_orders) as database_url,
            hardhat_node() as rpc_url,
            running_server(
                database_url,
                rpc_url,
                workdir,
                log_level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                trading_rate_account_per_s=1_000_000,
                trading_rate_account_burst=1_000_000,
                trading_rate_ip_per_s=1_000_000,
                trading_rate_ip_burst=1_000_000,
                trading_ws_connections_per_ip=1_000_000,  # every subscriber connects from this one address
                auth_rate_ip_per_s=1_000_000,  # every trader signs in from this one address
                auth_rate_ip_burst=1_000_000,
                trading_membership_poll_s=0,
                trading_membership_ttl_s=3600,
            ) as server,
        ):
            market = market_info(server.url)
            members = accounts(args.traders)
            admit(server.url, rpc_url, members)
            await credit(database_url, market, members, 10**40)
            traders = await sign_in(server.url, members)
            offered_total = args.rate_orders * len(rates)
            orders = prepare_orders(
                market, traders, args.warmup + offered_total + args.orders, args.seed, args.batch
            )
            print(f"prepared {len(orders)} signed orders for {len(traders)} traders", file=sys.stderr)
            await load(server.port, orders[: args.warmup], args.connections, args.batch)
            at_rate = []
            for index, rate in enumerate(rates):
                first = args.warmup + index * args.rate_orders
                phase = orders[first : first + args.rate_orders]
                cpu_before = cpu_seconds(server.pid)
                got, phase_statuses, phase_s = await offered(server.port, phase, rate, 4 * args.connections)
                cpu_ms = (cpu_seconds(server.pid) - cpu_before) / max(len(got), 1) * 1000
                at_rate.append(
                    {
                        "offered_per_s": rate,
                        "orders_per_s": round(len(got) / phase_s, 1),
                        "p50_ms": round(percentile(got, 0.50) * 1000, 2),
                        "p99_ms": round(percentile(got, 0.99) * 1000, 2),
                        "refused": sum(n for status, n in phase_statuses.items() if status != 201),
                        "server_cpu_ms_per_order": round(cpu_ms, 2),
                    }
                )
                print(
                    f"open loop at {rate:g} orders/s: {at_rate[-1]['orders_per_s']} acknowledged/s, "
                    f"p50 {at_rate[-1]['p50_ms']} ms, p99 {at_rate[-1]['p99_ms']} ms, "
                    f"server CPU {cpu_ms:.2f} ms/order, statuses {phase_statuses}"
                )
            orders = orders[: args.warmup] + orders[args.warmup + offered_total :]
            ws_url = f"ws://127.0.0.1:{server.port}/v1/ws"
            async with fanout(ws_url, args.ws_subscribers) as subscribers:
                print(f"{args.ws_subscribers} WebSocket subscribers on the book", file=sys.stderr)
                server_cpu_s = cpu_seconds(server.pid)
                client_cpu_s = time.process_time()
                busy_ticks, all_ticks = machine_cpu_ticks()
                cycles_before = await writer_cycles(server.port, market.market_id)
                latencies, statuses, wall_s = await load(
                    server.port, orders[args.warmup :], args.connections, args.batch
                )
                server_cpu_s = cpu_seconds(server.pid) - server_cpu_s
                client_cpu_s = time.process_time() - client_cpu_s
                busy_after, all_after = machine_cpu_ticks()
                busy_share = (busy_after - busy_ticks) / max(all_after - all_ticks, 1)
                cycles, commands, cycle_s = (
                    after - before
                    for after, before in zip(
                        await writer_cycles(server.port, market.market_id), cycles_before, strict=True
                    )
                )
            if any(status >= 500 for status in statuses):
                errors = [line for line in server.log_tail(10**7).splitlines() if '"level": "error"' in line]
                print("server errors:\n" + "\n".join(errors[:3]), file=sys.stderr)
            if os.environ.get("BENCH_KEEP_LOG"):
                shutil.copy(server.log_path, os.environ["BENCH_KEEP_LOG"])
            head = await Connection.open(server.port)
            _, journal = await head.request("GET", f"/v1/markets/{market.market_id}/journal")
            await head.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    accepted = len(latencies)
    result: dict[str, Any] = {
        "orders_per_s": round(accepted / wall_s, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "ws_subscribers": None,
        "ws_p99_ms": None,
    }
    if rates:
        result["at_rate"] = at_rate
    if args.prefill_orders:
        result["prefill_orders"] = args.prefill_orders
    if subscribers.result is not None:
        fan = subscribers.result
        result["ws_subscribers"] = fan["subscribers"] - fan["closed_early"]
        result["ws_p99_ms"] = fan["p99_ms"]
        print(
            f"WebSocket fan-out: {fan['subscribers']} subscribers, {fan['updates']} book updates delivered, "
            f"match to delivery p50 {fan['p50_ms']} ms, p99 {fan['p99_ms']} ms, max {fan['max_ms']} ms; "
            f"gaps {fan['gaps']}, closed early {fan['closed_early']}"
        )
    print(
        f"statuses {statuses}; {accepted} acknowledged in {wall_s:.1f} s over {args.connections} connections"
        + (f", {args.batch} orders per request" if args.batch > 1 else "")
    )
    print(
        f"CPU per acknowledged order: server {server_cpu_s / max(accepted, 1) * 1000:.2f} ms, "
        f"client {client_cpu_s / max(accepted, 1) * 1000:.2f} ms; the machine's {os.cpu_count()} cores "
        f"were {busy_share:.0%} busy (server {server_cpu_s / wall_s:.2f} cores, client "
        f"{client_cpu_s / wall_s:.2f}, the rest PostgreSQL, subscribers, the node and anything else)"
    )
    print(
        f"writer: {cycles:.0f} cycles, {commands / max(cycles, 1):.1f} commands and "
        f"{cycle_s / max(cycles, 1) * 1000:.2f} ms each (read to commit), "
        f"in cycles {cycle_s / wall_s:.0%} of the time"
    )
    print(f"journal head after the run: {journal.decode()}")
    print(json.dumps(result))


if __name__ == "__main__":
    uvloop.run(main())
