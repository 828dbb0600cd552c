"""Chain errors, and the decoding of reverts into contract custom errors.

Error tree::

    ChainError                     anything that went wrong talking to the chain
    ├── ChainUnavailable           the node could not be reached or answered garbage
    ├── DeploymentMismatch         the code at a manifest address is not what we compiled
    ├── ChainReplaced              the database describes another chain than the one found
    └── ContractReverted           a call or transaction reverted
                                   (.error_name, .error_args, .contract)

``ContractReverted.error_name`` is the Solidity custom error (``GateBelowThreshold``),
``Error`` for ``require(..., "text")`` reverts, ``Panic`` for assertion panics, and
``Unknown`` when the revert data matches no ABI the layer knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address


class ChainError(Exception):
    """Base class of every error this package raises."""


class ChainUnavailable(ChainError):
    """The node could not be reached, or did not answer as a node should."""


class DeploymentMismatch(ChainError):
    """The code found at a deployment address differs from the compiled contract."""


class ManifestInvalid(ChainError):
    """A deployment manifest file this version cannot read (not JSON, another version, fields missing)."""


class ChainReplaced(ChainError):
    """The database was written for another chain (or an earlier one, since reset) than the node's."""


class ContractReverted(ChainError):
    """A contract call reverted with a decodable (or at least recorded) reason."""

    def __init__(
        self, error_name: str, error_args: Mapping[str, Any], contract: str | None, data: str
    ) -> None:
        self.error_name = error_name
        self.error_args = dict(error_args)
        self.contract = contract
        self.data = data
        rendered = ", ".join(f"{key}={value!r}" for key, value in self.error_args.items())
        where = f"{contract}: " if contract else ""
        super().__init__(f"{where}{error_name}({rendered})")


def _canonical_type(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(component) for component in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


class ErrorDecoder:
    """Maps 4-byte selectors to the custom errors declared in a set of ABIs."""

    _BUILTIN: tuple[tuple[str, list[dict[str, Any]]], ...] = (
        ("Error", [{"name": "message", "type": "string"}]),
        ("Panic", [{"name": "code", "type": "uint256"}]),
    )

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self._errors: dict[bytes, tuple[str, list[dict[str, Any]]]] = {}
        for name, inputs in self._BUILTIN:
            self._register(name, inputs)
        for abi in abis:
            for item in abi:
                if item.get("type") == "error":
                    self._register(item["name"], item.get("inputs", []))

    def _register(self, name: str, inputs: list[dict[str, Any]]) -> None:
        signature = f"{name}({','.join(_canonical_type(p) for p in inputs)})"
        self._errors[function_signature_to_4byte_selector(signature)] = (name, inputs)

    def decode(self, data: str | bytes | None, contract: str | None = None) -> ContractReverted:
        raw = (
            bytes.fromhex(data[2:] if data.startswith("0x") else data)
            if isinstance(data, str)
            else data or b""
        )
        hex_data = "0x" + raw.hex()
        entry = self._errors.get(raw[:4]) if len(raw) >= 4 else None
        if entry is None:
            return ContractReverted("Unknown", {}, contract, hex_data)
        name, inputs = entry
        try:
            values = abi_decode([_canonical_type(p) for p in inputs], raw[4:])
        except Exception:  # malformed revert data: keep the raw bytes for the operator
            return ContractReverted(name, {}, contract, hex_data)
        args = {
            param.get("name") or f"arg{index}": _plain(value, str(param["type"]))
            for index, (param, value) in enumerate(zip(inputs, values, strict=True))
        }
        return ContractReverted(name, args, contract, hex_data)


def _plain(value: Any, abi_type: str) -> Any:
    """ABI values as plain Python: bytes as 0x-hex, addresses checksummed."""
    if abi_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple | list):
        return [_plain(item, abi_type.removesuffix("[]")) for item in value]
    return value
