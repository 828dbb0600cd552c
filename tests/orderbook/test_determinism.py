"""Replaying a command log gives the same events and the same state hash,
whether it starts from an empty book or from a snapshot taken part way."""

from __future__ import annotations

import pytest

from exchange.orderbook import Amend, Command, Event, OrderBook, PlaceLimit, Side
from tests.orderbook.commands import MARKET, RandomCommands
from tests.orderbook.invariants import BookObserver

SEQUENCES_PER_BLOCK = 500
COMMANDS_PER_SEQUENCE = 60


def command_log(seed: int) -> list[Command]:
    commands = RandomCommands(seed)
    return [commands.next() for _ in range(COMMANDS_PER_SEQUENCE)]


def run(book: OrderBook, commands: list[Command]) -> list[list[Event]]:
    return [book.apply(command) for command in commands]


@pytest.mark.parametrize("block", range(4))
def test_replay_from_empty_and_from_snapshot_agree(block: int) -> None:
    for seed in range(block * SEQUENCES_PER_BLOCK, (block + 1) * SEQUENCES_PER_BLOCK):
        commands = command_log(seed)
        original = OrderBook(MARKET)
        observer = BookObserver()
        events = []
        for command in commands:
            emitted = original.apply(command)
            observer.observe(original, emitted)
            events.append(emitted)
        final_hash = original.state_hash()

        replayed = OrderBook(MARKET)
        assert run(replayed, commands) == events, seed
        assert replayed.state_hash() == final_hash, seed

        cut = seed % len(commands)
        prefix = OrderBook(MARKET)
        run(prefix, commands[:cut])
        restored = OrderBook.restore(prefix.snapshot())
        assert restored.state_hash() == prefix.state_hash(), seed
        assert run(restored, commands[cut:]) == events[cut:], seed
        assert restored.state_hash() == final_hash, seed
        assert restored.snapshot() == original.snapshot(), seed


def test_state_hash_tells_states_apart() -> None:
    first, second = OrderBook(MARKET), OrderBook(MARKET)
    assert first.state_hash() == second.state_hash()
    first.apply(PlaceLimit(1, "0xA11CE", Side.BUY, 100, 4))
    second.apply(PlaceLimit(1, "0xA11CE", Side.BUY, 100, 6))
    assert first.state_hash() != second.state_hash()
    second.apply(Amend(1, "0xA11CE", amount_base=4))
    # Same open order, but the second one has 2 base units cancelled.
    assert first.state_hash() != second.state_hash()
    assert len(first.state_hash()) == 32
