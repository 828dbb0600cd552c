"""Settlement gas benchmark: gas per fill of ``Vault.settle`` for batches of 1, 10 and 50 fills.

    .venv/bin/python bench/settlement_gas.py [--chain hardhat|embedded] [--sizes 1,10,50]

It starts a Hardhat node on a free loopback port (stopped at the end; ``--chain
embedded`` uses the in-process EVM instead, with the same gas figures), deploys
the pool through ``exchange.chain.deployment.deploy_pool`` and the Vault from the
``compile_contracts()`` artifact, opens one trading account per maker and taker
(admitted, funded, deposited), and signs every order with eth-account's EIP-712
encoding through ``exchange.trading.eip712``, as the service does.

Scenarios, each a batch of N fills settled in one transaction:

* ``fresh``: one taker order against N makers' orders that have never been
  filled. Each maker order's filled-amount slot goes from zero to non-zero
  (20,000 gas for that store alone, plus 2,100 for the cold read), the cost of
  any order's first fill.
* ``partial``: the same shape, against N maker orders already partly filled in
  an earlier batch: their slots are non-zero, so the store costs 2,900.
* ``pairs``: N independent pairs, a fresh maker and a fresh taker order per
  fill (two zero-to-non-zero slots and two accounts per fill): the worst case.

Gas per fill is the receipt's ``gasUsed`` (including the 21,000 base cost and
calldata) divided by N. Numbers are printed; the last line is one JSON object
whose ``gas_per_fill_N`` keys are the ``fresh`` figures and whose
``gas_per_fill_N_partial`` / ``_pairs`` keys are the other scenarios. Nothing
passes or fails on gas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3
from web3.middleware import SignAndSendRawMiddlewareBuilder
from web3.types import Wei

from exchange.chain.provider import make_web3
from exchange.kit.logging import configure_logging
from exchange.trading.eip712 import OrderSide, VaultOrder, sign_order

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the test helpers below live beside the package, not in it
    sys.path.insert(0, str(ROOT))

from tests.chain.nodes import hardhat_node  # noqa: E402
from tests.trading.vault_chain import VaultChain, deploy_vault_chain  # noqa: E402

BPC = 10**18
USD = 10**6
PRICE_QUOTE = 2 * USD  # 2 quote-token units per BPC
FAR_EXPIRY = 2**40
MAKER_FEE_BPS = 10
TAKER_FEE_BPS = 20
MAX_FEE_BPS = 30

Fill = tuple[int, int, int, int, int, int]
"""IVault.Fill: makerIndex, takerIndex, makerFeeBps, takerFeeBps, baseAmount, price."""


@dataclass
class Trader:
    account: LocalAccount
    nonce: int = 0

    @property
    def address(self) -> str:
        return str(self.account.address)

    def order(self, chain: VaultChain, side: OrderSide, amount_base: int) -> tuple[VaultOrder, bytes]:
        self.nonce += 1
        order = VaultOrder(
            maker=self.address,
            base_token=chain.base_token,
            quote_token=chain.quote_token,
            side=side,
            price_quote=PRICE_QUOTE,
            amount_base=amount_base,
            max_fee_bps=MAX_FEE_BPS,
            nonce=self.nonce,
            expiry_unix=FAR_EXPIRY,
        )
        return order, sign_order(self.account.key, chain.chain_id, chain.vault.address, order)


@contextlib.contextmanager
def _web3(kind: str) -> Iterator[Web3]:
    if kind == "embedded":
        yield make_web3()
        return
    with hardhat_node() as url:
        yield make_web3(url)


def _traders(w3: Web3, chain: VaultChain, count: int) -> list[Trader]:
    """`count` deterministic local accounts with gas money and a funded Vault account each."""
    accounts = [Account.from_key(keccak(f"settlement-bench-{index}".encode())) for index in range(count)]
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(accounts), layer=0)
    for account in accounts:
        tx = w3.eth.send_transaction({"from": chain.council, "to": account.address, "value": Wei(10**18)})
        w3.eth.wait_for_transaction_receipt(tx)
        chain.open_account(account.address, base_wei=1_000 * BPC, quote_units=1_000_000 * USD)
    return [Trader(account) for account in accounts]


def _settle(chain: VaultChain, signed: list[tuple[VaultOrder, bytes]], fills: list[Fill]) -> int:
    orders = [order.as_abi_tuple() for order, _ in signed]
    signatures = [signature for _, signature in signed]
    receipt = chain.vault.transact("settle", orders, signatures, fills)
    return int(receipt["gasUsed"])


def _one_taker(
    chain: VaultChain, taker: Trader, makers: list[Trader], maker_orders: list[tuple[VaultOrder, bytes]]
) -> int:
    """Settle one fresh taker buy order against every maker order, 1 BPC each."""
    signed = [taker.order(chain, OrderSide.BUY, len(makers) * BPC), *maker_orders]
    fills = [(index + 1, 0, MAKER_FEE_BPS, TAKER_FEE_BPS, BPC, PRICE_QUOTE) for index in range(len(makers))]
    return _settle(chain, signed, fills)


def measure(chain: VaultChain, traders: list[Trader], size: int) -> dict[str, int]:
    taker, makers = traders[0], traders[1 : size + 1]
    fresh_orders = [maker.order(chain, OrderSide.SELL, 3 * BPC) for maker in makers]
    fresh = _one_taker(chain, taker, makers, fresh_orders)
    # The same maker orders, now filled 1 of 3 BPC: a second taker fills another BPC of each.
    partial = _one_taker(chain, taker, makers, fresh_orders)

    pair_makers, pair_takers = traders[1 : size + 1], traders[size + 1 : 2 * size + 1]
    signed: list[tuple[VaultOrder, bytes]] = []
    fills: list[Fill] = []
    for index, (maker, pair_taker) in enumerate(zip(pair_makers, pair_takers, strict=True)):
        signed += [maker.order(chain, OrderSide.SELL, BPC), pair_taker.order(chain, OrderSide.BUY, BPC)]
        fills.append((2 * index, 2 * index + 1, MAKER_FEE_BPS, TAKER_FEE_BPS, BPC, PRICE_QUOTE))
    pairs = _settle(chain, signed, fills)
    return {"fresh": fresh // size, "partial": partial // size, "pairs": pairs // size}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chain", choices=("hardhat", "embedded"), default="hardhat")
    parser.add_argument("--sizes", default="1,10,50", help="batch sizes, comma-separated")
    args = parser.parse_args()
    configure_logging(log_level="WARNING")
    sizes = [int(size) for size in args.sizes.split(",")]

    with _web3(args.chain) as w3:
        print(f"chain: {args.chain} (id {w3.eth.chain_id}); deploying the pool and the Vault", flush=True)
        chain = deploy_vault_chain(w3)
        traders = _traders(w3, chain, 2 * max(sizes) + 1)
        print(f"{len(traders)} trading accounts opened", flush=True)
        # Warm-up: the Fund's first fee makes its quote balance non-zero (a one-time 20,000 gas
        # store that every later batch is spared), so no measured batch pays it.
        maker, taker = traders[0], traders[1]
        _settle(
            chain,
            [maker.order(chain, OrderSide.SELL, BPC), taker.order(chain, OrderSide.BUY, BPC)],
            [(0, 1, MAKER_FEE_BPS, TAKER_FEE_BPS, BPC, PRICE_QUOTE)],
        )
        results = {size: measure(chain, traders, size) for size in sizes}

    print(f"{'batch':>6} {'fresh':>10} {'partial':>10} {'pairs':>10}   gas per fill")
    for size, gas in results.items():
        print(f"{size:>6} {gas['fresh']:>10,} {gas['partial']:>10,} {gas['pairs']:>10,}")
    summary: dict[str, int] = {}
    for size, gas in results.items():
        summary[f"gas_per_fill_{size}"] = gas["fresh"]
    for size, gas in results.items():
        summary[f"gas_per_fill_{size}_partial"] = gas["partial"]
        summary[f"gas_per_fill_{size}_pairs"] = gas["pairs"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
