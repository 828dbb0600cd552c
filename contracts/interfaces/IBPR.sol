// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IPoolRegistry} from "./IPoolRegistry.sol";

/// @title The licence token's records, errors and events
interface IBPR {
    /// @notice How a licence was obtained.
    enum LicenceKind {
        None,
        Locked,
        NonProfit,
        Fee
    }

    /// @notice The record kept with every BPR.
    /// @dev `expiresAt` is zero for licences without a term (locked, non-profit).
    struct Licence {
        uint256 tokenId;
        LicenceKind kind;
        IPoolRegistry.Tier tier;
        uint64 expiresAt;
        uint64 sinceBlock;
        uint256 lockedBpc;
    }

    /// @notice BPR cannot be transferred or approved; it is bound to its holder (ERC-5192).
    error BPRNonTransferable(uint256 tokenId);
    /// @notice An address may hold at most one BPR.
    error BPRBalanceCapExceeded(address account);
    /// @notice The account holds no BPR.
    error BPRNoLicence(address account);
    /// @notice A grant with kind None.
    error BPRInvalidKind();

    /// @notice A licence was granted to `holder`.
    event LicenceGranted(
        address indexed holder, uint256 indexed tokenId, LicenceKind kind, IPoolRegistry.Tier tier, uint256 lockedBpc, uint64 expiresAt
    );
    /// @notice A fee licence's term changed.
    event LicenceExtended(address indexed holder, uint256 indexed tokenId, uint64 expiresAt);
    /// @notice A licence ended (released, revoked or replaced).
    event LicenceEnded(address indexed holder, uint256 indexed tokenId);

    /// @notice The licence record of `holder` (kind None when it holds no BPR).
    function licenceOf(address holder) external view returns (Licence memory);

    /// @notice True when `holder` holds a BPR that has not expired.
    function isLicensed(address holder) external view returns (bool);
}
