"""Schemathesis against the trading API's OpenAPI schema, every check on: no server error, ever.

The service runs as a process (``exchange serve``) on PostgreSQL and its embedded
chain; requests carry a signed-in session, so the private routes are exercised
past authentication (the account is not a pool member, so no order rests).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from eth_account import Account
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from tests.chain.nodes import free_port
from tests.conftest import PostgresServer
from tests.trading_service.live import ServerProcess, server_env, sign_in

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TRADING_PATHS = r"^/v1/(orders|account|markets)"
REPLAYED = "Idempotent-Replayed"
# Schema-valid requests the domain refuses are 422 problems (a price off the tick, an expired
# order, a signature that is not the maker's): acceptable answers to valid-looking data.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]
            }
        }
    }
)


@pytest.fixture(scope="module")
def live_service(
    postgres_server: PostgresServer, postgres_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    name = f"exchange_schema_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name, template=postgres_template)
    directory: Path = tmp_path_factory.mktemp("schemathesis")
    env = server_env(
        postgres_server.url_for(name),
        "",
        directory / "deployment.json",
        trading_rate_account_per_s=100_000,
        trading_rate_account_burst=100_000,
        trading_rate_ip_per_s=100_000,
        trading_rate_ip_burst=100_000,
        log_level="WARNING",
    )
    for embedded in ("CHAIN_RPC_URL", "EXCHANGE_DEV_ACCOUNTS", "EXCHANGE_DEPLOYMENT_MANIFEST"):
        env.pop(embedded)
    server = ServerProcess(env=env, port=free_port(), log_path=directory / "server.log")
    server.start(timeout_s=180)
    try:
        (trader,) = asyncio.run(sign_in(server.url, [Account.from_key(b"\x5c" * 32)]))
        yield server.url, trader.token
    finally:
        server.stop()
        postgres_server.drop_database(name)


def test_the_schema_documents_what_the_server_sends(live_service: tuple[str, str]) -> None:
    url, token = live_service
    signed_in = {"Authorization": f"Bearer {token}"}
    json_body = {**signed_in, "Content-Type": "application/json"}
    with httpx.Client(base_url=url) as client:
        paths = client.get("/openapi.json").json()["paths"]

        def documented(method: str, path: str, reply: httpx.Response) -> dict[str, Any]:
            responses: dict[str, Any] = paths[path][method]["responses"]
            assert str(reply.status_code) in responses, (method, path, reply.status_code, reply.text)
            return responses[str(reply.status_code)]

        # A route without parameters still refuses unknown ones, and takes the IP's token.
        unknown = client.get("/v1/markets", params={"foo": "1"})
        assert unknown.status_code == 422
        documented("get", "/v1/markets", unknown)
        assert "Retry-After" in paths["/v1/markets"]["get"]["responses"]["429"]["headers"]

        # A JSON syntax error is an invalid body (422), and so is one that is not UTF-8 at all.
        syntax_error = client.post("/v1/orders", content=b'{"market":', headers=json_body)
        assert [error["type"] for error in syntax_error.json()["errors"]] == ["json_invalid"]
        documented("post", "/v1/orders", syntax_error)
        not_utf8 = client.post("/v1/orders", content=b'{"market": "\xff"}', headers=json_body)
        assert [error["type"] for error in not_utf8.json()["errors"]] == ["json_invalid"]
        documented("post", "/v1/orders", not_utf8)

        # A retry with the same key gets the first answer back, marked as a replay.
        keyed = {**signed_in, "Idempotency-Key": "schema-replay"}
        first, again = [client.delete("/v1/orders/999999", headers=keyed) for _ in range(2)]
        assert (first.status_code, again.status_code) == (404, 404)
        assert REPLAYED not in first.headers
        assert again.headers[REPLAYED] == "true"
        assert REPLAYED in documented("delete", "/v1/orders/{order_id}", again)["headers"]
        for path, method, status in (
            ("/v1/orders", "post", "201"),
            ("/v1/orders", "post", "200"),
            ("/v1/orders/batch", "post", "200"),
            ("/v1/account/withdrawals", "post", "201"),
        ):
            assert REPLAYED in paths[path][method]["responses"][status]["headers"], (path, status)
        for path, operations in paths.items():
            for method, operation in operations.items():
                if "429" in operation["responses"]:
                    assert "Retry-After" in operation["responses"]["429"]["headers"], (method, path)


def test_trading_api_conforms_and_never_fails(live_service: tuple[str, str]) -> None:
    url, token = live_service
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=CONFIG).include(
        path_regex=TRADING_PATHS
    )
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            # Negative cases keep their own (possibly removed) credentials: a missing header is the test.
            credentials = headers if mode is GenerationMode.POSITIVE else {}

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None
            )
            def exercise(case: Case[Any]) -> None:
                case.call_and_validate(base_url=url, headers=credentials)  # noqa: B023  (runs in this iteration)

            try:
                exercise()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label
