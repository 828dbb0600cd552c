"""``exchange settle`` as a long-running command, without a chain or a database: how it ends.

The settler stands in for the real one with the real loop (``Settler.run``) around a step
of the test's choosing; the chain runtime and the database are left out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from exchange.settings import Settings
from exchange.trading import settlement_service
from exchange.trading.settlement import SettlementInconsistent, Settler, StepOutcome

COMMAND_DEADLINE_S = 10.0


class _Settler:
    """The real settling loop around a given step."""

    run = Settler.run

    def __init__(self, step: Callable[[], Awaitable[StepOutcome]]) -> None:
        self.step = step
        self.steps = 0


@pytest.fixture
def settle_loop(monkeypatch: pytest.MonkeyPatch) -> Callable[[_Settler], int]:
    """``exchange settle`` (without ``--once``) on a given settler; its exit status.

    A command still running after ``COMMAND_DEADLINE_S`` fails the test (TimeoutError)
    instead of hanging the suite.
    """

    async def with_database(
        _settings: Settings, _runtime: Any, action: Callable[[Any], Awaitable[int]]
    ) -> int:
        return await asyncio.wait_for(action(None), COMMAND_DEADLINE_S)

    def run(settler: _Settler) -> int:
        monkeypatch.setattr(settlement_service, "_command_runtime", lambda _settings: SimpleNamespace())
        monkeypatch.setattr(settlement_service, "_with_database", with_database)
        monkeypatch.setattr(
            settlement_service,
            "build_settlement",
            lambda _runtime, _settings, _sessionmaker: SimpleNamespace(settler=settler),
        )
        return settlement_service.settle_command(Settings(), once=False, poll_s=0.01)

    return run


def test_a_halted_settle_loop_ends_the_command_with_status_3_at_once(
    settle_loop: Callable[[_Settler], int], capsys: pytest.CaptureFixture[str]
) -> None:
    # A supervisor restarts, or pages about, a process that ended; one idling after the halt
    # looked healthy until it was stopped.
    async def inconsistent() -> StepOutcome:
        raise SettlementInconsistent("batch 7: the Vault's order states match neither outcome")

    started = time.monotonic()
    assert settle_loop(_Settler(inconsistent)) == 3
    assert time.monotonic() - started < COMMAND_DEADLINE_S
    stderr = capsys.readouterr().err.splitlines()
    assert "error: settlement stopped: batch 7: the Vault's order states match neither outcome" in stderr


def test_a_settle_loop_stops_on_sigterm_with_status_0(settle_loop: Callable[[_Settler], int]) -> None:
    settler: _Settler

    async def idle() -> StepOutcome:
        settler.steps += 1
        if settler.steps == 3:  # well into the loop: the command's signal handlers are in place
            os.kill(os.getpid(), signal.SIGTERM)
        return StepOutcome.IDLE

    settler = _Settler(idle)
    assert settle_loop(settler) == 0
    assert settler.steps >= 3
