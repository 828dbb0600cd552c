"""What the Vault's events do to the off-chain ledger: the indexer's handler for the Vault.

Effects, applied once the event is ``confirmations`` deep (``exchange.trading.indexer``),
each as one balanced posting set whose reference is ``<tx hash>:<log index>``:

* ``Deposited(account, token, amount)`` credits the account (``repository.credit_deposit``).
* ``Withdrawn(account, token, amount, nonce)`` debits it. When the service co-signed
  that withdrawal (``trading_withdrawals``: same account, nonce, token and amount),
  the debit consumes the reservation made at authorisation and the row becomes
  ``completed``; a withdrawal the service does not know is debited from the
  available balance.
* ``Exited(account, baseAmount, quoteAmount)`` debits both balances: the escape
  hatch paid everything out without the operator. The account's withdrawal
  authorisations still open become ``expired`` and give their reservations back
  first (``withdrawal_expiry.expire_for_exit``, ledger cause
  ``withdrawal.exit_released``), in the same transaction: the money they reserved
  is gone, and a reservation left behind would make the ledger refuse the debit.
  While the account still has fills neither settled nor failed, the exit waits
  (``EventDeferred``): the ledger holds their effects and the Vault paid out
  without them. After the exit the Vault refuses them (the account stays in exit
  mode, or, after a ``cancelExit``, has no balance left), so the settler fails
  them and voids their postings; a batch mined before the exit settles them
  instead, and the exit's amounts include them. Either way the debit then
  matches what the Vault paid. Meanwhile the account can neither trade nor
  withdraw (``exchange.trading.chain_cancels``), so no new fill of it can keep
  the exit waiting. (An account that calls ``cancelExit`` and deposits again
  before its old fills fail lets the Vault settle them from the new money; the
  exit's debit is then refused and the audit shows it.)
* ``Trade``, ``FillSkipped``, ``FeesCollected``, ``ExitRequested``, ``ExitCancelled``,
  ``OrderCancelled``, ``NonceCancelled`` move no ledger money: fills were posted
  when they matched (a skipped fill's postings are voided by the settler, which
  fails it), and fees reach the Fund on chain. They stay recorded in
  ``chain_events`` for the audit; ``exchange.trading.chain_cancels`` takes the
  orders that ``OrderCancelled``, ``NonceCancelled`` and ``ExitRequested`` name off
  the book, and ``exchange.trading.withdrawal_expiry`` releases the reservation of
  an authorisation that expired unused.

Undoing (a reorganisation took the block away) applies the opposite postings and
puts a completed withdrawal back to ``authorised`` with its reservation. An undone
exit gives the balances back first, then authorises again what it expired and
the Vault would still pay: the authorisations whose expiry is after the fork
block's timestamp reserve their amounts again
(``withdrawal_expiry.restore_for_undone_exit``, in the same transaction); those
past their expiry stay expired. A posting the ledger refuses (the money is no
longer there, or is reserved) becomes ``EventRefused``: the indexer records it and
the audit shows the difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.kit.logging import get_logger
from exchange.trading import ledger, repository, withdrawal_expiry
from exchange.trading.indexer import EventDeferred, EventRefused, IndexedEvent
from exchange.trading.ledger import Posting
from exchange.trading.models import SettlementState, TradingFill, TradingWithdrawal, WithdrawalStatus
from exchange.trading.repository import LedgerRefused

log = get_logger(__name__)

VAULT_EVENTS = (
    "Deposited",
    "Withdrawn",
    "ExitRequested",
    "ExitCancelled",
    "Exited",
    "OrderCancelled",
    "NonceCancelled",
    "Trade",
    "FillSkipped",
    "FeesCollected",
)


def reversed_postings(postings: list[Posting]) -> list[Posting]:
    return [Posting(p.account, p.token, -p.total_delta, -p.reserved_delta) for p in postings]


class VaultLedger:
    """The Vault's events applied to the ledger (an ``EventHandler``)."""

    def __init__(self, base_token: str, quote_token: str) -> None:
        self.base_token = base_token
        self.quote_token = quote_token

    async def credit(self, session: AsyncSession, event: IndexedEvent) -> None:
        if event.name == "Exited":
            await self._wait_for_unsettled_fills(session, event.address("account"))
            await self._expire_authorisations(session, event)
        postings = await self._postings(session, event, undo=False)
        if postings:
            await _apply(session, postings, cause=_CAUSES[event.name], reference=event.reference)

    async def reverse(self, session: AsyncSession, event: IndexedEvent) -> None:
        postings = await self._postings(session, event, undo=True)
        if postings:
            cause = f"{_CAUSES[event.name]}.reorg"
            await _apply(session, reversed_postings(postings), cause=cause, reference=event.reference)
            log.warning("vault.event_reversed", event_name=event.name, reference=event.reference)
        if event.name == "Exited":
            await self._restore_authorisations(session, event)

    async def _postings(self, session: AsyncSession, event: IndexedEvent, *, undo: bool) -> list[Posting]:
        """The postings `event` credits; with `undo`, those it credited (to be negated)."""
        if event.name == "Deposited":
            return ledger.deposit(event.address("account"), event.address("token"), event.integer("amount"))
        if event.name == "Withdrawn":
            return await self._withdrawal(session, event, undo=undo)
        if event.name == "Exited":
            account = event.address("account")
            postings: list[Posting] = []
            for token, amount in (
                (self.base_token, event.integer("baseAmount")),
                (self.quote_token, event.integer("quoteAmount")),
            ):
                if amount:
                    postings += ledger.withdraw(account, token, amount)
            return postings
        return []

    @staticmethod
    async def _wait_for_unsettled_fills(session: AsyncSession, account: str) -> None:
        """Defer the exit of ``account`` while a fill of it is pending or in a batch (module docstring)."""
        unsettled = await session.scalar(
            select(TradingFill.id)
            .where(
                or_(TradingFill.maker_account == account, TradingFill.taker_account == account),
                TradingFill.settlement_state.in_((SettlementState.PENDING, SettlementState.SUBMITTED)),
            )
            .limit(1)
        )
        if unsettled is not None:
            raise EventDeferred(
                f"{account} exited while fill {unsettled} (and maybe others) was neither settled nor "
                "failed: the exit is credited once the settler has settled or failed its fills"
            )

    async def _expire_authorisations(self, session: AsyncSession, event: IndexedEvent) -> None:
        """Release what the account's open withdrawal authorisations reserved, before its exit debit.

        ``Vault.exit`` sets both of the account's balances to zero (``word.withBalances(0, 0)``)
        and ``Vault.withdraw`` pays only out of that balance (``_debit`` reverts with
        ``VaultInsufficientBalance``), so no authorisation open at the exit can pay out what it
        reserved. On chain it stays valid until its expiry against money deposited after the
        exit; its ``Withdrawn`` is then debited from the available balance.
        """
        account = event.address("account")
        # The balances are locked first: a withdrawal being authorised meanwhile has either
        # committed its row (found below) or waits for this transaction and finds no money.
        await repository.load_balances(session, [(account, self.base_token), (account, self.quote_token)])
        expired = await withdrawal_expiry.expire_for_exit(session, account, exit_reference=event.reference)
        if expired:
            log.info("vault.exit_expired_withdrawals", account=account, withdrawals=expired)

    async def _restore_authorisations(self, session: AsyncSession, event: IndexedEvent) -> None:
        """Authorise again, after its balances came back, what the undone exit expired and is still valid.

        The chain time is the fork block's: the Vault pays an authorisation in any block
        the indexer credits from now on while its expiry is after it.
        """
        account = event.address("account")
        # Undone outside a rollback, without a fork time: restore them all, the expiry pass
        # (``withdrawal_expiry.release_expired_withdrawals``) releases the dead ones.
        chain_time_unix = event.fork_time_unix if event.fork_time_unix is not None else 0
        with _refusals_as_event_refused():
            restored = await withdrawal_expiry.restore_for_undone_exit(
                session, account, exit_reference=event.reference, chain_time_unix=chain_time_unix
            )
        if restored:
            log.warning("vault.exit_undone_withdrawals_restored", account=account, withdrawals=restored)

    async def _withdrawal(self, session: AsyncSession, event: IndexedEvent, *, undo: bool) -> list[Posting]:
        account, token, amount = event.address("account"), event.address("token"), event.integer("amount")
        row = await session.scalar(
            select(TradingWithdrawal).where(
                TradingWithdrawal.account == account,
                TradingWithdrawal.nonce == event.integer("nonce"),
                TradingWithdrawal.token == token,
                TradingWithdrawal.amount == amount,
            )
        )
        reserved = False
        if row is not None and not undo and row.status == WithdrawalStatus.AUTHORISED:
            row.status, row.tx_hash, reserved = WithdrawalStatus.COMPLETED.value, event.tx_hash, True
        elif row is not None and not undo and row.status == WithdrawalStatus.EXPIRED:
            # Expired by an exit while the Vault still honours it: paid from a later deposit. Its
            # reservation went at the exit, so the money comes out of the available balance.
            row.status, row.tx_hash = WithdrawalStatus.COMPLETED.value, event.tx_hash
        elif (
            row is not None
            and undo
            and row.status == WithdrawalStatus.COMPLETED
            and row.tx_hash == event.tx_hash
        ):
            # Authorised again, the amount held for it: the Vault honours it again until its
            # expiry (the expiry pass releases it then), whether it had been expired before or not.
            row.status, row.tx_hash, reserved = WithdrawalStatus.AUTHORISED.value, None, True
        elif row is None:
            log.warning("vault.withdrawal_unknown", account=account, nonce=event.integer("nonce"))
        return ledger.withdraw(account, token, amount, from_reserved=reserved)


_CAUSES = {"Deposited": "deposit", "Withdrawn": "withdrawal", "Exited": "exit"}


async def _apply(session: AsyncSession, postings: list[Posting], *, cause: str, reference: str) -> None:
    with _refusals_as_event_refused():
        await repository.apply_postings(session, postings, cause=cause, reference=reference)


@contextmanager
def _refusals_as_event_refused() -> Iterator[None]:
    try:
        yield
    except LedgerRefused as refusal:
        raise EventRefused(refusal.detail) from refusal
