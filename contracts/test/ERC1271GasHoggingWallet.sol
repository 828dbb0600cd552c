// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ERC1271Wallet} from "./ERC1271Wallet.sol";

/// @title ERC1271GasHoggingWallet
/// @notice A hostile contract wallet for tests: asked whether it signed something (ERC-1271),
/// it burns the gas it was given down to the last 40,000, then answers as `ERC1271Wallet` does
/// (its owner's key). Given a capped amount of gas it passes the check; given a transaction's
/// whole gas, it takes 63/64 of it.
contract ERC1271GasHoggingWallet is ERC1271Wallet {
    /// @param walletOwner The owner's address.
    constructor(address walletOwner) ERC1271Wallet(walletOwner) {}

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32 hash, bytes calldata signature) external view override returns (bytes4) {
        uint256 spins;
        while (gasleft() > 40_000) {
            // Unchecked: the gas runs out long before the counter could wrap.
            unchecked {
                ++spins;
            }
        }
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(hash, signature);
        bool valid = spins > 0 && error == ECDSA.RecoverError.NoError && recovered == owner;
        return valid ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
    }
}
