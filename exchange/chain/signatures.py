"""Who signed this? EOA signatures by recovery, contract wallets through ERC-1271."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import SignableMessage
from eth_keys.exceptions import BadSignature
from eth_tester.exceptions import TransactionFailed
from eth_utils.exceptions import ValidationError
from web3 import Web3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError, Web3RPCError
from web3.types import BlockIdentifier

from exchange.chain.errors import ChainUnavailable
from exchange.kit.secp256k1 import is_high_s

EOA_SIGNATURE_BYTES = 65  # r (32) ‖ s (32) ‖ v (1)
ERC1271_MAGIC = bytes.fromhex("1626ba7e")
# The gas a wallet's isValidSignature may burn when this service asks it. EIP-1271 advises
# callers on chain not to cap it, and OpenZeppelin's SignatureChecker forwards all gas; but
# here anyone can name any contract as a certificate's holder or sign-in address, and an
# uncapped eth_call runs up to the node's own cap (tens of millions of gas: seconds of the
# node's time and a worker of ours) per request. Multisigs and passkey (P-256) wallets check
# a signature in tens to a few hundred thousand gas; a wallet that needs more is not valid.
ERC1271_GAS_CAP = 500_000
_ERC1271_ABI = [
    {
        "type": "function",
        "name": "isValidSignature",
        "stateMutability": "view",
        "inputs": [{"name": "hash", "type": "bytes32"}, {"name": "signature", "type": "bytes"}],
        "outputs": [{"name": "magicValue", "type": "bytes4"}],
    }
]


def eip191_hash(message: SignableMessage) -> bytes:
    """The digest an ERC-1271 wallet is asked about: keccak256(0x19 ‖ version ‖ header ‖ body)."""
    return bytes(Web3.keccak(b"\x19" + message.version + message.header + message.body))


def recover_signer(message: SignableMessage, signature: bytes) -> str | None:
    """The EOA that signed `message`, or None when the bytes are no valid signature: not the
    65 bytes r ‖ s ‖ v, or no key's (r or s zero or not below the curve order, s too high, bad v)."""
    if len(signature) != EOA_SIGNATURE_BYTES:
        return None
    if is_high_s(signature):
        return None  # eth_keys recovers it (it asks only s < n)
    try:
        return str(Account.recover_message(message, signature=signature))
    except (ValueError, TypeError, ValidationError, BadSignature):
        return None


def is_valid_signature(
    w3: Web3 | None,
    signer: str,
    message: SignableMessage,
    signature: bytes,
    *,
    block: BlockIdentifier = "latest",
) -> bool:
    """True when `signer` signed `message`: as an EOA, or as an ERC-1271 contract wallet on `w3`
    at `block` (a wallet may approve a signature, or withdraw its approval, at any block), its
    answer given within ``ERC1271_GAS_CAP`` gas."""
    signer = Web3.to_checksum_address(signer)
    if recover_signer(message, signature) == signer:
        return True
    if w3 is None:
        return False
    return wallet_accepts(w3, signer, eip191_hash(message), signature, block=block)


def wallet_accepts(
    w3: Web3, wallet: str, digest: bytes, signature: bytes, *, block: BlockIdentifier = "latest"
) -> bool:
    """True when `wallet` is a contract on `w3` at `block` whose ``isValidSignature(digest,
    signature)`` (ERC-1271) answers the magic value within ``ERC1271_GAS_CAP`` gas.

    An address without code, a wallet that reverts, answers anything else or runs out of gas
    accepts nothing; a node that cannot be reached, or answers the call with an error of its
    own, raises ``ChainUnavailable``."""
    wallet = Web3.to_checksum_address(wallet)
    try:
        if not w3.eth.get_code(wallet, block_identifier=block):
            return False
        contract = w3.eth.contract(address=wallet, abi=_ERC1271_ABI)
        magic = contract.functions.isValidSignature(digest, signature).call(
            {"gas": ERC1271_GAS_CAP}, block_identifier=block
        )
    except (ContractLogicError, TransactionFailed, BadFunctionCallOutput):
        # A reverting or non-conforming wallet is simply not a valid signer; nor is one out of
        # gas, which Hardhat reports as a revert and the embedded EVM as a failed transaction.
        return False
    except Web3RPCError as exc:
        if _out_of_gas(exc):  # geth and its kin: an error without revert data
            return False
        raise ChainUnavailable(f"the node did not ask wallet {wallet}: {exc.message}") from exc
    except OSError as exc:
        raise ChainUnavailable(f"cannot ask wallet {wallet}: {exc}") from exc
    return bytes(magic) == ERC1271_MAGIC


def _out_of_gas(error: Web3RPCError) -> bool:
    """Whether the node says the call ran out of gas ("out of gas", "OutOfGas", …)."""
    return "outofgas" in error.message.replace(" ", "").replace("_", "").lower()
