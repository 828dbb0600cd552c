"""The pool indexer: PoolRegistry and Fund events into the database.

Two followers, each with a persisted cursor (``pool_indexer_cursors``):

* ``registry`` reads ``MemberAdmitted``, ``MemberTierChanged`` and
  ``MemberStatusChanged`` and keeps ``members`` equal to the on-chain register.
  Nothing else writes ``members``: the membership service, which changes the
  register, sends the transaction, then calls :meth:`PoolIndexer.catch_up` in the
  request's transaction, so the row it returns is the one the chain confirmed.
* ``fund`` reads the Fund's ``FundDeposit`` (licence fees, deposits) and ``vault``
  the Vault's ``FeesCollected`` (trading fees, sent to the Fund by plain transfer)
  into ``pool_fund_deposits``: what the royalty runs distribute. Each receipt is
  what reached the Fund: ``FundDeposit``'s ``amount`` and ``FeesCollected``'s
  ``received`` (its ``amount`` is what left the Vault; a quote token that takes a
  fee on transfer delivers less).
* ``fund`` also reads the Fund's ``FundClaimed`` into ``pool_fund_claims``: a
  recipient took what the Fund held for it (royalty payouts the token refused to
  deliver, ``FundPayoutHeld``). Its held royalty payouts before the claim become
  ``claimed`` (:func:`repository.mark_held_payouts_claimed`); the royalty service
  applies the claims already indexed when it records a payout held, so the order in
  which the two are seen does not matter. It records payouts holding the ``fund``
  cursor's lock (:meth:`PoolIndexer.lock_fund_cursor`): the two writes are serialised,
  so each sees the other's committed rows, never neither.

Rules
-----
* Blocks are applied in order, ``(block, log index)``, up to ``head -
  confirmations``; the cursor moves in the same transaction as the rows, so a
  crash replays nothing twice and skips nothing. A member row also remembers the
  position of the last event applied to it and ignores anything at or before it.
* The cursor row is locked for the transaction (``SELECT … FOR UPDATE``), so the
  background loop and a request catching up never apply one block twice. It is
  inserted first if missing (``ON CONFLICT DO NOTHING``), so two first passes wait
  for each other on it rather than both creating it.
* Two ways to catch up. :meth:`PoolIndexer.catch_up_between_transactions` reads
  each range's events, and the block times and records applying them needs, with
  no transaction open (on SQLite a transaction, a read's too, holds the write lock
  from its start; on PostgreSQL it holds a pooled connection), then applies the
  range in a short transaction only if the cursor is still where it was read. The
  background pass (``exchange.pool.worker_service.index_once``, at start-up and
  every ``EXCHANGE_POOL_INDEXER_INTERVAL_S``) and the royalty runs use it, and the
  pass's :meth:`PoolIndexer.behind` check reads the chain before its short read of
  the cursors. :meth:`PoolIndexer.catch_up` applies in the caller's transaction and
  reads the chain inside it: only the membership decisions and member changes
  (``exchange.pool.membership_service``) use it, on purpose, in the request's
  transaction, whose cursor lock, held across their chain calls, serialises them.
* A cursor names its chain, contract and the hash of the deployment's first
  block. If any differ (the embedded EVM redeploys the same addresses at every
  start) the projections of the old chain are dropped and indexing restarts at
  the deployment block. Reorganisations deeper than ``confirmations`` are not handled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from eth_utils.crypto import keccak
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3
from web3.types import BlockIdentifier, LogReceipt, TxReceipt

from exchange.chain.binding import BoundContract
from exchange.chain.pool import Member as ChainMember
from exchange.chain.pool import MemberStatus, Tier
from exchange.db.base import utc_now
from exchange.kit.logging import get_logger
from exchange.pool import repository
from exchange.pool.models import FundClaim, FundDeposit, IndexerCursor, Member, MemberState, MemberTier
from exchange.pool.service import ChainGateway

log = get_logger(__name__)
T = TypeVar("T")

REGISTRY_CURSOR = "registry"
FUND_CURSOR = "fund"
VAULT_CURSOR = "vault"
REGISTRY_EVENTS = ("MemberAdmitted", "MemberTierChanged", "MemberStatusChanged")
FUND_EVENTS = ("FundDeposit", "FundClaimed")
VAULT_EVENTS = ("FeesCollected",)
TRADING_FEE_SOURCE = "0x" + keccak(b"trading-fee").hex()

TIER_NAMES: Mapping[Tier, MemberTier] = {
    Tier.NON_PROFIT: MemberTier.NON_PROFIT,
    Tier.SMALL: MemberTier.SMALL,
    Tier.MEDIUM: MemberTier.MEDIUM,
    Tier.LARGE: MemberTier.LARGE,
}
CHAIN_TIERS: Mapping[MemberTier, Tier] = {name: tier for tier, name in TIER_NAMES.items()}
STATE_NAMES: Mapping[MemberStatus, MemberState] = {
    MemberStatus.ACTIVE: MemberState.ACTIVE,
    MemberStatus.SUSPENDED: MemberState.SUSPENDED,
    MemberStatus.EXPELLED: MemberState.EXPELLED,
}


@dataclass(frozen=True)
class ChainEvent:
    """One decoded log."""

    name: str
    args: dict[str, Any]
    block_number: int
    log_index: int
    tx_hash: str


def hex32(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def topic_of_address(address: str) -> str:
    """An indexed address argument as a log topic."""
    return "0x" + "0" * 24 + Web3.to_checksum_address(address)[2:].lower()


def fetch_events(
    contract: BoundContract,
    names: tuple[str, ...],
    from_block: int,
    to_block: BlockIdentifier,
    argument_topics: tuple[str | None, ...] = (),
) -> list[ChainEvent]:
    """Blocking: the named events of ``contract`` in ``[from_block, to_block]``, in chain order.

    ``argument_topics`` narrows the indexed arguments (``None`` matches anything).
    """
    events = _events_by_topic(contract, names)
    logs = contract.w3.eth.get_logs(
        {
            "address": contract.address,
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [list(events), *argument_topics],
        }
    )
    return _decoded(events, logs)


def receipt_events(contract: BoundContract, receipt: TxReceipt, names: tuple[str, ...]) -> list[ChainEvent]:
    """The named events ``contract`` emitted in the transaction of ``receipt``, in log order."""
    events = _events_by_topic(contract, names)
    ours = [
        entry
        for entry in receipt["logs"]
        if entry["address"] == contract.address and entry["topics"] and hex32(entry["topics"][0]) in events
    ]
    return _decoded(events, ours)


def _events_by_topic(contract: BoundContract, names: tuple[str, ...]) -> dict[str, Any]:
    return {str(contract.contract.events[name].topic): contract.contract.events[name] for name in names}


def _decoded(events: Mapping[str, Any], logs: Iterable[LogReceipt]) -> list[ChainEvent]:
    """``logs``, each one of ``events`` (by its first topic), decoded in chain order."""
    decoded = []
    for entry in logs:
        processed = events[hex32(entry["topics"][0])]().process_log(entry)
        decoded.append(
            ChainEvent(
                name=processed["event"],
                args=dict(processed["args"]),
                block_number=int(processed["blockNumber"]),
                log_index=int(processed["logIndex"]),
                tx_hash=hex32(processed["transactionHash"]),
            )
        )
    decoded.sort(key=lambda event: (event.block_number, event.log_index))
    return decoded


def search_events(
    contract: BoundContract,
    names: tuple[str, ...],
    from_block: int,
    argument_topics: tuple[str | None, ...],
    found: Callable[[list[ChainEvent]], T | None],
    *,
    max_blocks: int,
) -> T | None:
    """Blocking: the first answer ``found`` gives for a window of events, from ``from_block`` to the head.

    The events are asked for ``max_blocks`` blocks at a time, as the indexer asks for them, since
    nodes refuse a log query over a longer range; a window never splits a block, so the events of
    one transaction are always given together. None when no window had an answer.
    """
    head = int(contract.w3.eth.block_number)
    start = from_block
    while start <= head:
        end = min(head, start + max_blocks - 1)
        answer = found(fetch_events(contract, names, start, end, argument_topics))
        if answer is not None:
            return answer
        start = end + 1
    return None


Applier = Callable[[AsyncSession, ChainEvent], Awaitable[None]]


@dataclass
class _ReadAhead:
    """What applying a range of events asks the chain, read before its transaction begins."""

    block_times: dict[int, datetime] = field(default_factory=dict)
    members: dict[tuple[str, int], ChainMember] = field(default_factory=dict)


# The read-ahead of the range being applied in this task, if it was read ahead.
_read_ahead: ContextVar[_ReadAhead | None] = ContextVar("pool_indexer_read_ahead", default=None)


class PoolIndexer:
    """Follows the registry, the fund and the vault: :meth:`catch_up_between_transactions` with
    no transaction open, or :meth:`catch_up` inside the caller's (the membership service only)."""

    def __init__(self, chain: ChainGateway, *, confirmations: int, max_blocks: int) -> None:
        self.chain = chain
        self.confirmations = confirmations
        self.max_blocks = max_blocks
        self._block_times: dict[int, datetime] = {}
        self._anchor: str | None = None

    async def catch_up(self, session: AsyncSession) -> int:
        """Apply every confirmed event not applied yet (the caller's transaction commits).

        The chain is read inside that transaction: for the membership service, whose requests
        are serialised by the cursor locks this takes (on SQLite, by the transaction's write
        lock). Anything else catches up with :meth:`catch_up_between_transactions`. Returns the
        last block indexed: the head less the confirmations.
        """
        safe_head = await self.head_block() - self.confirmations
        for name, contract, events, apply in self._followers():
            await self._follow(session, name, contract, events, safe_head, apply)
        return max(safe_head, 0)

    async def catch_up_between_transactions(self, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
        """:meth:`catch_up` with no transaction open while the chain is read: for the background
        pass and the royalty runs, which must not hold the database while the node answers.

        Each range's events, with the block times and member records applying them needs, are
        read first; the range is then applied in a short transaction of its own, only if its
        cursor is still where it was read (compare-and-set on the locked row). A cursor another
        pass moved meanwhile is read again, and the range asked for from where it now stands.
        Returns the last block indexed, as :meth:`catch_up` does; the cursors stand there or
        further on.
        """
        safe_head = await self.head_block() - self.confirmations
        for name, contract, events, apply in self._followers():
            await self._follow_between_transactions(sessionmaker, name, contract, events, safe_head, apply)
        return max(safe_head, 0)

    def _followers(self) -> tuple[tuple[str, BoundContract, tuple[str, ...], Applier], ...]:
        pool = self.chain.pool
        return (
            (REGISTRY_CURSOR, pool.registry, REGISTRY_EVENTS, self._apply_registry),
            (FUND_CURSOR, pool.fund, FUND_EVENTS, self._apply_fund),
            (VAULT_CURSOR, pool.vault, VAULT_EVENTS, self._apply_vault),
        )

    async def behind(self, sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
        """Whether a catch-up has anything to do: a short read, so idle polls write nothing.

        The chain (the head, and the deployment's first block once per process) is read first,
        then the cursors, in a short session of its own that no chain read waits inside: on
        SQLite a read's transaction holds the write lock too, on PostgreSQL a pooled connection.
        """
        safe_head = await self.head_block() - self.confirmations
        fresh = {
            name: _identity(await self._fresh_cursor(contract))
            for name, contract, _events, _apply in self._followers()
        }
        async with sessionmaker() as session:
            cursors = {row.name: row for row in await repository.cursors(session)}
        for name, identity in fresh.items():
            cursor = cursors.get(name)
            if cursor is None or cursor.block < safe_head or _identity(cursor) != identity:
                return True
        return False

    async def head_block(self) -> int:
        w3 = self.chain.runtime.w3
        return await self.chain.run(lambda: int(w3.eth.block_number))

    async def block_time(self, block_number: int) -> datetime:
        read_ahead = _read_ahead.get()
        if read_ahead is not None and block_number in read_ahead.block_times:
            return read_ahead.block_times[block_number]
        cached = self._block_times.get(block_number)
        if cached is not None:
            return cached
        w3 = self.chain.runtime.w3
        timestamp = await self.chain.run(lambda: int(w3.eth.get_block(block_number)["timestamp"]))
        moment = datetime.fromtimestamp(timestamp, UTC)
        if len(self._block_times) > 10_000:
            self._block_times.clear()
        self._block_times[block_number] = moment
        return moment

    async def lock_fund_cursor(self, session: AsyncSession) -> None:
        """Lock the ``fund`` cursor row until ``session``'s transaction ends, as a pass of the
        ``fund`` follower does: a writer that must see every ``FundClaimed`` indexed, and be seen by
        the follower's next pass, takes it before it writes (see the royalty service)."""
        await self._lock_cursor(session, FUND_CURSOR, await self._fresh_cursor(self.chain.pool.fund))

    async def lock_deposit_cursors(self, session: AsyncSession) -> int:
        """Lock the ``fund`` and ``vault`` cursors until ``session``'s transaction ends, as their
        followers' passes do, and return the lowest block they stand at: every deposit up to it
        is indexed, and no other until the transaction ends (see the royalty runs)."""
        pool = self.chain.pool
        blocks = [
            (await self._lock_cursor(session, name, await self._fresh_cursor(contract))).block
            for name, contract in ((FUND_CURSOR, pool.fund), (VAULT_CURSOR, pool.vault))
        ]
        return min(blocks)

    async def _fresh_cursor(self, contract: BoundContract) -> dict[str, Any]:
        """The values of a cursor of ``contract`` that has indexed nothing yet."""
        deployment = self.chain.runtime.deployment
        return {
            "chain_id": deployment.chain_id,
            "contract": contract.address,
            "anchor_block_hash": await self._anchor_hash(),
            "block": max(deployment.deploy_block - 1, 0),
        }

    @staticmethod
    async def _lock_cursor(session: AsyncSession, name: str, fresh: dict[str, Any]) -> IndexerCursor:
        # The row exists before it is locked, so two first passes (or two resets) wait for each
        # other on it instead of both inserting it; a reset rewrites it in place for the same reason.
        await repository.ensure_cursor(session, name, fresh)
        return await repository.locked_cursor(session, name)

    async def _anchor_hash(self) -> str:
        if self._anchor is None:
            w3 = self.chain.runtime.w3
            block = self.chain.runtime.deployment.deploy_block
            self._anchor = await self.chain.run(lambda: hex32(w3.eth.get_block(block)["hash"]))
        return self._anchor

    async def _follow(
        self,
        session: AsyncSession,
        name: str,
        contract: BoundContract,
        events: tuple[str, ...],
        safe_head: int,
        apply: Applier,
    ) -> None:
        fresh = await self._fresh_cursor(contract)
        cursor = await self._current_cursor(session, name, contract, fresh)
        while cursor.block < safe_head:
            from_block = cursor.block + 1
            to_block = min(safe_head, cursor.block + self.max_blocks)
            found = await self.chain.run(partial(fetch_events, contract, events, from_block, to_block))
            await self._apply_range(session, cursor, name, found, to_block, apply)

    async def _follow_between_transactions(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        name: str,
        contract: BoundContract,
        events: tuple[str, ...],
        safe_head: int,
        apply: Applier,
    ) -> None:
        fresh = await self._fresh_cursor(contract)  # the anchor's hash: read once per process
        while True:
            async with sessionmaker() as session:
                read = await repository.cursor(session, name)
                block = read.block if read is not None and _identity(read) == _identity(fresh) else None
            if block is None:
                async with sessionmaker() as session, session.begin():  # create or reset: no chain read
                    await self._current_cursor(session, name, contract, fresh)
                continue
            if block >= safe_head:
                return
            to_block = min(safe_head, block + self.max_blocks)
            found = await self.chain.run(partial(fetch_events, contract, events, block + 1, to_block))
            read_ahead = await self._read_ahead(sessionmaker, found)
            async with sessionmaker() as session, session.begin():
                cursor = await self._lock_cursor(session, name, fresh)
                if cursor.block != block or _identity(cursor) != _identity(fresh):
                    continue  # another pass applied the range meanwhile: read from where it stopped
                token = _read_ahead.set(read_ahead)
                try:
                    await self._apply_range(session, cursor, name, found, to_block, apply)
                finally:
                    _read_ahead.reset(token)

    async def _read_ahead(
        self, sessionmaker: async_sessionmaker[AsyncSession], found: list[ChainEvent]
    ) -> _ReadAhead:
        """The block times of ``found``, and the registry's record of each account a status or
        tier change names that has no member row and no admission earlier in ``found`` (only
        after a reset dropped its admission: see :meth:`_new_member_row`)."""
        read_ahead = _ReadAhead()
        for block_number in sorted({event.block_number for event in found}):
            read_ahead.block_times[block_number] = await self.block_time(block_number)
        admitted: set[str] = set()
        unseen: list[tuple[str, int]] = []
        for event in found:
            if event.name not in REGISTRY_EVENTS:
                continue
            account = Web3.to_checksum_address(event.args["account"])
            if event.name == "MemberAdmitted":
                admitted.add(account)
            elif account not in admitted:
                unseen.append((account, event.block_number))
        if unseen:
            async with sessionmaker() as session:
                known = {account for account, _ in unseen if await repository.member(session, account)}
            pool = self.chain.pool
            for unseen_account, block_number in unseen:
                if unseen_account not in known:
                    read_ahead.members[(unseen_account, block_number)] = await self.chain.run(
                        partial(pool.member, unseen_account, block=block_number)
                    )
        return read_ahead

    async def _current_cursor(
        self, session: AsyncSession, name: str, contract: BoundContract, fresh: dict[str, Any]
    ) -> IndexerCursor:
        """The cursor ``name``, locked: created if missing, reset if it names another chain or
        contract (the projections of the old one are dropped)."""
        cursor = await self._lock_cursor(session, name, fresh)
        if _identity(cursor) != _identity(fresh):
            log.warning(
                "pool.indexer_reset", cursor=name, old_contract=cursor.contract, new_contract=contract.address
            )
            await self._forget(session, name)
            for column, value in fresh.items():
                setattr(cursor, column, value)
            cursor.updated_at = utc_now()
            await session.flush()
        return cursor

    @staticmethod
    async def _apply_range(
        session: AsyncSession,
        cursor: IndexerCursor,
        name: str,
        found: list[ChainEvent],
        to_block: int,
        apply: Applier,
    ) -> None:
        from_block = cursor.block + 1
        for event in found:
            await apply(session, event)
        cursor.block = to_block
        cursor.updated_at = utc_now()
        await session.flush()
        if found:
            log.info("pool.indexed", cursor=name, from_block=from_block, to_block=to_block, events=len(found))

    async def _forget(self, session: AsyncSession, name: str) -> None:
        if name == REGISTRY_CURSOR:
            await repository.delete_members(session)
            return
        event = "FundDeposit" if name == FUND_CURSOR else "FeesCollected"
        # Receipts already distributed stay with their royalty run, claims with the payouts they took.
        await session.execute(
            delete(FundDeposit).where(FundDeposit.run_id.is_(None), FundDeposit.event == event)
        )
        if name == FUND_CURSOR:
            await repository.forget_unused_claims(session)

    # --- registry --------------------------------------------------------------------------------

    async def _apply_registry(self, session: AsyncSession, event: ChainEvent) -> None:
        account = Web3.to_checksum_address(event.args["account"])
        row = await repository.member(session, account)
        position = (event.block_number, event.log_index)
        if row is not None and position <= (row.last_block, row.last_log_index):
            return
        if row is None:
            row = await self._new_member_row(session, account, event)
        if event.name == "MemberAdmitted":
            row.tier = TIER_NAMES[Tier(event.args["tier"])].value
            row.status = MemberState.ACTIVE.value
            row.admitted_at = await self.block_time(event.block_number)
        elif event.name == "MemberTierChanged":
            row.tier = TIER_NAMES[Tier(event.args["newTier"])].value
        else:
            row.status = STATE_NAMES[MemberStatus(event.args["newStatus"])].value
        row.last_block, row.last_log_index = position
        row.last_tx_hash = event.tx_hash
        row.updated_at = utc_now()
        await session.flush()
        log.info(
            "pool.member_indexed", account=account, chain_event=event.name, tier=row.tier, status=row.status
        )

    async def _new_member_row(self, session: AsyncSession, account: str, event: ChainEvent) -> Member:
        application = await repository.approved_application(session, account)
        if event.name == "MemberAdmitted":
            tier, state = MemberTier.SMALL, MemberState.ACTIVE  # overwritten from the event
            admitted_at = await self.block_time(event.block_number)
        else:
            # Only after a reset that dropped the admission: ask the registry as of this block.
            read_ahead = _read_ahead.get()
            record = read_ahead.members.get((account, event.block_number)) if read_ahead is not None else None
            if record is None:
                pool = self.chain.pool
                record = await self.chain.run(lambda: pool.member(account, block=event.block_number))
            tier, state = TIER_NAMES[record.tier], STATE_NAMES[record.status]
            admitted_at = datetime.fromtimestamp(record.admitted_at, UTC)
        return await repository.add_member(
            session,
            Member(
                address=account,
                tier=tier.value,
                status=state.value,
                admitted_at=admitted_at,
                application_id=application.id if application is not None else None,
                last_block=-1,
                last_log_index=-1,
                last_tx_hash=event.tx_hash,
            ),
        )

    # --- fund ------------------------------------------------------------------------------------

    async def _apply_fund(self, session: AsyncSession, event: ChainEvent) -> None:
        if event.name == "FundClaimed":
            await self._claim(session, event)
            return
        await self._receipt(
            session,
            event,
            sender=event.args["from"],
            source=hex32(event.args["source"]),
            amount_wei=int(event.args["amount"]),
        )

    async def _apply_vault(self, session: AsyncSession, event: ChainEvent) -> None:
        # The Vault sends a batch's fees to the Fund with a plain transfer, in the same transaction.
        await self._receipt(
            session,
            event,
            sender=self.chain.pool.vault.address,
            source=TRADING_FEE_SOURCE,
            amount_wei=int(event.args["received"]),
        )

    async def _receipt(
        self, session: AsyncSession, event: ChainEvent, *, sender: str, source: str, amount_wei: int
    ) -> None:
        if await repository.event_recorded(session, FundDeposit, event.tx_hash, event.log_index):
            return
        await repository.add_deposit(
            session,
            FundDeposit(
                event=event.name,
                token=Web3.to_checksum_address(event.args["token"]),
                sender=Web3.to_checksum_address(sender),
                amount_wei=amount_wei,
                source=source,
                block_number=event.block_number,
                block_time=await self.block_time(event.block_number),
                tx_hash=event.tx_hash,
                log_index=event.log_index,
            ),
        )
        log.info(
            "pool.fund_receipt_indexed",
            chain_event=event.name,
            token=event.args["token"],
            amount_wei=amount_wei,
        )

    async def _claim(self, session: AsyncSession, event: ChainEvent) -> None:
        if await repository.event_recorded(session, FundClaim, event.tx_hash, event.log_index):
            return
        token = Web3.to_checksum_address(event.args["token"])
        recipient = Web3.to_checksum_address(event.args["recipient"])
        await repository.add_claim(
            session,
            FundClaim(
                token=token,
                recipient=recipient,
                paid_to=Web3.to_checksum_address(event.args["to"]),
                amount_wei=int(event.args["amount"]),
                block_number=event.block_number,
                block_time=await self.block_time(event.block_number),
                tx_hash=event.tx_hash,
                log_index=event.log_index,
            ),
        )
        claimed = await repository.mark_held_payouts_claimed(session, token, recipient)
        log.info(
            "pool.fund_claim_indexed",
            token=token,
            recipient=recipient,
            amount_wei=int(event.args["amount"]),
            royalty_payouts=claimed,
        )


def _identity(cursor: IndexerCursor | Mapping[str, Any]) -> tuple[Any, ...]:
    """The chain, contract and anchor block a cursor (or a fresh cursor's values) names."""
    if isinstance(cursor, IndexerCursor):
        return (cursor.chain_id, cursor.contract, cursor.anchor_block_hash)
    return (cursor["chain_id"], cursor["contract"], cursor["anchor_block_hash"])
