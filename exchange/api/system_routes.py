"""System routes: health for load balancers and operators, server time for clients.

Other parts of the service add their own health checks at start-up with
:func:`register_health_check` (the chain layer adds one for its node).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from exchange.db.session import app_engine
from exchange.kit.logging import get_logger

log = get_logger(__name__)

HealthCheck = Callable[[], Awaitable[None]]
"""Returns when the dependency is usable; raises (anything) when it is not."""

HEALTH_CHECK_TIMEOUT_SECONDS = 2.0
HEALTH_REUSE_SECONDS = 1.0
"""How long one run of the health checks answers ``GET /health``."""
monotonic = time.monotonic

router = APIRouter(tags=["system"])


def service_version() -> str:
    try:
        return version("exchange")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def register_health_check(app: FastAPI, name: str, check: HealthCheck) -> None:
    """Add ``check`` to ``GET /health`` under ``name``; call it from a lifespan hook."""
    checks: dict[str, HealthCheck] = app.state.health_checks
    if name in checks or name == "database":
        raise ValueError(f"a health check named {name!r} is already registered")
    checks[name] = check


class CheckResult(BaseModel):
    ok: bool
    latency_ms: float = Field(description="How long the check took, in milliseconds.")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    checks: dict[str, CheckResult] = Field(description="database, and whatever else the service depends on.")


class ServerTime(BaseModel):
    server_time_ms: int = Field(description="Milliseconds since the Unix epoch, UTC.")


async def _run_check(name: str, check: HealthCheck) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_SECONDS):
            await check()
    except Exception as exc:  # any failure means "not healthy"; the reason goes to the log only
        log.warning("health.check_failed", check=name, error_type=type(exc).__qualname__, error=str(exc))
        ok = False
    else:
        ok = True
    return CheckResult(ok=ok, latency_ms=round((time.perf_counter() - started) * 1000, 3))


@router.get(
    "/health",
    summary="Service health",
    response_model=Health,
    responses={503: {"model": Health, "description": "A dependency (database, chain) is failing."}},
)
async def health(request: Request, response: Response) -> Health:
    """200 when every dependency answers, 503 otherwise; the body says which one failed.

    The checks run at most once every ``HEALTH_REUSE_SECONDS``: requests meanwhile (and those
    that arrive while the checks run) are given the latest answer, so probes and clients in
    any number cost the database and the chain's node one check each per interval.
    """
    state = request.app.state
    lock: asyncio.Lock | None = getattr(state, "health_lock", None)
    if lock is None:
        lock = state.health_lock = asyncio.Lock()
    async with lock:
        latest: tuple[float, Health] | None = getattr(state, "health_latest", None)
        if latest is None or monotonic() - latest[0] >= HEALTH_REUSE_SECONDS:
            latest = state.health_latest = (monotonic(), await _check_all(request.app))
    answer = latest[1]
    response.status_code = 200 if answer.status == "ok" else 503
    return answer


async def _check_all(app: FastAPI) -> Health:
    engine = app_engine(app)

    async def database() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    checks: dict[str, HealthCheck] = {"database": database, **app.state.health_checks}
    results = await asyncio.gather(*(_run_check(name, check) for name, check in checks.items()))
    by_name = dict(zip(checks, results, strict=True))
    healthy = all(result.ok for result in results)
    return Health(status="ok" if healthy else "unavailable", version=service_version(), checks=by_name)


@router.get("/v1/time", summary="Server time", response_model=ServerTime)
async def server_time() -> ServerTime:
    """The server's clock, for clients that sign time-bound requests (like CCXT ``fetchTime``)."""
    return ServerTime(server_time_ms=time.time_ns() // 1_000_000)
