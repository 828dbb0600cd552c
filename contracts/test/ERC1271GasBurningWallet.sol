// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ERC1271Wallet} from "./ERC1271Wallet.sol";

/// @title ERC1271GasBurningWallet
/// @notice A hostile contract wallet for tests: asked whether it signed something (ERC-1271),
/// it spins until it has burnt every unit of gas it was given, and so never answers. Its owner
/// makes it act as `ERC1271Wallet`'s does, so that it can take a licence.
contract ERC1271GasBurningWallet is ERC1271Wallet {
    /// @param walletOwner The owner's address.
    constructor(address walletOwner) ERC1271Wallet(walletOwner) {}

    /// @inheritdoc IERC1271
    /// @dev Never returns: the loop runs until the call is out of gas.
    function isValidSignature(bytes32, bytes calldata) external view override returns (bytes4) {
        uint256 spins;
        while (gasleft() > 0) {
            // Unchecked: the gas runs out long before the counter could wrap.
            unchecked {
                ++spins;
            }
        }
        return spins == 0 ? bytes4(0) : bytes4(0xffffffff);
    }
}
