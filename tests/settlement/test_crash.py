"""The settler killed (SIGKILL) at random points and restarted settles every fill exactly once.

``exchange settle --once`` runs as a subprocess against the test database and the
Hardhat node. Each run is killed after one of the settler's log events, taken in
turn — each is logged right after the step it names: a batch written down but not
yet sent, a batch sent, a batch closed — at a seeded occurrence and delay, and
started again. The last run is left to finish. Then every fill must be settled in
exactly one settled batch, no batch may have reverted (sending a batch twice
would revert or overfill), each order's filled amount on chain must be the sum of
its fills, and the audit must be clean.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.settings import Settings
from exchange.trading.settlement_models import BatchState, SettlementBatch
from exchange.trading.settlement_service import build_settlement
from tests.chain.nodes import ROOT
from tests.settlement.conftest import MEMBERS, OPERATOR, VaultNet
from tests.settlement.flows import (
    Trader,
    assert_audit_clean,
    assert_settled_exactly_once,
    trade_randomly,
    trading,
)

pytestmark = [pytest.mark.hardhat, pytest.mark.slow]

KILL_POINTS = ("settlement.batch_opened", "settlement.sent", "settlement.batch_settled")
KILLS = 8
FILLS = 160
BATCH_SIZE = 10


def _lines(stream: IO[str], sink: queue.Queue[str | None]) -> None:
    for line in stream:
        sink.put(line)
    sink.put(None)


def _events(process: subprocess.Popen[str], timeout_s: float) -> Iterator[str]:
    """The subprocess's log lines as they come, until it exits or goes quiet for `timeout_s`."""
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True).start()
    while True:
        line = lines.get(timeout=timeout_s)
        if line is None:
            return
        yield line


def run_settler(env: dict[str, str], rng: random.Random, target: str | None) -> tuple[int, str]:
    """One run of ``exchange settle --once``: killed after a seeded occurrence of `target`, or to its end."""
    occurrence = rng.randint(1, 3)
    # Right after "batch_opened" the batch is written down and not yet (or just being) sent.
    delay_s = 0.0 if target == KILL_POINTS[0] else rng.choice((0.0, rng.uniform(0.0, 0.15)))
    with subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "settle", "--once", "--poll", "0.02"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        seen, tail = 0, list[str]()
        try:
            for line in _events(process, timeout_s=120):
                tail = [*tail[-20:], line]
                if target is not None and target in line:
                    seen += 1
                    if seen == occurrence:
                        time.sleep(delay_s)
                        process.kill()
                        process.wait()
                        return process.returncode, f"{target} #{occurrence} +{delay_s * 1000:.0f} ms"
            code = process.wait(timeout=30)
            return code, "ran to the end" + ("" if code == 0 else "\n" + "".join(tail))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


async def test_a_settler_killed_at_random_points_settles_every_fill_exactly_once(
    net: VaultNet,
    chain_settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
) -> None:
    parts = build_settlement(net.runtime, chain_settings, sessionmaker)
    await parts.indexer.catch_up()
    async with trading(net, chain_settings, sessionmaker) as service:
        count = await trade_randomly(
            service, [Trader(member) for member in MEMBERS], sessionmaker, fills=FILLS, seed=41
        )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CHAIN_RPC_URL": net.url,
        "EXCHANGE_OPERATOR_PRIVATE_KEY": OPERATOR.key.hex(),
        "EXCHANGE_DEPLOYMENT_MANIFEST": str(net.manifest),
        "EXCHANGE_SETTLEMENT_BATCH_SIZE": str(BATCH_SIZE),
        "EXCHANGE_LOG_LEVEL": "INFO",
    }
    rng = random.Random(20261122)
    runs: list[str] = []
    for attempt in range(KILLS + 1):
        target = KILL_POINTS[attempt % len(KILL_POINTS)] if attempt < KILLS else None
        code, where = await asyncio.to_thread(run_settler, env, rng, target)
        runs.append(where)
        if where.startswith("ran to the end"):
            assert code == 0, where
            break
        assert code == -9, where
    else:
        pytest.fail(f"the settler never finished: {runs}")

    await assert_settled_exactly_once(net, sessionmaker)
    async with sessionmaker() as session:
        batches = (await session.scalars(select(SettlementBatch))).all()
    assert {batch.state for batch in batches} == {BatchState.SETTLED}, runs
    assert sum(batch.fill_count for batch in batches) == count
    await parts.indexer.catch_up()
    await assert_audit_clean(parts)
    print(f"\n{count} fills in {len(batches)} batches, {len(runs) - 1} kills: " + "; ".join(runs))
