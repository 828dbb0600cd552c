// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {IERC5192} from "./interfaces/IERC5192.sol";
import {IBPR} from "./interfaces/IBPR.sol";
import {IPoolRegistry} from "./interfaces/IPoolRegistry.sol";

/// @title BPR — Blockchain Patent Right
/// @notice Holding one BPR licenses every patent in the pool (white paper §4.7).
/// No address holds more than one; BPR never moves between addresses (ERC-5192).
/// @dev Only the LicenseGate (GATE_ROLE) grants, extends and ends licences. The
/// one-per-address cap and the transfer ban live in the `_update` hook, the
/// single path of every mint, burn and transfer.
contract BPR is ERC721, AccessControl, IERC5192, IBPR {
    /// @notice Role of the LicenseGate.
    bytes32 public constant GATE_ROLE = keccak256("GATE_ROLE");

    uint256 private _lastTokenId;
    mapping(address holder => Licence) private _licences;

    /// @param council The account that administers roles.
    constructor(address council) ERC721("Blockchain Patent Right", "BPR") {
        _grantRole(DEFAULT_ADMIN_ROLE, council);
    }

    /// @notice Grant a licence to `holder`, minting its BPR.
    /// @param holder The licensee; must hold no BPR.
    /// @param kind How the licence was obtained.
    /// @param tier The licensee's tier when granted.
    /// @param lockedBpc BPC locked in the LicenseGate for this licence.
    /// @param expiresAt End of the term (unix seconds), zero for none.
    /// @return tokenId The new token id.
    function grant(address holder, LicenceKind kind, IPoolRegistry.Tier tier, uint256 lockedBpc, uint64 expiresAt)
        external
        onlyRole(GATE_ROLE)
        returns (uint256 tokenId)
    {
        if (kind == LicenceKind.None) revert BPRInvalidKind();
        tokenId = ++_lastTokenId;
        _safeMintLocked(holder, tokenId);
        _licences[holder] = Licence({
            tokenId: tokenId,
            kind: kind,
            tier: tier,
            expiresAt: expiresAt,
            sinceBlock: uint64(block.number),
            lockedBpc: lockedBpc
        });
        emit LicenceGranted(holder, tokenId, kind, tier, lockedBpc, expiresAt);
    }

    /// @notice Set a new end of term for `holder`'s licence.
    /// @param holder The licensee.
    /// @param expiresAt The new end of term (unix seconds).
    function extend(address holder, uint64 expiresAt) external onlyRole(GATE_ROLE) {
        Licence storage licence = _licences[holder];
        if (licence.kind == LicenceKind.None) revert BPRNoLicence(holder);
        licence.expiresAt = expiresAt;
        emit LicenceExtended(holder, licence.tokenId, expiresAt);
    }

    /// @notice End `holder`'s licence, burning its BPR.
    /// @param holder The licensee.
    /// @return licence The record as it was, so the gate can return locked BPC.
    function end(address holder) external onlyRole(GATE_ROLE) returns (Licence memory licence) {
        licence = _licences[holder];
        if (licence.kind == LicenceKind.None) revert BPRNoLicence(holder);
        delete _licences[holder];
        _burn(licence.tokenId);
        emit LicenceEnded(holder, licence.tokenId);
    }

    /// @inheritdoc IBPR
    function licenceOf(address holder) external view returns (Licence memory) {
        return _licences[holder];
    }

    /// @inheritdoc IBPR
    function isLicensed(address holder) external view returns (bool) {
        Licence storage licence = _licences[holder];
        return licence.kind != LicenceKind.None && (licence.expiresAt == 0 || licence.expiresAt > block.timestamp);
    }

    /// @inheritdoc IERC5192
    function locked(uint256 tokenId) external view returns (bool) {
        _requireOwned(tokenId);
        return true;
    }

    /// @notice Approvals are meaningless for a bound token and always revert.
    function approve(address, uint256 tokenId) public pure override {
        revert BPRNonTransferable(tokenId);
    }

    /// @notice Approvals are meaningless for a bound token and always revert.
    function setApprovalForAll(address, bool) public pure override {
        revert BPRNonTransferable(0);
    }

    /// @inheritdoc ERC721
    function supportsInterface(bytes4 interfaceId) public view override(ERC721, AccessControl) returns (bool) {
        return interfaceId == type(IERC5192).interfaceId || super.supportsInterface(interfaceId);
    }

    /// @dev Every mint, burn and transfer passes here: transfers revert, and a
    /// mint to an address that already holds a BPR reverts.
    function _update(address to, uint256 tokenId, address auth) internal override returns (address) {
        address from = _ownerOf(tokenId);
        if (from != address(0) && to != address(0)) revert BPRNonTransferable(tokenId);
        if (to != address(0) && balanceOf(to) != 0) revert BPRBalanceCapExceeded(to);
        return super._update(to, tokenId, auth);
    }

    function _safeMintLocked(address holder, uint256 tokenId) private {
        // Plain _mint: a licence is a right of the holder, whether or not it is a
        // contract that implements IERC721Receiver.
        _mint(holder, tokenId);
        emit Locked(tokenId);
    }
}
