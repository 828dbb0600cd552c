"""The audit: the off-chain ledger against the Vault's balances on chain, at one block.

The audit block is the Vault indexer's *credited* block: every Vault event up to
it is in the ledger and none after it, so deposits, withdrawals and exits agree
by construction when nothing is wrong. Fills differ in time: the ledger posts a
fill when it matches, the chain when its batch settles. So the ledger is first
brought to the audit block — each fill not settled by then (pending, submitted,
or settled in a later block) has its postings taken back out, and so has the
fee sweep of every batch settled after it, while a batch still waiting for its
confirmations whose transaction ran by then counts as settled, its fees swept —
and then compared:

* every account the ledger or the Vault's events know, per token: ledger total
  against ``Vault.balanceOf(account, token)``;
* ``vault:fees`` against zero (the fees of settled batches are with the Fund);
* per token, the Vault's own token balance against the sum of the accounts'
  on-chain balances, and against the sum of their ledger totals.

Every difference is reported; none is fixed here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3

from exchange.chain.binding import BoundContract
from exchange.trading.chain_calls import ChainCalls
from exchange.trading.ledger import VAULT_EXTERNAL, FillAmounts, Posting
from exchange.trading.models import LedgerBalance, SettlementState, TradingFill
from exchange.trading.operator import receipt_of
from exchange.trading.repository import FEES_ACCOUNT
from exchange.trading.settlement import fill_totals
from exchange.trading.settlement_models import (
    OPEN_BATCH_STATES,
    BatchState,
    ChainCursor,
    ChainEvent,
    EventState,
    SettlementAttempt,
    SettlementBatch,
    SettlementBatchFill,
)
from exchange.trading.skipped_fills import skipped_by_fill

VAULT_HOLDING = "vault:holding"
"""The Vault contract's own token balance, in the report."""
_ACCOUNT_ARGS = {
    "Deposited": ("account",),
    "Withdrawn": ("account",),
    "Exited": ("account",),
    "Trade": ("buyer", "seller"),
}


class AuditUnavailable(Exception):
    """There is nothing to audit against yet (the indexer has not run on this database)."""


@dataclass(frozen=True, slots=True)
class Difference:
    account: str
    token: str
    ledger: int
    chain: int
    what: str  # "balance", "fees not swept", "holding vs accounts", "holding vs ledger"

    @property
    def delta(self) -> int:
        return self.ledger - self.chain


@dataclass(frozen=True, slots=True)
class AuditReport:
    chain_id: int
    vault: str
    block: int
    accounts: int
    tokens: tuple[str, ...]
    differences: tuple[Difference, ...]

    @property
    def clean(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        head = (
            f"audit of Vault {self.vault} on chain {self.chain_id} at block {self.block}: "
            f"{self.accounts} accounts, {len(self.tokens)} tokens"
        )
        if self.clean:
            return [head, "no difference"]
        rows = [
            head,
            f"{'account':<44} {'token':<44} {'ledger':>30} {'chain':>30} {'ledger-chain':>30}  what",
        ]
        rows += [
            f"{d.account:<44} {d.token:<44} {d.ledger:>30} {d.chain:>30} {d.delta:>30}  {d.what}"
            for d in self.differences
        ]
        rows.append(f"{len(self.differences)} difference(s)")
        return rows


async def audit(
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: BoundContract,
    tokens: dict[str, BoundContract],
    calls: ChainCalls,
    *,
    chain_id: int,
    base_token: str,
    quote_token: str,
) -> AuditReport:
    """Compare the ledger with the Vault at the indexer's credited block (the ledger read in one snapshot)."""
    async with sessionmaker() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            # Every table as of one moment, though the writer and the settler keep committing.
            _ = await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return await _audit(
            session, vault, tokens, calls, chain_id=chain_id, base_token=base_token, quote_token=quote_token
        )


async def _audit(
    session: AsyncSession,
    vault: BoundContract,
    tokens: dict[str, BoundContract],
    calls: ChainCalls,
    *,
    chain_id: int,
    base_token: str,
    quote_token: str,
) -> AuditReport:
    cursor = await session.scalar(
        select(ChainCursor)
        .where(ChainCursor.chain_id == chain_id, ChainCursor.contract == vault.address)
        .order_by(ChainCursor.id.desc())
        .limit(1)
    )
    if cursor is None:
        raise AuditUnavailable(f"the Vault indexer has not run for {vault.address} on chain {chain_id}")
    block = cursor.credited_block
    ran, skipped = await _open_batches_run_by(session, vault, calls, block)
    view = await _ledger_at(session, block, base_token, quote_token, ran, skipped)
    accounts = sorted(
        ({account for account, _ in view} | await _event_accounts(session, cursor.id))
        - {VAULT_EXTERNAL, FEES_ACCOUNT}
    )
    token_list = (base_token, quote_token)

    def read_chain() -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        balances = {
            (account, token): int(vault.call("balanceOf", account, token, block=block))
            for account in accounts
            for token in token_list
        }
        holdings = {
            token: int(tokens[token].call("balanceOf", vault.address, block=block)) for token in token_list
        }
        return balances, holdings

    on_chain, holdings = await calls.run(read_chain)
    differences: list[Difference] = []
    for account in accounts:
        for token in token_list:
            expected, actual = view.get((account, token), 0), on_chain[(account, token)]
            if expected != actual:
                differences.append(Difference(account, token, expected, actual, "balance"))
    for token in token_list:
        fees = view.get((FEES_ACCOUNT, token), 0)
        if fees:
            differences.append(Difference(FEES_ACCOUNT, token, fees, 0, "fees not swept"))
        chain_sum = sum(on_chain[(account, token)] for account in accounts)
        ledger_sum = sum(
            total for (account, held), total in view.items() if held == token and account != VAULT_EXTERNAL
        )
        if holdings[token] != chain_sum:
            differences.append(
                Difference(VAULT_HOLDING, token, chain_sum, holdings[token], "holding vs accounts")
            )
        if holdings[token] != ledger_sum:
            differences.append(
                Difference(VAULT_HOLDING, token, ledger_sum, holdings[token], "holding vs ledger")
            )
    return AuditReport(chain_id, vault.address, block, len(accounts), token_list, tuple(differences))


async def _open_batches_run_by(
    session: AsyncSession, vault: BoundContract, calls: ChainCalls, block: int
) -> tuple[set[int], set[int]]:
    """The open batches (sent, waiting for their confirmations) whose transaction ran by ``block``,
    and the ids of the fills those transactions skipped (``FillSkipped``: they moved nothing)."""
    attempts = (
        await session.execute(
            select(SettlementAttempt.batch_id, SettlementAttempt.tx_hash)
            .join(SettlementBatch, SettlementBatch.id == SettlementAttempt.batch_id)
            .where(SettlementBatch.state.in_(OPEN_BATCH_STATES), SettlementAttempt.tx_hash.is_not(None))
        )
    ).all()
    if not attempts:
        return set(), set()

    batch_ids = {batch_id for batch_id, _ in attempts}
    fills_of: dict[int, list[int]] = defaultdict(list)  # in their order in the batch's calldata
    for batch_id, fill_id in await session.execute(
        select(SettlementBatchFill.batch_id, SettlementBatchFill.fill_id)
        .where(SettlementBatchFill.batch_id.in_(batch_ids))
        .order_by(SettlementBatchFill.batch_id, SettlementBatchFill.position)
    ):
        fills_of[batch_id].append(fill_id)

    def read_receipts() -> tuple[set[int], set[int]]:
        ran: set[int] = set()
        skipped: set[int] = set()
        for batch_id, tx_hash in attempts:
            found = receipt_of(vault.w3, str(tx_hash))  # not None: selected so
            if found is not None and found["status"] == 1 and int(found["blockNumber"]) <= block:
                ran.add(batch_id)
                skipped.update(skipped_by_fill(vault, found, fills_of[batch_id]))
        return ran, skipped

    return await calls.run(read_receipts)


async def _ledger_at(
    session: AsyncSession,
    block: int,
    base_token: str,
    quote_token: str,
    ran: set[int],
    skipped: set[int],
) -> dict[tuple[str, str], int]:
    """Ledger totals as of `block`: without fills and fee sweeps the chain had not settled by then.

    The fills of an open batch whose transaction ran by then (``ran``: it waits for its
    confirmations) are settled there, and the Vault sent their fees to the Fund, which the
    batch's sweep will say when it closes; but not those it skipped (``skipped``), which moved
    nothing and which the batch's close will void."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for row in (await session.scalars(select(LedgerBalance))).all():
        totals[(row.account, Web3.to_checksum_address(row.token))] += row.total
    later_batches = list(
        await session.scalars(
            select(SettlementBatch.id).where(
                SettlementBatch.state == BatchState.SETTLED, SettlementBatch.block_number > block
            )
        )
    )
    unsettled = (
        await session.scalars(
            select(TradingFill).where(
                TradingFill.settlement_state.in_([SettlementState.PENDING, SettlementState.SUBMITTED])
                | (
                    (TradingFill.settlement_state == SettlementState.SETTLED)
                    & TradingFill.batch_id.in_(later_batches)
                )
            )
        )
    ).all()
    for fill in unsettled:
        if (
            fill.settlement_state == SettlementState.SUBMITTED
            and fill.batch_id in ran
            and fill.id not in skipped
        ):
            totals[(FEES_ACCOUNT, quote_token)] -= fill.buyer_fee + fill.seller_fee
            totals[(VAULT_EXTERNAL, quote_token)] += fill.buyer_fee + fill.seller_fee
            continue
        for posting in _fill_postings(fill, base_token, quote_token):
            totals[(posting.account, posting.token)] -= posting.total_delta
        if fill.settlement_state == SettlementState.SETTLED:
            # Its batch's sweep took these fees out of vault:fees after the audit block: put them back.
            totals[(FEES_ACCOUNT, quote_token)] += fill.buyer_fee + fill.seller_fee
    return dict(totals)


def _fill_postings(fill: TradingFill, base_token: str, quote_token: str) -> list[Posting]:
    buyer, seller = (
        (fill.taker_account, fill.maker_account)
        if fill.taker_side == "buy"
        else (fill.maker_account, fill.taker_account)
    )
    return fill_totals(
        FillAmounts(
            buyer=buyer,
            seller=seller,
            base_token=base_token,
            quote_token=quote_token,
            base_amount=fill.amount_base,
            quote_amount=fill.quote_amount,
            buyer_fee=fill.buyer_fee,
            seller_fee=fill.seller_fee,
        )
    )


async def _event_accounts(session: AsyncSession, cursor_id: int) -> set[str]:
    rows: Iterable[tuple[str, dict[str, Any]]] = (
        await session.execute(
            select(ChainEvent.name, ChainEvent.args).where(
                ChainEvent.cursor_id == cursor_id,
                ChainEvent.name.in_(list(_ACCOUNT_ARGS)),
                ChainEvent.state.in_(
                    [EventState.SEEN, EventState.CREDITED, EventState.REFUSED, EventState.STRANDED]
                ),
            )
        )
    ).all()
    return {Web3.to_checksum_address(args[key]) for name, args in rows for key in _ACCOUNT_ARGS[name]}
