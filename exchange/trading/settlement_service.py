"""Settlement and the Vault indexer in a running service, and as commands.

Lifespan hook (after the chain's): builds the Vault indexer and the settler on
``app.state.settlement``, brings the indexer up to the chain head, and runs two
loops until shutdown — the indexer every ``vault_indexer_interval_s`` and the
settler every ``settlement_interval_s`` while idle, and beside the indexer
``exchange.trading.withdrawal_expiry`` (``0`` disables a loop; tools and tests
then call ``catch_up()`` / ``step()`` / ``drain()`` themselves). When the app
trades, ``exchange.trading.chain_cancels`` runs inside every indexer pass, between
its scan and its credit (``ChainIndexer.before_credit``). Both loops resume from
the database, so a restart or a crash loses nothing.

Commands (``exchange settle``, ``exchange audit``) run the same parts against a
JSON-RPC chain from ``CHAIN_RPC_URL`` and the deployment manifest: the embedded
chain lives only inside ``exchange serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.api.metrics import register_metrics
from exchange.chain.binding import BoundContract
from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import Deployment, error_decoder
from exchange.chain.errors import ChainError, ChainReplaced, ChainUnavailable, ManifestInvalid
from exchange.chain.lifespan import check_chain_anchor
from exchange.chain.pool import PoolChain
from exchange.chain.provider import make_web3
from exchange.chain.runtime import ChainRuntime
from exchange.db.session import app_sessionmaker
from exchange.kit.logging import get_logger
from exchange.settings import Settings
from exchange.trading import withdrawal_expiry
from exchange.trading.audit import AuditReport, AuditUnavailable, audit
from exchange.trading.chain_calls import ChainCalls
from exchange.trading.chain_cancels import ChainCancellations
from exchange.trading.indexer import ChainIndexer
from exchange.trading.metrics import settlement_metrics
from exchange.trading.operator import OperatorTransactions, operator_key
from exchange.trading.repository import BalancesBusy
from exchange.trading.service import TradingService
from exchange.trading.settlement import SettlementBlocked, SettlementConfig, SettlementInconsistent, Settler
from exchange.trading.vault_events import VAULT_EVENTS, VaultLedger

log = get_logger(__name__)


@dataclass(frozen=True)
class Settlement:
    """The Vault's indexer and settler of one process (``app.state.settlement``)."""

    runtime: ChainRuntime
    indexer: ChainIndexer
    settler: Settler
    calls: ChainCalls
    tokens: dict[str, BoundContract]
    sessionmaker: async_sessionmaker[AsyncSession]

    async def audit(self) -> AuditReport:
        """The ledger against the Vault (``exchange.trading.audit``)."""
        return await audit(
            self.sessionmaker,
            self.runtime.pool.vault,
            self.tokens,
            self.calls,
            chain_id=self.runtime.deployment.chain_id,
            base_token=self.settler.base_token,
            quote_token=self.settler.quote_token,
        )


def settlement_config(settings: Settings) -> SettlementConfig:
    return SettlementConfig(
        batch_size=settings.settlement_batch_size,
        confirmations=settings.settlement_confirmations,
        fee_bump_percent=settings.settlement_fee_bump_percent,
        stuck_after_s=settings.settlement_stuck_after_s,
        max_fee_per_gas_wei=settings.settlement_max_fee_per_gas_wei,
        max_reverts=settings.settlement_max_reverts,
    )


def build_settlement(
    runtime: ChainRuntime,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    settling: bool = True,
) -> Settlement:
    """Blocking (reads the Vault's tokens): the indexer and settler for `runtime`'s Vault.

    ``settling``: whether its settler will send transactions (not for the audit, which only
    reads), so that an operator signing through the node is worth a warning."""
    pool, calls = runtime.pool, ChainCalls(embedded=runtime.embedded)
    vault = pool.vault
    base_token, quote_token = pool.vault_tokens()
    artifacts = compile_contracts()
    tokens = {
        token: BoundContract(runtime.w3, "ERC20", token, artifacts["TestToken"].abi, error_decoder(artifacts))
        for token in (base_token, quote_token)
    }
    key = settings.operator_private_key.get_secret_value() if settings.operator_private_key else None
    operator = OperatorTransactions(runtime.w3, runtime.deployment.chain_id, operator_key(runtime.w3, key))
    if settling and not operator.signs_locally:
        log.warning("settlement.node_signs", operator=operator.address)
    indexer = ChainIndexer(
        vault,
        VAULT_EVENTS,
        VaultLedger(base_token, quote_token),
        sessionmaker,
        calls,
        chain_id=runtime.deployment.chain_id,
        deploy_block=runtime.deployment.deploy_block,
        confirmations=settings.vault_indexer_confirmations,
        max_blocks=settings.vault_indexer_max_blocks,
    )
    settler = Settler(
        vault,
        operator,
        sessionmaker,
        calls,
        chain_id=runtime.deployment.chain_id,
        base_token=base_token,
        quote_token=quote_token,
        config=settlement_config(settings),
    )
    return Settlement(
        runtime=runtime,
        indexer=indexer,
        settler=settler,
        calls=calls,
        tokens=tokens,
        sessionmaker=sessionmaker,
    )


def settlement_startup() -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Lifespan hook of the Vault indexer and the settler; add it after the chain's hook."""

    @asynccontextmanager
    async def hook(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        runtime: ChainRuntime = app.state.chain
        sessionmaker = app_sessionmaker(app)
        calls = ChainCalls(embedded=runtime.embedded)
        state = await calls.run(lambda: build_settlement(runtime, settings, sessionmaker))
        app.state.settlement = state
        register_metrics(app, "settlement", settlement_metrics(state))
        trading: TradingService | None = getattr(app.state, "trading", None)
        if trading is not None:  # orders cancelled in the Vault leave the books
            cancels = ChainCancellations(trading, sessionmaker, await state.indexer.cursor_id())
            await cancels.apply()  # the events recorded before this start
            trading.order_gate = cancels.refuse
            trading.withdrawal_gate = cancels.refuse_withdrawal
            state.settler.fill_failed = trading.fill_failed  # voided trades leave the live feeds
            state.settler.batch_settled = trading.batch_settled  # settled fills reach their accounts
            app.state.chain_cancels = cancels
            # Every indexer pass applies them between its scan and its credit (an exit's orders
            # leave the book before its payout is debited); no loop of their own.
            state.indexer.before_credit = cancels.apply
        try:
            await state.indexer.catch_up()
        except BalancesBusy as busy:  # trading holds balances an undo needs: the loop goes on with it
            log.info("settlement.start_catch_up_deferred", detail=busy.detail)
        tasks: list[asyncio.Task[None]] = []
        if settings.vault_indexer_interval_s > 0:
            tasks.append(
                asyncio.create_task(
                    state.indexer.run(settings.vault_indexer_interval_s), name="vault-indexer"
                )
            )
            expiry = withdrawal_expiry.run(
                sessionmaker,
                runtime.w3,
                state.calls,
                await state.indexer.cursor_id(),
                settings.vault_indexer_interval_s,
            )
            tasks.append(asyncio.create_task(expiry, name="withdrawal-expiry"))
        if settings.settlement_interval_s > 0:
            tasks.append(
                asyncio.create_task(state.settler.run(settings.settlement_interval_s), name="settlement")
            )
        log.info(
            "settlement.started", vault=runtime.pool.vault.address, operator=state.settler.operator.address
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    return hook


# --- commands -----------------------------------------------------------------------------------


def _command_runtime(settings: Settings) -> ChainRuntime:
    """The configured chain and deployment (the manifest ``exchange serve`` uses); ``ManifestInvalid``
    for no manifest or one this version cannot read (checked first: it needs no node),
    ``ChainUnavailable`` without a node's URL or when no node answers."""
    from exchange.chain.lifespan import service_manifest

    manifest = service_manifest(settings)  # the service's own: the configured one, else the default
    if manifest is None:
        raise ChainUnavailable("set CHAIN_RPC_URL: the embedded chain lives only inside `exchange serve`")
    if not manifest.is_file():
        raise ManifestInvalid(
            f"no deployment manifest at {manifest}: set EXCHANGE_DEPLOYMENT_MANIFEST to the manifest "
            "of the deployed contracts (the one `exchange serve` loads)"
        )
    deployment = Deployment.read(manifest)
    missing = deployment.missing()
    if missing:
        raise ManifestInvalid(f"the manifest {manifest} names no {', '.join(missing)}")
    key = settings.operator_private_key.get_secret_value() if settings.operator_private_key else None
    w3 = make_web3(settings.chain_rpc_url, operator_key=key)
    return ChainRuntime(w3=w3, deployment=deployment, pool=PoolChain(w3, deployment), embedded=False)


async def _with_database(
    settings: Settings, runtime: ChainRuntime, action: Callable[[async_sessionmaker[AsyncSession]], Any]
) -> Any:
    """Run ``action`` on the configured database, once it is known to be at this version's schema
    and to belong to ``runtime``'s chain; 2 when the database cannot be reached (a SQLite file that
    is not there is not made), has no schema or another version's, or belongs to another chain."""
    from exchange.cli import reach_database
    from exchange.db.engine import create_db_engine, create_sessionmaker
    from exchange.db.migrate import SchemaNotReady, check_schema

    if not await reach_database(settings.database_url, sys.stderr, existing=True):
        return 2
    engine = create_db_engine(settings)
    try:
        try:
            await check_schema(engine)  # these commands never migrate: they run beside the service
        except SchemaNotReady as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        sessionmaker = create_sessionmaker(engine)
        async with sessionmaker() as session:
            try:
                await check_chain_anchor(session, runtime, record=False)
            except ChainReplaced as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        return await action(sessionmaker)
    finally:
        await engine.dispose()


def settle_command(settings: Settings, *, once: bool, poll_s: float) -> int:
    """``exchange settle``: settle pending fills (``--once``: until none is left), then exit."""
    try:
        runtime = _command_runtime(settings)
    except ChainError as exc:  # no node answers, or the manifest is unreadable
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
        state = build_settlement(runtime, settings, sessionmaker)
        try:
            if once:
                await state.settler.drain(poll_s=poll_s)
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            task = asyncio.create_task(state.settler.run(poll_s), name="settlement")
            stopped = asyncio.create_task(stop.wait(), name="settle-stop")
            # A loop that ended by itself (an inconsistency halts it) ends the process at once,
            # so that its supervisor sees it, instead of idling until the next signal.
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # the loop's failure, if it ended by itself, is raised here
            return 0
        except SettlementInconsistent as exc:
            print(f"error: settlement stopped: {exc}", file=sys.stderr)
            return 3
        except SettlementBlocked as exc:  # --once only: the loop waits for a person to unblock it
            print(f"error: settlement blocked: {exc}", file=sys.stderr)
            return 4

    result: int = asyncio.run(_with_database(settings, runtime, work))
    return result


def audit_command(settings: Settings) -> int:
    """``exchange audit``: print every difference between the ledger and the Vault; 1 if any,
    2 when it cannot be done (no node answers, the manifest is unreadable, the database cannot be
    reached, has no schema or another version's, or belongs to another chain)."""
    try:
        runtime = _command_runtime(settings)
    except ChainError as exc:  # not a difference: status 1 would say the ledger disagrees
        print(f"error: audit impossible: {exc}", file=sys.stderr)
        return 2

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
        state = build_settlement(runtime, settings, sessionmaker, settling=False)
        try:
            report = await state.audit()
        except (AuditUnavailable, ChainError) as exc:
            print(f"error: audit impossible: {exc}", file=sys.stderr)
            return 2
        for line in report.lines():
            print(line)
        return 0 if report.clean else 1

    result: int = asyncio.run(_with_database(settings, runtime, work))
    return result
