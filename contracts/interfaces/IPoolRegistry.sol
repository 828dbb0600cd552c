// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title The foundation's membership register
/// @notice Members, their enterprise-size tier and status, and the reference
/// address that prices each tier's licence threshold (white paper §4.7, §5).
interface IPoolRegistry {
    /// @notice Enterprise-size tiers. NonProfit members are licensed free (§3.3).
    enum Tier {
        NonProfit,
        Small,
        Medium,
        Large
    }

    /// @notice Membership status. `None` means the address was never admitted.
    enum Status {
        None,
        Active,
        Suspended,
        Expelled
    }

    /// @notice A member's record.
    struct Member {
        Tier tier;
        Status status;
        uint64 admittedAt;
    }

    /// @notice The account is the zero address.
    error RegistryZeroAddress();
    /// @notice The account is already a member (in any status).
    error RegistryAlreadyMember(address account);
    /// @notice The account was never admitted.
    error RegistryNotMember(address account);
    /// @notice The requested status change is not allowed from the current status.
    error RegistryInvalidTransition(address account, Status from, Status to);
    /// @notice The tier already has this value for the account.
    error RegistryTierUnchanged(address account, Tier tier);

    /// @notice A member was admitted as active with `tier`.
    /// @param account The member.
    /// @param tier Its tier.
    event MemberAdmitted(address indexed account, Tier tier);
    /// @notice A member's tier changed.
    /// @param account The member.
    /// @param previousTier The tier before.
    /// @param newTier The tier after.
    event MemberTierChanged(address indexed account, Tier previousTier, Tier newTier);
    /// @notice A member's status changed (suspend, reinstate, expel).
    /// @param account The member.
    /// @param previousStatus The status before.
    /// @param newStatus The status after.
    event MemberStatusChanged(address indexed account, Status previousStatus, Status newStatus);
    /// @notice The reference address of a tier changed.
    /// @param tier The tier.
    /// @param previousReference The reference address before.
    /// @param newReference The reference address after.
    event TierReferenceChanged(Tier indexed tier, address previousReference, address newReference);

    /// @notice The member record of `account` (status None if never admitted).
    /// @param account The account.
    /// @return The member record.
    function memberOf(address account) external view returns (Member memory);

    /// @notice True when `account` is an admitted member in status Active.
    /// @param account The account.
    /// @return Whether it is an active member.
    function isActiveMember(address account) external view returns (bool);

    /// @notice The reference address whose BPC balance is the threshold of `tier`.
    /// @param tier The tier.
    /// @return The reference address (zero when unconfigured).
    function tierReference(Tier tier) external view returns (address);
}
