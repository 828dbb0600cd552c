"""Who signed this? EOA signatures by recovery, contract wallets through ERC-1271."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import SignableMessage
from eth_keys.exceptions import BadSignature
from eth_tester.exceptions import TransactionFailed
from eth_utils.exceptions import ValidationError
from web3 import Web3
from web3.exceptions import BadFunctionCallOutput, ContractLogicError
from web3.types import BlockIdentifier

from exchange.chain.errors import ChainUnavailable

EOA_SIGNATURE_BYTES = 65  # r (32) ‖ s (32) ‖ v (1)
ERC1271_MAGIC = bytes.fromhex("1626ba7e")
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
    at `block` (a wallet may approve a signature, or withdraw its approval, at any block)."""
    signer = Web3.to_checksum_address(signer)
    if recover_signer(message, signature) == signer:
        return True
    if w3 is None:
        return False
    try:
        if not w3.eth.get_code(signer, block_identifier=block):
            return False
        wallet = w3.eth.contract(address=signer, abi=_ERC1271_ABI)
        magic = wallet.functions.isValidSignature(eip191_hash(message), signature).call(
            block_identifier=block
        )
    except (ContractLogicError, TransactionFailed, BadFunctionCallOutput):
        return False  # a reverting or non-conforming wallet is simply not a valid signer
    except OSError as exc:
        raise ChainUnavailable(f"cannot ask wallet {signer}: {exc}") from exc
    return bytes(magic) == ERC1271_MAGIC
