// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title ERC1271ApprovingWallet
/// @notice A contract wallet for tests whose signatures hold only while its owner approves them:
/// a hash counts as signed (ERC-1271) when the owner's key signed it and the owner has approved
/// the hash on chain and not withdrawn the approval since. So whether the wallet signed
/// something depends on the block it is asked at. It also runs calls its owner asks for.
contract ERC1271ApprovingWallet is IERC1271 {
    /// @notice The key that signs for this wallet.
    address public immutable owner;

    /// @notice Whether the owner approves each hash now.
    mapping(bytes32 hash => bool approved) public approved;

    /// @notice Only the owner may make the wallet act.
    error ERC1271ApprovingWalletUnauthorized(address caller);

    /// @notice The owner approved or withdrew the approval of a hash.
    /// @param hash The hash.
    /// @param approval True when approved, false when withdrawn.
    event HashApproval(bytes32 indexed hash, bool approval);

    /// @param walletOwner The owner's address.
    constructor(address walletOwner) {
        owner = walletOwner;
    }

    /// @notice Approve `hash` (`approval` true) or withdraw its approval (owner only).
    /// @param hash The hash the wallet is asked about.
    /// @param approval Whether the wallet vouches for the owner's signatures of `hash` from now on.
    function setApproval(bytes32 hash, bool approval) external {
        if (msg.sender != owner) revert ERC1271ApprovingWalletUnauthorized(msg.sender);
        approved[hash] = approval;
        emit HashApproval(hash, approval);
    }

    /// @notice Call `target` with `data` as the wallet (owner only).
    /// @param target The contract to call.
    /// @param data The calldata.
    /// @return The call's return data.
    function execute(address target, bytes calldata data) external returns (bytes memory) {
        if (msg.sender != owner) revert ERC1271ApprovingWalletUnauthorized(msg.sender);
        return Address.functionCall(target, data);
    }

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(hash, signature);
        bool valid = approved[hash] && error == ECDSA.RecoverError.NoError && recovered == owner;
        return valid ? IERC1271.isValidSignature.selector : bytes4(0xffffffff);
    }
}
