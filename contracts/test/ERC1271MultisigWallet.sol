// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title ERC1271MultisigWallet
/// @notice A contract wallet for tests whose signature is all of its owners' at once: their
/// 65-byte signatures of the hash, concatenated in ascending order of owner address (as a
/// Safe's are), so a signature is 65 bytes times the number of owners.
contract ERC1271MultisigWallet is IERC1271 {
    /// @notice The keys that sign for this wallet together, in ascending order.
    address[] public owners;

    /// @notice Only an owner may make the wallet act.
    error ERC1271MultisigWalletUnauthorized(address caller);
    /// @notice The owners are not given in ascending order, or are none.
    error ERC1271MultisigWalletBadOwners();

    /// @param walletOwners The owners, in ascending order of address.
    constructor(address[] memory walletOwners) {
        if (walletOwners.length == 0) revert ERC1271MultisigWalletBadOwners();
        for (uint256 i = 1; i < walletOwners.length; ++i) {
            if (walletOwners[i - 1] >= walletOwners[i]) revert ERC1271MultisigWalletBadOwners();
        }
        owners = walletOwners;
    }

    /// @notice Call `target` with `data` as the wallet (any owner).
    /// @param target The contract to call.
    /// @param data The calldata.
    /// @return The call's return data.
    function execute(address target, bytes calldata data) external returns (bytes memory) {
        bool owner = false;
        for (uint256 i = 0; i < owners.length; ++i) {
            if (owners[i] == msg.sender) owner = true;
        }
        if (!owner) revert ERC1271MultisigWalletUnauthorized(msg.sender);
        return Address.functionCall(target, data);
    }

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        uint256 count = owners.length;
        if (signature.length != 65 * count) return bytes4(0xffffffff);
        for (uint256 i = 0; i < count; ++i) {
            (address recovered, ECDSA.RecoverError error,) =
                ECDSA.tryRecoverCalldata(hash, signature[65 * i:65 * (i + 1)]);
            if (error != ECDSA.RecoverError.NoError || recovered != owners[i]) return bytes4(0xffffffff);
        }
        return IERC1271.isValidSignature.selector;
    }
}
