// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ERC1271Wallet} from "./ERC1271Wallet.sol";

/// @title ERC1271GasGuardedWallet
/// @notice A contract wallet for tests whose check needs `requiredGas` (as a passkey wallet
/// verifying P-256 in Solidity might), and that refuses at once when given less rather than run
/// out halfway. Given its whole `Vault.WALLET_CHECK_GAS` it answers as `ERC1271Wallet` does (its
/// owner's key); given less, it says no while leaving its caller nearly all of its gas.
contract ERC1271GasGuardedWallet is ERC1271Wallet {
    /// @notice The gas below which the wallet refuses without looking at the signature.
    uint256 public immutable requiredGas;

    /// @param walletOwner The owner's address.
    /// @param gasNeeded The gas below which the wallet refuses.
    constructor(address walletOwner, uint256 gasNeeded) ERC1271Wallet(walletOwner) {
        requiredGas = gasNeeded;
    }

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32 hash, bytes calldata signature) external view override returns (bytes4) {
        if (gasleft() < requiredGas) return bytes4(0xffffffff);
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(hash, signature);
        bool valid = error == ECDSA.RecoverError.NoError && recovered == owner;
        return valid ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
    }
}
