"""A service whose operator lacks a role its own transactions need says so at start."""

from __future__ import annotations

import structlog
from eth_account import Account

from exchange.api.app import create_app
from exchange.chain.deployment import RolePlan
from exchange.chain.lifespan import chain_startup
from exchange.chain.pool import SERVICE_ROLES
from exchange.chain.runtime import ChainRuntime, start_chain
from exchange.settings import Settings


async def _start_logging(settings: Settings, runtime: ChainRuntime) -> list[dict[str, object]]:
    app = create_app(settings, lifespan_hooks=[chain_startup(runtime)])
    with structlog.testing.capture_logs() as logs:
        async with app.router.lifespan_context(app):
            pass
    return [entry for entry in logs if entry["event"] == "chain.operator_role_missing"]


async def test_an_operator_holding_every_role_starts_without_a_warning(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    operator = str(chain_runtime.w3.eth.default_account)
    assert chain_runtime.pool.missing_service_roles(operator) == []
    assert await _start_logging(settings, chain_runtime) == []


async def test_roles_held_elsewhere_are_named_at_start(settings: Settings) -> None:
    multisig = Account.create().address
    runtime = start_chain(None, roles=RolePlan(minter=multisig, treasurer=multisig))
    operator = str(runtime.w3.eth.default_account)
    expected = [entry for entry in SERVICE_ROLES if entry[1] in ("MINTER_ROLE", "TREASURER_ROLE")]
    assert runtime.pool.missing_service_roles(operator) == expected
    assert runtime.pool.missing_service_roles(multisig) == [
        entry for entry in SERVICE_ROLES if entry not in expected
    ]

    warnings = await _start_logging(settings, runtime)
    assert [(w["contract"], w["role"], w["log_level"]) for w in warnings] == [
        ("BPC", "MINTER_ROLE", "warning"),
        ("Fund", "TREASURER_ROLE", "warning"),
    ]
    assert str(warnings[1]["refused"]).endswith("transactions for paying royalties")
    assert {w["operator"] for w in warnings} == {operator}
