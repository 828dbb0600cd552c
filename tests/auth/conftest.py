"""The whole service app (``exchange.main.build_app``) on a shared embedded chain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from exchange.chain.runtime import ChainRuntime, start_chain
from exchange.main import build_app
from exchange.settings import Settings


@pytest.fixture(scope="session")
def embedded_runtime() -> ChainRuntime:
    return start_chain(None)


@pytest.fixture
def chain_runtime(embedded_runtime: ChainRuntime) -> Iterator[ChainRuntime]:
    """The shared embedded chain, with every test's transactions reverted afterwards."""
    provider = embedded_runtime.w3.provider
    snapshot = provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield embedded_runtime
    finally:
        provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


@pytest.fixture
async def service(settings: Settings, chain_runtime: ChainRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(settings, chain=chain_runtime)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client
