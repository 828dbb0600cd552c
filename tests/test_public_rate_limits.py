"""The per-IP limit of the public routes that read the chain on every request, on the whole service.

Beyond its burst a client IP is refused (429 problem with ``Retry-After``) before the route
reads anything from the chain, and another IP's bucket is untouched. The chain reads are counted
by a web3 middleware on the shared embedded chain: every read a route makes passes through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from exchange.chain.runtime import ChainRuntime
from exchange.licenses.certificates import Certificate
from exchange.main import build_app
from exchange.settings import Settings
from tests.support.auth import embedded_account
from tests.trading_service.conftest import trading_settings

Call = tuple[str, str, dict[str, Any]]  # method, path, httpx keyword arguments


def chain_read_requests(chain: ChainRuntime) -> list[Call]:
    """One well-formed request to each public route that reads the chain."""
    holder: LocalAccount = embedded_account(1)
    pool = chain.pool
    certificate = Certificate(
        chain_id=chain.deployment.chain_id,
        verifying_contract=pool.bpr.address,
        holder=holder.address,
        pool=pool.registry.address,
        statement="holds a licence to every patent in the pool",
        issued_at=1,
        expires_at=2**40,
        nonce=7,
    )
    signature = holder.sign_message(certificate.signable()).signature
    verify_body = {"certificate": certificate.typed_data(), "signature": "0x" + bytes(signature).hex()}
    return [
        ("GET", "/v1/contracts", {}),
        ("GET", "/v1/licences/thresholds", {}),
        ("GET", "/v1/licences/certificates/draft", {"params": {"holder": holder.address}}),
        ("POST", "/v1/licences/certificates/verify", {"json": verify_body}),
        ("GET", f"/v1/licences/{holder.address}", {}),
        ("GET", "/v1/pool/stats", {}),
    ]


BURST = 6  # one request to each route above


def quiet_strict_settings(database_url: str) -> Settings:
    """No background loop reads the chain while the test counts (the trading tests' settings);
    ``BURST`` chain-reading requests per IP, refilled hardly at all."""
    return trading_settings(database_url, chain_read_rate_ip_per_s=0.001, chain_read_rate_ip_burst=BURST)


@contextmanager
def counting_chain_calls(chain: ChainRuntime) -> Iterator[list[str]]:
    """The RPC methods the chain is asked for while the block runs."""
    calls: list[str] = []

    class Counting(Web3Middleware):
        def request_processor(self, method: RPCEndpoint, params: Any) -> Any:
            calls.append(method)
            return method, params

        def response_processor(self, method: RPCEndpoint, response: RPCResponse) -> Any:
            return response

    chain.w3.middleware_onion.add(Counting, name="count-chain-calls")
    try:
        yield calls
    finally:
        chain.w3.middleware_onion.remove("count-chain-calls")


@asynccontextmanager
async def strict_service(
    database_url: str, chain: ChainRuntime
) -> AsyncIterator[Callable[[str], Awaitable[httpx.AsyncClient]]]:
    """The whole service; yields a function making a client whose requests come from a given IP."""
    app: FastAPI = build_app(quiet_strict_settings(database_url), chain=chain)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))

        async def from_ip(host: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )

        yield from_ip


async def send(client: httpx.AsyncClient, request: Call) -> httpx.Response:
    method, path, options = request
    return await client.request(method, path, **options)


def assert_rate_limited(reply: httpx.Response) -> None:
    assert reply.status_code == 429, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    retry_after = int(reply.headers["retry-after"])
    assert retry_after >= 1
    body = reply.json()
    assert body["status"] == 429
    assert body["type"].endswith("/rate-limited")
    assert body["retry_after_seconds"] == retry_after
    assert "198.51.100.7" in body["detail"]


async def test_beyond_its_burst_a_client_ip_is_refused_before_any_chain_read(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    requests = chain_read_requests(chain_runtime)
    assert len(requests) == BURST
    async with strict_service(database_url, chain_runtime) as from_ip:
        client = await from_ip("198.51.100.7")
        for request in requests:  # the burst: each route once, each reading the chain
            with counting_chain_calls(chain_runtime) as calls:
                reply = await send(client, request)
            assert reply.status_code == 200, (request[1], reply.text)
            assert calls, f"{request[1]} read nothing from the chain: the count proves nothing"
        with counting_chain_calls(chain_runtime) as calls:
            for request in requests:
                assert_rate_limited(await send(client, request))
        assert calls == []


async def test_another_client_ips_bucket_is_untouched(database_url: str, chain_runtime: ChainRuntime) -> None:
    requests = chain_read_requests(chain_runtime)
    async with strict_service(database_url, chain_runtime) as from_ip:
        spent = await from_ip("198.51.100.7")
        for request in requests:
            await send(spent, request)
        assert_rate_limited(await send(spent, requests[0]))
        other = await from_ip("198.51.100.8")
        for request in requests:
            reply = await send(other, request)
            assert reply.status_code == 200, (request[1], reply.text)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/contracts"),
        ("get", "/v1/licences/thresholds"),
        ("get", "/v1/licences/certificates/draft"),
        ("post", "/v1/licences/certificates/verify"),
        ("get", "/v1/licences/{address}"),
        ("get", "/v1/pool/stats"),
        ("post", "/v1/licences/certificates/qr"),
    ],
)
def test_the_chain_reading_routes_document_their_429(method: str, path: str) -> None:
    paths = build_app(Settings()).openapi()["paths"]
    refused = paths[path][method]["responses"]["429"]
    assert "rate-limited" in refused["description"]
    assert "Retry-After" in refused["headers"]


async def test_qr_codes_are_drawn_on_the_same_bucket(database_url: str, chain_runtime: ChainRuntime) -> None:
    """The QR code reads nothing from the chain but costs the server CPU: it takes from the same bucket."""
    verify_body = chain_read_requests(chain_runtime)[3][2]["json"]
    qr: Call = ("POST", "/v1/licences/certificates/qr", {"json": {**verify_body, "format": "png"}})
    async with strict_service(database_url, chain_runtime) as from_ip:
        client = await from_ip("198.51.100.7")
        for _ in range(BURST):
            reply = await send(client, qr)
            assert reply.status_code == 200, reply.text
            assert reply.headers["content-type"] == "image/png"
        assert_rate_limited(await send(client, qr))
        assert_rate_limited(await send(client, chain_read_requests(chain_runtime)[0]))
