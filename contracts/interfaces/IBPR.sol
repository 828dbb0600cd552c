// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IPoolRegistry} from "./IPoolRegistry.sol";

/// @title The licence token's records, errors and events
/// @notice Shared by BPR and its readers: how a licence was obtained and when it ends.
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
    /// @param holder The licensee.
    /// @param tokenId Its BPR token.
    /// @param kind How it was obtained.
    /// @param tier The licensee's tier (zero for fee licences).
    /// @param lockedBpc BPC locked for it.
    /// @param expiresAt End of term, zero for none.
    event LicenceGranted(
        address indexed holder, uint256 indexed tokenId, LicenceKind kind, IPoolRegistry.Tier tier, uint256 lockedBpc, uint64 expiresAt
    );
    /// @notice A fee licence's term changed.
    /// @param holder The licensee.
    /// @param tokenId Its BPR token.
    /// @param expiresAt The new end of term.
    event LicenceExtended(address indexed holder, uint256 indexed tokenId, uint64 expiresAt);
    /// @notice A licence ended (released, revoked or replaced).
    /// @param holder The former licensee.
    /// @param tokenId The burnt BPR token.
    event LicenceEnded(address indexed holder, uint256 indexed tokenId);

    /// @notice The licence record of `holder` (kind None when it holds no BPR).
    /// @param holder The account.
    /// @return The licence record.
    function licenceOf(address holder) external view returns (Licence memory);

    /// @notice True when `holder` holds a BPR that has not expired.
    /// @param holder The account.
    /// @return Whether it is licensed now.
    function isLicensed(address holder) external view returns (bool);
}
