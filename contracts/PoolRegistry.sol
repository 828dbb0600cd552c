// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IPoolRegistry} from "./interfaces/IPoolRegistry.sol";

/// @title PoolRegistry
/// @notice The foundation's register of pool members (white paper §5).
/// @dev Status moves: None -> Active (admit); Active <-> Suspended; Active or
/// Suspended -> Expelled (final). The council (DEFAULT_ADMIN_ROLE) grants roles
/// and sets tier reference addresses; the registrar admits, re-tiers, suspends,
/// reinstates and expels.
contract PoolRegistry is AccessControl, IPoolRegistry {
    /// @notice Role that manages membership records.
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");

    mapping(address account => Member) private _members;
    mapping(Tier tier => address) private _tierReferences;

    /// @param council The foundation council: role administrator and tier configurator.
    constructor(address council) {
        if (council == address(0)) revert RegistryZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, council);
    }

    /// @notice Admit `account` as an active member of `tier`.
    /// @param account The member's wallet.
    /// @param tier The enterprise-size tier approved by the foundation.
    function admit(address account, Tier tier) external onlyRole(REGISTRAR_ROLE) {
        if (account == address(0)) revert RegistryZeroAddress();
        Member storage member = _members[account];
        if (member.status != Status.None) revert RegistryAlreadyMember(account);
        member.tier = tier;
        member.status = Status.Active;
        member.admittedAt = uint64(block.timestamp);
        emit MemberAdmitted(account, tier);
    }

    /// @notice Move a member (not expelled) to another tier.
    /// @param account The member.
    /// @param tier The new tier.
    function setTier(address account, Tier tier) external onlyRole(REGISTRAR_ROLE) {
        Member storage member = _existing(account);
        if (member.status == Status.Expelled) {
            revert RegistryInvalidTransition(account, Status.Expelled, Status.Expelled);
        }
        Tier previous = member.tier;
        if (previous == tier) revert RegistryTierUnchanged(account, tier);
        member.tier = tier;
        emit MemberTierChanged(account, previous, tier);
    }

    /// @notice Suspend an active member: it can no longer acquire licences or trade.
    /// @param account The member.
    function suspend(address account) external onlyRole(REGISTRAR_ROLE) {
        _transition(account, Status.Active, Status.Suspended);
    }

    /// @notice Reinstate a suspended member.
    /// @param account The member.
    function reinstate(address account) external onlyRole(REGISTRAR_ROLE) {
        _transition(account, Status.Suspended, Status.Active);
    }

    /// @notice Expel an active or suspended member. Final; lets the LicenseGate revoke its licence.
    /// @param account The member.
    function expel(address account) external onlyRole(REGISTRAR_ROLE) {
        Member storage member = _existing(account);
        Status previous = member.status;
        if (previous == Status.Expelled) revert RegistryInvalidTransition(account, previous, Status.Expelled);
        member.status = Status.Expelled;
        emit MemberStatusChanged(account, previous, Status.Expelled);
    }

    /// @notice Set the reference address whose BPC balance is the licence threshold of `tier`.
    /// @param tier The tier.
    /// @param referenceAddress The reference address (zero leaves the tier unconfigured).
    function setTierReference(Tier tier, address referenceAddress) external onlyRole(DEFAULT_ADMIN_ROLE) {
        address previous = _tierReferences[tier];
        _tierReferences[tier] = referenceAddress;
        emit TierReferenceChanged(tier, previous, referenceAddress);
    }

    /// @inheritdoc IPoolRegistry
    function memberOf(address account) external view returns (Member memory) {
        return _members[account];
    }

    /// @inheritdoc IPoolRegistry
    function isActiveMember(address account) external view returns (bool) {
        return _members[account].status == Status.Active;
    }

    /// @inheritdoc IPoolRegistry
    function tierReference(Tier tier) external view returns (address) {
        return _tierReferences[tier];
    }

    function _existing(address account) private view returns (Member storage member) {
        member = _members[account];
        if (member.status == Status.None) revert RegistryNotMember(account);
    }

    function _transition(address account, Status from, Status to) private {
        Member storage member = _existing(account);
        if (member.status != from) revert RegistryInvalidTransition(account, member.status, to);
        member.status = to;
        emit MemberStatusChanged(account, from, to);
    }
}
