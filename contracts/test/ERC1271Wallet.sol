// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title ERC1271Wallet
/// @notice A minimal contract wallet for tests: it accepts a hash as signed when
/// its owner's key signed it (ERC-1271), and runs calls its owner asks for.
contract ERC1271Wallet is IERC1271 {
    /// @notice The key that signs for this wallet.
    address public immutable owner;

    /// @notice Only the owner may make the wallet act.
    error ERC1271WalletUnauthorized(address caller);

    /// @param walletOwner The owner's address.
    constructor(address walletOwner) {
        owner = walletOwner;
    }

    /// @notice Call `target` with `data` as the wallet (owner only).
    /// @param target The contract to call.
    /// @param data The calldata.
    /// @return The call's return data.
    function execute(address target, bytes calldata data) external returns (bytes memory) {
        if (msg.sender != owner) revert ERC1271WalletUnauthorized(msg.sender);
        return Address.functionCall(target, data);
    }

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32 hash, bytes calldata signature) external view virtual returns (bytes4) {
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(hash, signature);
        bool valid = error == ECDSA.RecoverError.NoError && recovered == owner;
        return valid ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
    }
}
