"""Royalty runs: distribute what the Fund received in a period, pay it on chain, tell contributors.

A run is computed once per (token, period) and paid in batches:

    create_run ──▶ computed ──pay──▶ paying ──(every batch mined)──▶ paid

and each of its payouts:

    pending ──(its batch mined)──▶ paid
                              └──▶ held ──(the contributor claims, indexed)──▶ claimed

Rules
-----
* What a run distributes: every ``FundDeposit`` of the token dated (block time,
  UTC) on or before the period's last day that no earlier run distributed, plus
  the previous run's carry — so no deposit is distributed twice or never. A
  deposit counts for what reached the Fund (``exchange.pool.indexer``), so a token
  that takes a fee on transfer is never promised beyond the Fund's balance. Stakes
  are the contributed patents ever admitted; the pure ``royalties.distribute``
  decides who counts and how much, in integers, with the remainder carried:
  ``paid + carry_out == received + carry_in``.
* A run pays in a token the Fund collects: BPC (licence fees), the Vault's quote
  token (trading fees), or another token of which it has an indexed receipt (a
  ``Fund.deposit`` of it). Any other token is refused (422, naming ``token``) once
  the indexer has caught up, before anything is stored: no contract, or one that
  never paid the Fund, has nothing to distribute.
* Periods of one token come in order and do not overlap. A period is distributed
  only once the chain is past it: the last indexed block (head less confirmations)
  is dated after the period's last day, so every deposit of the period is indexed
  and no later one can be dated in it. Creating the same run again returns it; the
  same period id with other dates is a 409.
* Concurrent creations are serialised: the indexer catches up first, with no
  transaction open while the chain is read
  (:meth:`PoolIndexer.catch_up_between_transactions`), and the block it reached is
  dated; then, in one short transaction, the run of the period, the previous run
  (whose ``carry_out`` becomes the new ``carry_in``) and the undistributed deposits
  are read only after the ``fund`` and ``vault`` cursors are locked (``FOR
  UPDATE``, to the end of the transaction; on SQLite every transaction holds the
  write lock) and found at that block or past it (a cursor reset meanwhile is a
  409 to be asked again, ``DepositsChangedMeanwhile``). So two periods created at
  once chain their carries as if one after the other, and the same period posted
  twice at once (a client's retry) answers the one run, 201 then 200. A unique
  violation on ``(token, period_id)`` is answered the same way, never as a 500.
* The run stores the stakes it used. Statements (JSON and CSV, all contributors
  or one) are recomputed from them and checked against the stored totals, so
  they never change after the run, whatever happens to the patents later.
* Payouts go out as ``Fund.payout(token, recipients, amounts, tag)`` batches of
  ``EXCHANGE_POOL_PAYOUT_BATCH_SIZE``. Every batch has a tag of its own,
  ``royalties.batch_payout_tag(run tag, token, batch index)`` (the run tag is the
  period's), derived again whenever it is needed, and the Fund pays a tag once:
  sending a batch again reverts ``FundTagAlreadyPaid`` instead of paying anybody
  twice.
* Each batch is marked ``sending`` (committed, with the block it is searched from,
  set by its first send only) before its transaction and ``paid`` after. No
  transaction is open while the chain is asked (a search of its logs, the head, a
  send and its receipt): a batch is read in one short transaction and moved on in
  another by compare-and-set on its status (a resend's claim also on the time of
  the send it replaces), so of two requests claiming one batch one wins, and a
  slow node holds no lock (on SQLite, the whole database's write lock). A batch
  found ``sending`` is first looked for among the Fund's ``FundPayout`` events
  with its tag; only if none is found, and ``resend_after_s`` has passed since it
  was sent (at once on the embedded EVM), is it sent again. A transaction that was
  only stuck (in a mempool, its receipt wait timed out) and is mined after all
  makes the resend revert, and so does a concurrent pay request that sent the
  same batch first: on that revert (or any revert while the Fund reports the tag
  paid) the payout with the tag is found and the batch marked ``paid``, so
  repeating :func:`pay_run` after any interruption pays nobody twice. Another
  revert sends the batch back to ``pending`` (a revert changes nothing) with the
  revert recorded in its ``last_error``; so does a tag the Fund paid to other
  recipients or amounts, which nothing here can pay.
* A recipient the token refuses (one it blacklists, a pause for that account, a
  hook that reverts) refuses no batch: the Fund holds that payout for it
  (``FundPayoutHeld`` in place of ``FundPayout``) and pays the others. A mined
  batch is ``paid`` and each of its payouts ``paid`` or ``held``, with the
  transaction and its event's position, read from the receipt (or, for a batch
  found on chain after a lost receipt, from the events of the transaction that
  paid it). The contributor claims what is held with ``Fund.claim(token, to)``,
  to itself or another address; the pool indexer records the ``FundClaimed`` and
  marks its held payouts ``claimed`` (the outcomes of a batch are recorded under
  the lock the indexer holds on the Fund's cursor, so a claim indexed at the same
  time is never missed). A token that refuses the Fund itself (a global pause,
  the Fund blocked) delivers no line of a batch: a batch of two or more then
  reverts ``FundNothingDelivered`` and stays ``pending``, as any revert does; a
  batch of one cannot tell this from a refused recipient, and is held. A held
  payout stays in the run's ``paid_wei``: the Fund keeps it apart (``totalOwed``)
  and no later payout can spend it, and runs distribute indexed receipts, never
  the Fund's balance, so no run distributes it again.
* A refused batch holds up no other: :func:`pay_run` tries every unpaid batch of
  the run (a Fund short of the token, a tag paid otherwise refuse one batch, not
  the run), and the run stays ``paying`` until every batch is mined; the next pay
  request tries the refused ones again, and a batch's ``last_error`` is cleared
  once it is paid. A node that cannot be reached (``ChainUnavailable``) ends the
  pass at once: the next request goes on from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from functools import partial

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from web3 import Web3

from exchange.db.base import utc_now
from exchange.kit.errors import ChainRejected, Conflict, NotFound
from exchange.kit.logging import get_logger
from exchange.pool import repository
from exchange.pool.indexer import ChainEvent, hex32, receipt_events, search_events, topic_of_address
from exchange.pool.models import (
    BatchStatus,
    PayoutStatus,
    RoyaltyPayout,
    RoyaltyPayoutBatch,
    RoyaltyRun,
    RoyaltyStakeRecord,
    RunStatus,
)
from exchange.pool.patent_service import to_patent
from exchange.pool.royalties import (
    Distribution,
    RemainderRule,
    RoyaltyPeriod,
    RoyaltyStake,
    batch_payout_tag,
    distribute,
    payout_tag,
    stake_of,
)
from exchange.pool.service import PoolContext, record_audit
from exchange.trading.problems import FieldRefused

log = get_logger(__name__)

TAG_ALREADY_PAID = "FundTagAlreadyPaid"
PAYOUT_EVENTS = ("FundPayout", "FundPayoutHeld")


def run_summary(run: RoyaltyRun) -> dict[str, object]:
    return {
        "id": run.id,
        "token": run.token,
        "period_id": run.period_id,
        "starts_on": run.starts_on.isoformat(),
        "ends_on": run.ends_on.isoformat(),
        "received_wei": str(run.received_wei),
        "carry_in_wei": str(run.carry_in_wei),
        "paid_wei": str(run.paid_wei),
        "carry_out_wei": str(run.carry_out_wei),
        "total_weight": run.total_weight,
        "status": run.status,
    }


class DepositsChangedMeanwhile(Conflict):
    """The indexer's deposits went back (a cursor reset) while a run was being computed: asking
    again computes it from what is indexed then."""

    type_slug = "deposits-changed-meanwhile"
    title = "The indexed deposits changed while the run was computed"
    transient = True
    retry_after_s = 1


async def create_run(
    context: PoolContext,
    *,
    period_id: str,
    starts_on: date,
    ends_on: date,
    token: str,
    actor: str,
    at: datetime,
) -> tuple[RoyaltyRun, bool]:
    """Compute the run of ``period_id`` for ``token`` (or return the one already computed).

    The chain is read (the catch-up, the date of the block it reached) with no transaction
    open; the run is computed and stored in one short transaction.
    """
    period = RoyaltyPeriod(period_id, starts_on, ends_on)
    token = Web3.to_checksum_address(token)
    async with context.sessionmaker() as session:
        existing = await repository.royalty_run_for_period(session, token, period_id)
    if existing is not None:  # a committed run never changes: no lock needed to answer a retry
        return _same_period(existing, starts_on, ends_on), False
    indexed_to, chain_time = await index_for_run(context)
    await require_distributable(context, token)
    async with context.sessionmaker() as session, session.begin():
        return await store_run(context, session, period, token, indexed_to, chain_time, actor=actor, at=at)


async def require_distributable(context: PoolContext, token: str) -> None:
    """Refuse (422 on ``token``) a token the Fund does not collect: neither BPC, nor the Vault's
    quote token, nor one of which a receipt is indexed. The chain is read with no transaction open."""
    pool = context.chain.pool
    if token == pool.bpc.address:
        return
    _, quote_token = await context.chain.run(pool.vault_tokens)
    if token == Web3.to_checksum_address(quote_token):
        return
    async with context.sessionmaker() as session:
        if await repository.fund_received(session, token):
            return
    raise FieldRefused(
        f"the Fund collects no {token}: a run pays in BPC, the Vault's quote token {quote_token} "
        "or another token the Fund has received",
        location=("body", "token"),
    )


async def index_for_run(context: PoolContext) -> tuple[int, datetime]:
    """Catch the indexer up with no transaction open; the block it reached, and that block's date."""
    indexed_to = await context.indexer.catch_up_between_transactions(context.sessionmaker)
    return indexed_to, await context.indexer.block_time(indexed_to)


async def store_run(
    context: PoolContext,
    session: AsyncSession,
    period: RoyaltyPeriod,
    token: str,
    indexed_to: int,
    chain_time: datetime,
    *,
    actor: str,
    at: datetime,
) -> tuple[RoyaltyRun, bool]:
    """The run of ``period``, computed from the deposits indexed up to ``indexed_to`` (dated
    ``chain_time``) or further, and stored in ``session``'s transaction; or the one a concurrent
    request stored first."""
    period_id, starts_on, ends_on = period.period_id, period.starts_on, period.ends_on
    # The deposit cursors, locked until this transaction ends: from here on no other run is
    # created and no deposit is indexed, so what is read below stays true.
    if await context.indexer.lock_deposit_cursors(session) < indexed_to:
        raise DepositsChangedMeanwhile(
            f"the indexer started over (a redeployed chain) while period {period_id} was computed: ask again"
        )
    existing = await repository.royalty_run_for_period(session, token, period_id)
    if existing is not None:  # created meanwhile by a concurrent request
        return _same_period(existing, starts_on, ends_on), False
    previous = await repository.latest_royalty_run(session, token)
    if previous is not None and starts_on <= previous.ends_on:
        raise Conflict(
            f"period {period_id} starts on {starts_on.isoformat()}, not after the last distributed period "
            f"{previous.period_id} (ending {previous.ends_on.isoformat()})",
            extra={"run_id": previous.id},
        )
    until = datetime.combine(ends_on + timedelta(days=1), time(0), UTC)
    if chain_time < until:
        # Deposits are dated by their block: until the chain is past the period, more may come.
        raise Conflict(
            f"period {period_id} is not over on chain: the last indexed block is of {chain_time.isoformat()}",
            extra={"indexed_block": indexed_to},
        )
    deposits = await repository.undistributed_deposits(session, token, until)
    received_wei = sum(deposit.amount_wei for deposit in deposits)
    carry_in_wei = previous.carry_out_wei if previous is not None else 0
    stakes = [stake_of(to_patent(row)) for row in await repository.admitted_contributed_patents(session)]
    distribution = distribute(period, received_wei=received_wei, carry_in_wei=carry_in_wei, stakes=stakes)

    paid_now = not distribution.payouts
    run = RoyaltyRun(
        token=token,
        period_id=period_id,
        starts_on=starts_on,
        ends_on=ends_on,
        received_wei=received_wei,
        carry_in_wei=carry_in_wei,
        paid_wei=distribution.paid_wei,
        carry_out_wei=distribution.carry_out_wei,
        total_weight=distribution.total_weight,
        remainder_rule=distribution.rule.value,
        status=(RunStatus.PAID if paid_now else RunStatus.COMPUTED).value,
        payout_tag=payout_tag(period_id),
        created_by=actor,
        created_at=at,
        paid_at=at if paid_now else None,
    )
    stake_records = [
        RoyaltyStakeRecord(
            patent_id=stake.patent_id,
            contributor=stake.contributor,
            weight=stake.weight,
            in_pool_from=stake.in_pool_from,
            in_pool_until=stake.in_pool_until,
        )
        for stake in stakes
    ]
    try:
        async with session.begin_nested():
            await repository.add_royalty_run(session, run, stake_records, deposits)
    except IntegrityError:
        # The same period, created by a request that took no lock (only possible before the
        # indexer's cursors exist): answer as a retry would, never with the unique violation.
        existing = await repository.royalty_run_for_period(session, token, period_id)
        if existing is None:
            raise
        return _same_period(existing, starts_on, ends_on), False
    size = context.settings.pool_payout_batch_size
    for index, start in enumerate(range(0, len(distribution.payouts), size)):
        chunk = distribution.payouts[start : start + size]
        await repository.add_payout_batch(
            session,
            RoyaltyPayoutBatch(run_id=run.id, batch_index=index, status=BatchStatus.PENDING.value),
            [
                RoyaltyPayout(
                    run_id=run.id,
                    contributor=payout.contributor,
                    amount_wei=payout.amount_wei,
                    weight=payout.weight,
                )
                for payout in chunk
            ],
        )
    await record_audit(
        session,
        actor=actor,
        action="royalty.run_computed",
        subject_type="royalty_run",
        subject_id=str(run.id),
        at=at,
        after={**run_summary(run), "deposits": len(deposits), "payouts": len(distribution.payouts)},
    )
    log.info(
        "pool.royalty_run_computed",
        run_id=run.id,
        period_id=period_id,
        received_wei=received_wei,
        paid_wei=distribution.paid_wei,
        carry_out_wei=distribution.carry_out_wei,
    )
    return run, True


def _same_period(existing: RoyaltyRun, starts_on: date, ends_on: date) -> RoyaltyRun:
    """The run already computed for the period asked for, if it has the dates asked for; else 409."""
    if (existing.starts_on, existing.ends_on) != (starts_on, ends_on):
        raise Conflict(
            f"period {existing.period_id} was already distributed "
            f"for {existing.starts_on} to {existing.ends_on}",
            extra={"run_id": existing.id},
        )
    return existing


async def load_run(session: AsyncSession, run_id: int) -> RoyaltyRun:
    run = await repository.royalty_run(session, run_id)
    if run is None:
        raise NotFound(f"no royalty run {run_id}")
    return run


async def distribution_of(session: AsyncSession, run: RoyaltyRun) -> Distribution:
    """The run's distribution, recomputed from its stored stakes and checked against its totals."""
    stakes = [
        RoyaltyStake(
            patent_id=row.patent_id,
            contributor=row.contributor,
            weight=row.weight,
            in_pool_from=row.in_pool_from,
            in_pool_until=row.in_pool_until,
        )
        for row in await repository.run_stakes(session, run.id)
    ]
    distribution = distribute(
        RoyaltyPeriod(run.period_id, run.starts_on, run.ends_on),
        received_wei=run.received_wei,
        carry_in_wei=run.carry_in_wei,
        stakes=stakes,
        rule=RemainderRule(run.remainder_rule),
    )
    if (distribution.paid_wei, distribution.carry_out_wei) != (run.paid_wei, run.carry_out_wei):
        raise RuntimeError(f"royalty run {run.id} no longer matches its stored stakes")
    return distribution


def for_contributor(distribution: Distribution, contributor: str) -> Distribution:
    """The distribution with only ``contributor``'s statement, for that contributor's eyes."""
    wanted = Web3.to_checksum_address(contributor)
    mine = tuple(statement for statement in distribution.statements if statement.contributor == wanted)
    if not mine:
        raise NotFound(f"{wanted} had no stake in period {distribution.period.period_id}")
    return replace(distribution, statements=mine)


async def runs(session: AsyncSession) -> Sequence[RoyaltyRun]:
    return await repository.royalty_runs(session)


# --------------------------------------------------------------------------- payouts


async def pay_run(context: PoolContext, run_id: int, *, actor: str) -> RoyaltyRun:
    """Send every unpaid batch of the run; safe to call again after any interruption.

    A batch the Fund refuses is left ``pending`` with its ``last_error``, and the run ``paying``;
    a payout the token refuses is held for its contributor and its batch is paid all the same.
    """
    async with context.sessionmaker() as session, session.begin():
        run = await repository.royalty_run(session, run_id, for_update=True)
        if run is None:
            raise NotFound(f"no royalty run {run_id}")
        if run.status == RunStatus.PAID:
            return run
        run.status = RunStatus.PAYING.value
        token = run.token
        unpaid = [
            (batch.id, batch_payout_tag(run.payout_tag, token, batch.batch_index))
            for batch in await repository.payout_batches(session, run_id)
            if batch.status != BatchStatus.PAID
        ]
    for batch_id, tag in unpaid:
        try:
            await _pay_batch(context, batch_id, token=token, tag=tag)
        except ChainRejected as rejected:
            # The batch is pending again with its refusal recorded: the later batches do not wait for
            # whatever refused it (one blacklisted recipient, a Fund short of the token) to change.
            log.warning(
                "pool.royalty_batch_refused",
                run_id=run_id,
                batch_id=batch_id,
                tag=tag,
                error_name=rejected.error_name,
            )
    async with context.sessionmaker() as session, session.begin():
        run = await repository.royalty_run(session, run_id, for_update=True)
        if run is None:
            raise NotFound(f"no royalty run {run_id}")
        batches = await repository.payout_batches(session, run_id)
        if run.status != RunStatus.PAID and all(batch.status == BatchStatus.PAID for batch in batches):
            run.status, run.paid_at = RunStatus.PAID.value, utc_now()
            await session.flush()
            await record_audit(
                session,
                actor=actor,
                action="royalty.run_paid",
                subject_type="royalty_run",
                subject_id=str(run.id),
                at=utc_now(),
                after=run_summary(run),
                tx_hashes=[batch.tx_hash for batch in batches if batch.tx_hash],
            )
            log.info("pool.royalty_run_paid", run_id=run.id, paid_wei=run.paid_wei, batches=len(batches))
        return run


async def _pay_batch(context: PoolContext, batch_id: int, *, token: str, tag: str) -> None:
    recipients, amounts, ours = await _claim_batch(context, batch_id, token=token, tag=tag)
    if not ours:
        return
    fund = context.chain.pool.fund
    try:
        receipt = await context.chain.run(lambda: fund.transact("payout", token, recipients, amounts, tag))
    except ChainRejected as rejected:
        # FundTagAlreadyPaid: an earlier send of this batch was mined after all. A transaction
        # mined in the same block as that one may revert without a decodable reason: ask the Fund.
        if rejected.error_name == TAG_ALREADY_PAID or await _tag_paid(context, tag):
            await _record_paid_elsewhere(
                context, batch_id, token=token, tag=tag, expected=dict(zip(recipients, amounts, strict=True))
            )
            return
        await _back_to_pending(context, batch_id, _refusal(rejected))
        raise
    events = receipt_events(fund, receipt, PAYOUT_EVENTS)
    tx_hash = hex32(receipt["transactionHash"])
    held: list[str] = []
    async with context.sessionmaker() as session, session.begin():
        await _serialise_with_claims(context, session, events)
        if await repository.claim_batch(
            session,
            batch_id,
            BatchStatus.SENDING,
            {"status": BatchStatus.PAID.value, "tx_hash": tx_hash, "paid_at": utc_now(), "last_error": None},
        ):
            held = await _record_outcomes(session, batch_id, token, tx_hash, events)
    log.info(
        "pool.royalty_batch_paid", batch_id=batch_id, recipients=len(recipients), held=len(held), tag=tag
    )
    for contributor in held:
        log.warning("pool.royalty_payout_held", batch_id=batch_id, contributor=contributor, tag=tag)


async def _serialise_with_claims(
    context: PoolContext, session: AsyncSession, events: Sequence[ChainEvent]
) -> None:
    """Take the ``fund`` indexer cursor's lock first in the transaction when the batch held a line
    (see :func:`_record_outcomes`); a batch that delivered every line has no payout a claim could
    take, and need not wait for an indexer pass."""
    if any(event.name == "FundPayoutHeld" for event in events):
        await context.indexer.lock_fund_cursor(session)


async def _record_outcomes(
    session: AsyncSession, batch_id: int, token: str, tx_hash: str, events: Sequence[ChainEvent]
) -> list[str]:
    """Record each payout of the mined batch as its event says (``paid`` or ``held``); the held ones'
    claims already indexed are applied at once. Returns the contributors whose payout is held.

    When a payout is held, the caller holds the ``fund`` indexer cursor's lock, taken first in
    its transaction (:func:`_serialise_with_claims`), as the indexer takes it before it records a
    ``FundClaimed`` and marks the held payouts it took. Without it, on PostgreSQL (READ
    COMMITTED) this transaction and the indexer's could each miss the other's uncommitted row:
    the payout would be recorded ``held`` after the claim's pass looked for it, and stay ``held``
    for ever. With it, whichever takes the lock second sees the rows the first committed."""
    outcomes: dict[str, tuple[PayoutStatus, int, int]] = {
        Web3.to_checksum_address(event.args["to"]): (
            PayoutStatus.PAID if event.name == "FundPayout" else PayoutStatus.HELD,
            event.block_number,
            event.log_index,
        )
        for event in events
    }
    await repository.record_payout_outcomes(session, batch_id, tx_hash, outcomes)
    held = [contributor for contributor, (status, _, _) in outcomes.items() if status is PayoutStatus.HELD]
    for contributor in held:
        await repository.mark_held_payouts_claimed(session, token, contributor)
    return held


async def _claim_batch(
    context: PoolContext, batch_id: int, *, token: str, tag: str
) -> tuple[list[str], list[int], bool]:
    """Commit the intent to send a batch, or find it already paid on chain.

    The batch is read in one short transaction and claimed in another, by compare-and-set on its
    status and, for a resend, on the time of the send it replaces: the chain is asked in between,
    with no transaction open, and of two requests claiming the same batch one wins. ``from_block``
    is set by the first claim only, so the search for the batch's payout always covers the block of
    its first transaction, however often it was sent again.
    """
    async with context.sessionmaker() as session, session.begin():
        batch = await session.get(RoyaltyPayoutBatch, batch_id)
        if batch is None:
            raise NotFound(f"no payout batch {batch_id}")
        payouts = await repository.payouts_of_batch(session, batch_id)
    recipients = [payout.contributor for payout in payouts]
    amounts = [payout.amount_wei for payout in payouts]
    if batch.status == BatchStatus.PAID:
        return recipients, amounts, False
    replaced_send: datetime | None = None
    if batch.status == BatchStatus.SENDING:
        searched_at = utc_now()
        found = await _find_batch_on_chain(
            context, batch.from_block, token, tag, dict(zip(recipients, amounts, strict=True))
        )
        if found is not None:
            await _reconciled(context, batch_id, token, found, tag)
            return recipients, amounts, False
        if batch.sending_at is not None and searched_at - batch.sending_at < timedelta(
            seconds=context.resend_after_s
        ):
            return recipients, amounts, False
        expected, replaced_send = BatchStatus.SENDING, batch.sending_at
        log.warning("pool.royalty_batch_resending", batch_id=batch_id, tag=tag)
    else:
        expected = BatchStatus.PENDING
    from_block = batch.from_block if batch.from_block is not None else await context.indexer.head_block() + 1
    async with context.sessionmaker() as session, session.begin():
        ours = await repository.claim_batch(
            session,
            batch_id,
            expected,
            {"status": BatchStatus.SENDING.value, "sending_at": utc_now()},
            sending_at=replaced_send,
            first_from_block=from_block,
        )
    return recipients, amounts, ours


async def _reconciled(
    context: PoolContext, batch_id: int, token: str, events: Sequence[ChainEvent], tag: str
) -> None:
    """Record the batch as paid by the transaction of ``events``, its payout (each line paid or
    held) of exactly its recipients under its tag."""
    tx_hash = events[0].tx_hash
    async with context.sessionmaker() as session, session.begin():
        await _serialise_with_claims(context, session, events)
        recorded = await repository.record_batch_paid(session, batch_id, tx_hash, utc_now())
        held = await _record_outcomes(session, batch_id, token, tx_hash, events) if recorded else []
    if recorded:
        log.info("pool.royalty_batch_reconciled", batch_id=batch_id, tx_hash=tx_hash, tag=tag, held=len(held))


async def _record_paid_elsewhere(
    context: PoolContext, batch_id: int, *, token: str, tag: str, expected: dict[str, int]
) -> None:
    """The Fund refused the batch's tag as paid: record the payout that used it, or refuse.

    The payout is looked for from the batch's first send, then from the Fund's deployment
    (a tag paid before this database knew of it), with no transaction open. If the tag paid
    other recipients or amounts, nothing here can pay the batch: it goes back to ``pending``
    and the refusal is recorded and raised, as for any revert.
    """
    refused = ChainRejected(
        f"the Fund already paid tag {tag}, but not to this batch's recipients and amounts",
        error_name=TAG_ALREADY_PAID,
        error_args={"tag": tag},
        extra={"batch_id": batch_id},
    )
    deploy_block = context.chain.runtime.deployment.deploy_block
    async with context.sessionmaker() as session, session.begin():
        batch = await session.get(RoyaltyPayoutBatch, batch_id)
        if batch is None:
            raise NotFound(f"no payout batch {batch_id}")
    if batch.status == BatchStatus.PAID:
        return
    found = await _find_batch_on_chain(context, batch.from_block, token, tag, expected)
    if found is None and batch.from_block != deploy_block:
        found = await _find_batch_on_chain(context, deploy_block, token, tag, expected)
    if found is not None:
        await _reconciled(context, batch_id, token, found, tag)
        return
    await _back_to_pending(
        context, batch_id, _refusal(refused, "the Fund paid this tag to other recipients or amounts")
    )
    log.error("pool.royalty_batch_tag_paid_otherwise", batch_id=batch_id, tag=tag)
    raise refused


async def _back_to_pending(context: PoolContext, batch_id: int, refusal: str) -> None:
    """The Fund refused the batch's send, which changed nothing: it is pending again, with why."""
    async with context.sessionmaker() as session, session.begin():
        await repository.claim_batch(
            session,
            batch_id,
            BatchStatus.SENDING,
            {"status": BatchStatus.PENDING.value, "sending_at": None, "last_error": refusal},
        )


def _refusal(rejected: ChainRejected, why: str | None = None) -> str:
    """A batch's refusal as recorded: the revert as Solidity writes it, with its arguments."""
    arguments = ", ".join(f"{name}={value}" for name, value in rejected.error_args.items())
    return f"{rejected.error_name}({arguments})" + (f": {why}" if why else "")


async def _tag_paid(context: PoolContext, tag: str) -> bool:
    fund = context.chain.pool.fund
    return bool(await context.chain.run(lambda: fund.call("paidTags", tag)))


async def _find_batch_on_chain(
    context: PoolContext, from_block: int | None, token: str, tag: str, expected: dict[str, int]
) -> list[ChainEvent] | None:
    """The events (``FundPayout`` and ``FundPayoutHeld``) of the transaction that paid exactly this
    batch under its tag, if one was mined since ``from_block``."""
    if from_block is None:
        return None

    def paid_exactly(events: list[ChainEvent]) -> list[ChainEvent] | None:
        by_tx: dict[str, list[ChainEvent]] = {}
        for event in events:
            by_tx.setdefault(event.tx_hash, []).append(event)
        for tx_events in by_tx.values():
            paid = {
                Web3.to_checksum_address(event.args["to"]): int(event.args["amount"]) for event in tx_events
            }
            if paid == expected:
                return tx_events
        return None

    return await context.chain.run(
        partial(
            search_events,
            context.chain.pool.fund,
            PAYOUT_EVENTS,
            from_block,
            (topic_of_address(token), None, tag),
            paid_exactly,
            max_blocks=context.settings.pool_indexer_max_blocks,
        )
    )
