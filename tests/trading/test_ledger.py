"""The off-chain ledger: balanced postings, invariants, conservation under random operations."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from exchange.trading import ledger
from exchange.trading.amounts import FillTooSmall, settlement_amounts
from exchange.trading.ledger import VAULT_EXTERNAL, Balance, FillAmounts, LedgerError, Posting

BASE, QUOTE, FUND = "BPC", "TUSD", "fund"
ACCOUNTS = ("alice", "bob", "carol")


def test_unbalanced_postings_are_refused() -> None:
    with pytest.raises(LedgerError, match="unbalanced"):
        ledger.apply({}, [Posting("alice", BASE, 5)])


def test_reservation_cannot_exceed_available_and_nothing_changes() -> None:
    balances = ledger.apply({}, ledger.deposit("alice", BASE, 100))
    with pytest.raises(LedgerError, match="has 100 BPC available"):
        ledger.apply(balances, ledger.reserve("alice", BASE, 101))
    assert balances[("alice", BASE)] == Balance(100, 0)
    with pytest.raises(LedgerError, match="more BPC than it has reserved"):
        ledger.apply(balances, ledger.release("alice", BASE, 1))
    with pytest.raises(LedgerError, match="must be positive"):
        ledger.deposit("alice", BASE, 0)


def test_fill_moves_exactly_what_the_vault_moves() -> None:
    balances: dict[tuple[str, str], Balance] = {}
    for postings in (
        ledger.deposit("alice", QUOTE, 1_000_000),
        ledger.deposit("bob", BASE, 10 * 10**18),
        ledger.reserve("alice", QUOTE, 600_000),
        ledger.reserve("bob", BASE, 3 * 10**18),
    ):
        balances.update(ledger.apply(balances, postings))
    amounts = settlement_amounts(3 * 10**18, 180_000, 30, 50, 10, 50)
    fill = FillAmounts(
        "alice", "bob", BASE, QUOTE, 3 * 10**18, amounts.quote, amounts.buyer_fee, amounts.seller_fee
    )
    balances.update(ledger.apply(balances, ledger.fill(fill, FUND)))
    paid = amounts.quote + amounts.buyer_fee
    assert balances[("alice", QUOTE)] == Balance(1_000_000 - paid, 600_000 - paid)
    balances.update(ledger.apply(balances, ledger.release("alice", QUOTE, 600_000 - paid)))
    assert balances[("alice", QUOTE)] == Balance(1_000_000 - paid, 0)
    assert balances[("alice", BASE)] == Balance(3 * 10**18, 0)
    assert balances[("bob", BASE)] == Balance(7 * 10**18, 0)
    assert balances[("bob", QUOTE)] == Balance(amounts.quote - amounts.seller_fee, 0)
    assert balances[(FUND, QUOTE)] == Balance(amounts.buyer_fee + amounts.seller_fee, 0)


class LedgerMachine(RuleBasedStateMachine):
    """Random deposits, reservations, fills and withdrawals: totals are conserved, invariants hold."""

    def __init__(self) -> None:
        super().__init__()
        self.balances: dict[tuple[str, str], Balance] = {}
        self.deposited: dict[str, int] = defaultdict(int)
        self.withdrawn: dict[str, int] = defaultdict(int)

    def _try(self, postings: list[Posting]) -> bool:
        try:
            changed = ledger.apply(self.balances, postings)
        except LedgerError:
            return False
        self.balances.update(changed)
        return True

    def _balance(self, account: str, token: str) -> Balance:
        return self.balances.get((account, token), Balance())

    @rule(
        account=st.sampled_from(ACCOUNTS), token=st.sampled_from((BASE, QUOTE)), amount=st.integers(1, 10**24)
    )
    def deposit(self, account: str, token: str, amount: int) -> None:
        assert self._try(ledger.deposit(account, token, amount))
        self.deposited[token] += amount

    @rule(
        account=st.sampled_from(ACCOUNTS), token=st.sampled_from((BASE, QUOTE)), amount=st.integers(0, 10**24)
    )
    def reserve(self, account: str, token: str, amount: int) -> None:
        fits = amount <= self._balance(account, token).available
        assert self._try(ledger.reserve(account, token, amount)) == fits

    @rule(
        account=st.sampled_from(ACCOUNTS), token=st.sampled_from((BASE, QUOTE)), amount=st.integers(0, 10**24)
    )
    def release(self, account: str, token: str, amount: int) -> None:
        fits = amount <= self._balance(account, token).reserved
        assert self._try(ledger.release(account, token, amount)) == fits

    @rule(
        account=st.sampled_from(ACCOUNTS), token=st.sampled_from((BASE, QUOTE)), amount=st.integers(1, 10**24)
    )
    def withdraw(self, account: str, token: str, amount: int) -> None:
        fits = amount <= self._balance(account, token).available
        if self._try(ledger.withdraw(account, token, amount)):
            assert fits
            self.withdrawn[token] += amount
        else:
            assert not fits

    @rule(
        buyer=st.sampled_from(ACCOUNTS),
        seller=st.sampled_from(ACCOUNTS),
        base_amount=st.integers(1, 10**22),
        price=st.integers(1, 10**12),
        fees=st.tuples(st.integers(0, 100), st.integers(0, 100)),
    )
    def fill(self, buyer: str, seller: str, base_amount: int, price: int, fees: tuple[int, int]) -> None:
        try:
            amounts = settlement_amounts(base_amount, price, fees[0], 100, fees[1], 100)
        except FillTooSmall:
            return  # the Vault refuses fills worth no quote unit; so does intake
        reservation = amounts.quote + amounts.buyer_fee
        # A fill needs its reservations: make them if the balances allow, as intake would.
        if not self._try(ledger.reserve(buyer, QUOTE, reservation)):
            return
        if not self._try(ledger.reserve(seller, BASE, base_amount)):
            assert self._try(ledger.release(buyer, QUOTE, reservation))
            return
        fill = FillAmounts(
            buyer,
            seller,
            BASE,
            QUOTE,
            base_amount,
            amounts.quote,
            amounts.buyer_fee,
            amounts.seller_fee,
        )
        assert self._try(ledger.fill(fill, FUND))

    @invariant()
    def conservation(self) -> None:
        for token in (BASE, QUOTE):
            inside = sum(b.total for (a, t), b in self.balances.items() if t == token and a != VAULT_EXTERNAL)
            assert inside == self.deposited[token] - self.withdrawn[token]
            assert -self._balance(VAULT_EXTERNAL, token).total == inside

    @invariant()
    def reservations_within_totals(self) -> None:
        for (account, _), balance in self.balances.items():
            if account != VAULT_EXTERNAL:
                assert 0 <= balance.reserved <= balance.total


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(amount=st.integers(-(10**30), 10**30))
def test_postings_of_every_operation_balance(amount: int) -> None:
    for build in (ledger.deposit, ledger.withdraw):
        try:
            postings = build("alice", BASE, amount)
        except LedgerError:
            assert amount <= 0
            continue
        ledger.check_balanced(postings)
