"""WebSocket fan-out load: many subscribers to a market's book stream, each checking every diff.

Run as its own process (``bench/api_orders.py`` starts it beside its order
client). Opens ``--subscribers`` connections to ``/v1/ws``, subscribes each to
the book of ``--market``, prints ``ready`` once every snapshot arrived, then
records for every book update the delay from the cycle that matched it
(``timestamp_us`` in the message) to its arrival here, and checks the sequence
links (``prev_sequence`` = the sequence held). When a line (or end of file)
arrives on stdin it closes the connections and prints one JSON line:
``{"subscribers", "updates", "p50_ms", "p99_ms", "max_ms", "gaps", "closed_early"}``.

Both clocks are this machine's wall clock, so the delay is exact up to the
clocks' resolution.

    .venv/bin/python bench/ws_subscribers.py ws://127.0.0.1:8000/v1/ws --subscribers 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

SCRIPT = str(Path(__file__).resolve())


class Subscriber:
    def __init__(self) -> None:
        self.sequence: int | None = None
        self.delays_us: list[int] = []
        self.gaps = 0
        self.closed_early = False

    async def run(self, url: str, market: str, ready: asyncio.Event, stop: asyncio.Event) -> None:
        async with connect(url, max_queue=None, open_timeout=120) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "channel": "book", "market": market}).decode())
            await self._until_snapshot(ws)
            ready.set()
            reader = asyncio.create_task(self._read(ws))
            await stop.wait()
            reader.cancel()

    async def _until_snapshot(self, ws: ClientConnection) -> None:
        while self.sequence is None:
            message = orjson.loads(await ws.recv())
            if message.get("type") == "error":  # e.g. the service's rate limit refused the subscribe
                raise RuntimeError(f"the book subscription was refused: {message}")
            if message.get("type") == "snapshot":
                self.sequence = message["sequence"]

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                now_us = time.time_ns() // 1000
                message = orjson.loads(raw)
                if message.get("type") != "update":
                    continue
                self.delays_us.append(now_us - message["timestamp_us"])
                if message["prev_sequence"] != self.sequence:
                    self.gaps += 1
                self.sequence = message["sequence"]
        except ConnectionClosed:
            self.closed_early = True


def percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--market", default="BPC-TUSD")
    args = parser.parse_args()

    stop = asyncio.Event()
    subscribers = [Subscriber() for _ in range(args.subscribers)]
    readies = [asyncio.Event() for _ in subscribers]
    tasks = []
    for subscriber, ready in zip(subscribers, readies, strict=True):
        tasks.append(asyncio.create_task(subscriber.run(args.url, args.market, ready, stop)))
        await asyncio.sleep(0.002)  # a gentle ramp: the server's accept backlog is not the subject
    await asyncio.gather(*(ready.wait() for ready in readies))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    delays = [delay for subscriber in subscribers for delay in subscriber.delays_us]
    print(
        json.dumps(
            {
                "subscribers": len(subscribers),
                "updates": len(delays),
                "p50_ms": round(percentile(delays, 0.50) / 1000, 2),
                "p99_ms": round(percentile(delays, 0.99) / 1000, 2),
                "max_ms": round(max(delays, default=0) / 1000, 2),
                "gaps": sum(subscriber.gaps for subscriber in subscribers),
                "closed_early": sum(subscriber.closed_early for subscriber in subscribers),
            }
        ),
        flush=True,
    )


class Fanout:
    """The subscriber process seen from the benchmark: start, wait until ready, stop, read the result."""

    def __init__(self, url: str, subscribers: int) -> None:
        self.url = url
        self.subscribers = subscribers
        self.result: dict[str, Any] | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            self.url,
            "--subscribers",
            str(self.subscribers),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        stdout = self._process.stdout
        if stdout is None:  # pragma: no cover - asked for a pipe above
            raise RuntimeError("no pipe to the subscriber process")
        line = await asyncio.wait_for(stdout.readline(), timeout=600)
        if line.strip() != b"ready":
            raise RuntimeError(f"the WebSocket subscribers did not start: {line!r}")

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        out, _ = await asyncio.wait_for(process.communicate(b"stop\n"), timeout=600)
        self.result = json.loads(out.decode().strip().splitlines()[-1])


@contextlib.asynccontextmanager
async def fanout(url: str, subscribers: int) -> AsyncIterator[Fanout]:
    """Subscribers in their own process for the duration of the block (none when ``subscribers`` is 0)."""
    handle = Fanout(url, subscribers)
    if subscribers:
        await handle.start()
    try:
        yield handle
    finally:
        if subscribers:
            await handle.stop()


if __name__ == "__main__":
    uvloop.run(main())
