"""A digest of everything a book does over seeded command logs, to compare builds."""

from __future__ import annotations

import hashlib

from exchange.orderbook import OrderBook
from tests.orderbook.commands import MARKET, RandomCommands

SEQUENCES = 300
COMMANDS_PER_SEQUENCE = 80


def digest_of_runs() -> str:
    digest = hashlib.sha256()
    for seed in range(SEQUENCES):
        commands = RandomCommands(seed)
        book = OrderBook(MARKET)
        for _ in range(COMMANDS_PER_SEQUENCE):
            for event in book.apply(commands.next()):
                digest.update(repr(event).encode())
            digest.update(repr(book.depth(3)).encode())
        digest.update(book.state_hash())
        restored = OrderBook.restore(book.snapshot())
        digest.update(restored.state_hash())
    return digest.hexdigest()
