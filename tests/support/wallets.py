"""Test contract wallets (ERC-1271) on a chain, for tests of any area."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.contract import Contract

from exchange.chain.compiler import compile_contracts


def deploy_wallet(w3: Web3, contract: str, owner: str, *, sender: str | None = None) -> Contract:
    """A test wallet (``contract``: ERC1271Wallet, which takes its owner's signatures as its own,
    or ERC1271ApprovingWallet, which takes only those of hashes its owner approved) owned by
    ``owner``, deployed by ``sender`` (the owner unless given)."""
    return _deploy(w3, contract, owner, sender=sender or owner)


def deploy_multisig(w3: Web3, owners: list[str], *, sender: str) -> Contract:
    """A test ERC1271MultisigWallet of ``owners`` (ascending by address): its signature is each
    owner's 65 bytes of the hash, in that order."""
    return _deploy(w3, "ERC1271MultisigWallet", owners, sender=sender)


def _deploy(w3: Web3, contract: str, *arguments: Any, sender: str) -> Contract:
    artifact = compile_contracts()[contract]
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    sent = factory.constructor(*arguments).transact({"from": sender})
    address = Web3.to_checksum_address(str(w3.eth.wait_for_transaction_receipt(sent)["contractAddress"]))
    return w3.eth.contract(address=address, abi=artifact.abi)


def act_as(wallet: Contract, owner: str, target: Contract, function: str, *args: Any) -> None:
    """The wallet calls ``target.function(*args)`` (its owner sends the transaction); mined."""
    data = target.encode_abi(function, list(args))
    sent = wallet.functions.execute(target.address, data).transact({"from": owner})
    receipt = wallet.w3.eth.wait_for_transaction_receipt(sent)
    assert receipt["status"] == 1, f"{function} as the wallet {wallet.address} reverted"
