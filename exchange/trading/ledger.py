"""The off-chain ledger: what each account holds in the Vault, and what is reserved.

Pure: values in, postings out, no I/O. Every operation is a balanced set of
postings — for each token the deltas of ``total`` sum to zero across accounts —
so money is never created or lost by construction; the chain's side of the
Vault appears as the account ``VAULT_EXTERNAL``, whose negated total is what
the Vault contract holds. ``apply`` refuses any unbalanced posting set.

Invariants, per account and token (asserted on every change):

- ``0 <= reserved <= total``  (``available = total - reserved``)
- reservations only ever cover open orders and pending withdrawals.

A fill moves, in the quote token, exactly what ``LibOrder.settlementAmounts``
moves on chain: the buyer pays ``quote + buyer_fee`` from its reservation, the
seller receives ``quote - seller_fee``, the fee account receives both fees;
the base amount moves from the seller's reservation to the buyer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

VAULT_EXTERNAL = "vault:external"
"""Counterparty of deposits and withdrawals: its total is minus the Vault's on-chain holding."""


class LedgerError(ValueError):
    """An operation the balances cannot support; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    token: str
    total_delta: int
    reserved_delta: int = 0


@dataclass(frozen=True, slots=True)
class Balance:
    total: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.total - self.reserved


@dataclass(frozen=True, slots=True)
class FillAmounts:
    """One fill as the ledger sees it; amounts in base units of each token."""

    buyer: str
    seller: str
    base_token: str
    quote_token: str
    base_amount: int
    quote_amount: int
    buyer_fee: int
    seller_fee: int


def deposit(account: str, token: str, amount: int) -> list[Posting]:
    _positive(amount, "deposit")
    return [Posting(account, token, amount), Posting(VAULT_EXTERNAL, token, -amount)]


def withdraw(account: str, token: str, amount: int, *, from_reserved: bool = False) -> list[Posting]:
    """Pay out of the Vault; `from_reserved` consumes a reservation made when it was requested."""
    _positive(amount, "withdrawal")
    return [
        Posting(account, token, -amount, -amount if from_reserved else 0),
        Posting(VAULT_EXTERNAL, token, amount),
    ]


def reserve(account: str, token: str, amount: int) -> list[Posting]:
    _not_negative(amount, "reservation")
    return [Posting(account, token, 0, amount)]


def release(account: str, token: str, amount: int) -> list[Posting]:
    _not_negative(amount, "release")
    return [Posting(account, token, 0, -amount)]


def fill(amounts: FillAmounts, fee_account: str) -> list[Posting]:
    a = amounts
    for name in ("base_amount", "quote_amount", "buyer_fee", "seller_fee"):
        _not_negative(getattr(a, name), name)
    if a.seller_fee > a.quote_amount:
        raise LedgerError("the seller's fee exceeds the quote amount")
    buyer_pays = a.quote_amount + a.buyer_fee
    # Both sides pay out of their reservations; what the buyer reserved beyond this fill
    # (price improvement, a fee below its cap) is the writer's to release (MarketWriter._fill).
    return [
        Posting(a.buyer, a.quote_token, -buyer_pays, -buyer_pays),
        Posting(a.seller, a.quote_token, a.quote_amount - a.seller_fee),
        Posting(fee_account, a.quote_token, a.buyer_fee + a.seller_fee),
        Posting(a.seller, a.base_token, -a.base_amount, -a.base_amount),
        Posting(a.buyer, a.base_token, a.base_amount),
    ]


def check_balanced(postings: Iterable[Posting]) -> None:
    """Raise unless, token by token, the total deltas sum to zero."""
    sums: dict[str, int] = defaultdict(int)
    for posting in postings:
        sums[posting.token] += posting.total_delta
    unbalanced = {token: delta for token, delta in sums.items() if delta}
    if unbalanced:
        raise LedgerError(f"unbalanced postings: {unbalanced}")


def apply(
    balances: Mapping[tuple[str, str], Balance], postings: list[Posting]
) -> dict[tuple[str, str], Balance]:
    """The balances after `postings`, or LedgerError (and no change) if any invariant breaks.

    Returns only the changed entries; merge them into your store.
    """
    check_balanced(postings)
    changed: dict[tuple[str, str], Balance] = {}
    for posting in postings:
        key = (posting.account, posting.token)
        current = changed.get(key) or balances.get(key) or Balance()
        changed[key] = Balance(current.total + posting.total_delta, current.reserved + posting.reserved_delta)
    for (account, token), balance in changed.items():
        if account == VAULT_EXTERNAL:
            continue
        if balance.reserved < 0:
            raise LedgerError(f"{account} would release more {token} than it has reserved")
        if balance.reserved > balance.total:
            before = balances.get((account, token)) or Balance()
            raise LedgerError(
                f"{account} has {max(before.available, 0)} {token} available, not enough for this"
            )
    return changed


def _positive(amount: int, what: str) -> None:
    if amount <= 0:
        raise LedgerError(f"{what} amount must be positive, got {amount}")


def _not_negative(amount: int, what: str) -> None:
    if amount < 0:
        raise LedgerError(f"{what} must not be negative, got {amount}")
