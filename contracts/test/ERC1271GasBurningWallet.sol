// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title ERC1271GasBurningWallet
/// @notice A hostile contract wallet for tests: asked whether it signed something (ERC-1271),
/// it spins until it has burnt every unit of gas it was given, and so never answers. It also
/// runs calls its owner asks for, so that it can take a licence.
contract ERC1271GasBurningWallet is IERC1271 {
    /// @notice The key that controls this wallet.
    address public immutable owner;

    /// @notice Only the owner may make the wallet act.
    error ERC1271GasBurningWalletUnauthorized(address caller);

    /// @param walletOwner The owner's address.
    constructor(address walletOwner) {
        owner = walletOwner;
    }

    /// @notice Call `target` with `data` as the wallet (owner only).
    /// @param target The contract to call.
    /// @param data The calldata.
    /// @return The call's return data.
    function execute(address target, bytes calldata data) external returns (bytes memory) {
        if (msg.sender != owner) revert ERC1271GasBurningWalletUnauthorized(msg.sender);
        return Address.functionCall(target, data);
    }

    /// @inheritdoc IERC1271
    /// @dev Never returns: the loop runs until the call is out of gas.
    function isValidSignature(bytes32, bytes calldata) external view returns (bytes4) {
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
