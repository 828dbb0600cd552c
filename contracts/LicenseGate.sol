// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {BPR} from "./BPR.sol";
import {Fund} from "./Fund.sol";
import {IBPR} from "./interfaces/IBPR.sol";
import {IPoolRegistry} from "./interfaces/IPoolRegistry.sol";

/// @title LicenseGate
/// @notice Threshold licensing (white paper §4.7) and fee licences (§3.3).
/// @dev The threshold of a tier is the BPC balance held at the tier's reference
/// address in the PoolRegistry, read at call time: the foundation moves the
/// price of a licence by moving BPC at that address. Locked BPC stays in this
/// contract; its balance always equals the sum of `lockedBpc` over live licences.
contract LicenseGate is AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Role allowed to revoke licences of expelled members.
    bytes32 public constant REVOKER_ROLE = keccak256("REVOKER_ROLE");
    /// @notice Accounting tag of licence fees paid into the Fund.
    bytes32 public constant LICENCE_FEE_SOURCE = keccak256("licence-fee");

    /// @notice The BPC token.
    IERC20 public immutable bpc;
    /// @notice The BPR licence token.
    BPR public immutable bpr;
    /// @notice The membership register.
    IPoolRegistry public immutable registry;
    /// @notice The foundation fund receiving licence fees.
    Fund public immutable fund;

    /// @notice Price of a fee licence in BPC base units (zero: not offered).
    uint256 public feeLicencePrice;
    /// @notice Term of a fee licence in seconds.
    uint64 public feeLicenceTerm;

    /// @notice A constructor argument is the zero address.
    error GateZeroAddress();
    /// @notice The caller is not an active pool member.
    error GateNotActiveMember(address account, IPoolRegistry.Status status);
    /// @notice The tier has no reference address, so it has no threshold.
    error GateTierUnconfigured(IPoolRegistry.Tier tier);
    /// @notice The amount offered is below the tier's current threshold (or zero).
    error GateBelowThreshold(address account, uint256 amount, uint256 threshold);
    /// @notice Non-profit members are licensed free and lock nothing.
    error GateUnexpectedLock(address account, uint256 amount);
    /// @notice The account already holds a live licence.
    error GateAlreadyLicensed(address account);
    /// @notice The account holds no licence.
    error GateNotLicensed(address account);
    /// @notice Fee licences end by expiry, not by release.
    error GateFeeLicenceNotReleasable(address account);
    /// @notice The account's licence is not a fee licence.
    error GateNotFeeLicence(address account);
    /// @notice Fee licences are for non-members; members use the threshold.
    error GateFeeLicenceForNonMembersOnly(address account, IPoolRegistry.Status status);
    /// @notice The foundation offers no fee licence now.
    error GateFeeLicenceUnavailable();
    /// @notice Only licences of expelled members, and free licences of members no longer
    /// non-profit, can be revoked.
    error GateNotExpelled(address account, IPoolRegistry.Status status);

    /// @notice A member locked `lockedBpc` (threshold `threshold`) and received BPR.
    /// @param holder The member.
    /// @param tier Its tier.
    /// @param lockedBpc BPC locked.
    /// @param threshold The threshold at that moment.
    event ThresholdLicenceAcquired(address indexed holder, IPoolRegistry.Tier tier, uint256 lockedBpc, uint256 threshold);
    /// @notice A holder gave its BPR back and received `returnedBpc`.
    /// @param holder The former licensee.
    /// @param returnedBpc BPC returned.
    event LicenceReleased(address indexed holder, uint256 returnedBpc);
    /// @notice A non-member paid `fee` for a fee licence valid until `expiresAt`.
    /// @param holder The licensee.
    /// @param fee BPC paid into the Fund.
    /// @param expiresAt End of term.
    event FeeLicencePurchased(address indexed holder, uint256 fee, uint64 expiresAt);
    /// @notice A fee licence was renewed until `expiresAt`.
    /// @param holder The licensee.
    /// @param fee BPC paid into the Fund.
    /// @param expiresAt New end of term.
    event FeeLicenceRenewed(address indexed holder, uint256 fee, uint64 expiresAt);
    /// @notice The licence of an expelled member was revoked; `returnedBpc` went back to it.
    /// @param holder The expelled member.
    /// @param returnedBpc BPC returned.
    event LicenceRevoked(address indexed holder, uint256 returnedBpc);
    /// @notice The foundation changed the fee licence terms.
    /// @param price BPC per term.
    /// @param term Seconds per term.
    event FeeLicenceTermsChanged(uint256 price, uint64 term);

    /// @param council The foundation council (role administrator, fee terms).
    /// @param bpcToken The BPC token.
    /// @param bprToken The BPR token (this contract needs its GATE_ROLE).
    /// @param poolRegistry The membership register.
    /// @param foundationFund The fund receiving licence fees.
    constructor(address council, IERC20 bpcToken, BPR bprToken, IPoolRegistry poolRegistry, Fund foundationFund) {
        if (
            council == address(0) || address(bpcToken) == address(0) || address(bprToken) == address(0)
                || address(poolRegistry) == address(0) || address(foundationFund) == address(0)
        ) revert GateZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, council);
        bpc = bpcToken;
        bpr = bprToken;
        registry = poolRegistry;
        fund = foundationFund;
    }

    /// @notice The BPC an account of `tier` must lock now: the balance at the tier's reference address.
    /// @param tier The tier.
    /// @return The threshold in BPC base units (zero for non-profit).
    function threshold(IPoolRegistry.Tier tier) public view returns (uint256) {
        if (tier == IPoolRegistry.Tier.NonProfit) return 0;
        address referenceAddress = registry.tierReference(tier);
        if (referenceAddress == address(0)) revert GateTierUnconfigured(tier);
        return bpc.balanceOf(referenceAddress);
    }

    /// @notice Lock `amount` BPC (at least the caller's tier threshold) and receive BPR.
    /// Non-profit members pass zero and lock nothing. Approve this contract first.
    /// @param amount BPC base units to lock.
    function acquire(uint256 amount) external nonReentrant {
        IPoolRegistry.Member memory member = registry.memberOf(msg.sender);
        if (member.status != IPoolRegistry.Status.Active) revert GateNotActiveMember(msg.sender, member.status);
        _endIfExpired(msg.sender);
        if (bpr.balanceOf(msg.sender) != 0) revert GateAlreadyLicensed(msg.sender);
        if (member.tier == IPoolRegistry.Tier.NonProfit) {
            if (amount != 0) revert GateUnexpectedLock(msg.sender, amount);
            bpr.grant(msg.sender, IBPR.LicenceKind.NonProfit, member.tier, 0, 0);
            emit ThresholdLicenceAcquired(msg.sender, member.tier, 0, 0);
            return;
        }
        uint256 required = threshold(member.tier);
        if (amount == 0 || amount < required) revert GateBelowThreshold(msg.sender, amount, required);
        bpc.safeTransferFrom(msg.sender, address(this), amount);
        bpr.grant(msg.sender, IBPR.LicenceKind.Locked, member.tier, amount, 0);
        emit ThresholdLicenceAcquired(msg.sender, member.tier, amount, required);
    }

    /// @notice Give back the caller's threshold or non-profit licence; locked BPC returns in full.
    function release() external nonReentrant {
        IBPR.Licence memory licence = bpr.licenceOf(msg.sender);
        if (licence.kind == IBPR.LicenceKind.None) revert GateNotLicensed(msg.sender);
        if (licence.kind == IBPR.LicenceKind.Fee) revert GateFeeLicenceNotReleasable(msg.sender);
        bpr.end(msg.sender);
        if (licence.lockedBpc != 0) bpc.safeTransfer(msg.sender, licence.lockedBpc);
        emit LicenceReleased(msg.sender, licence.lockedBpc);
    }

    /// @notice Buy a fee licence for `feeLicenceTerm` seconds, paying `feeLicencePrice` BPC into
    /// the Fund. For non-members only; an expired fee licence is replaced.
    function buyFeeLicence() external nonReentrant {
        uint256 price = _requireFeeLicenceOffer(msg.sender);
        _endIfExpired(msg.sender);
        if (bpr.balanceOf(msg.sender) != 0) revert GateAlreadyLicensed(msg.sender);
        uint64 expiresAt = uint64(block.timestamp) + feeLicenceTerm;
        _collectFee(msg.sender, price);
        bpr.grant(msg.sender, IBPR.LicenceKind.Fee, IPoolRegistry.Tier.NonProfit, 0, expiresAt);
        emit FeeLicencePurchased(msg.sender, price, expiresAt);
    }

    /// @notice Extend the caller's fee licence by one term from its expiry, or from now if it
    /// has already expired, paying the current price into the Fund.
    function renewFeeLicence() external nonReentrant {
        uint256 price = _requireFeeLicenceOffer(msg.sender);
        IBPR.Licence memory licence = bpr.licenceOf(msg.sender);
        if (licence.kind != IBPR.LicenceKind.Fee) revert GateNotFeeLicence(msg.sender);
        uint64 start = licence.expiresAt > block.timestamp ? licence.expiresAt : uint64(block.timestamp);
        uint64 expiresAt = start + feeLicenceTerm;
        _collectFee(msg.sender, price);
        bpr.extend(msg.sender, expiresAt);
        emit FeeLicenceRenewed(msg.sender, price, expiresAt);
    }

    /// @notice Revoke the licence of an expelled member, returning its locked BPC to it; or the
    /// free licence of a member no longer in the non-profit tier, which must lock BPC to hold one.
    /// @param holder The expelled member, or the re-tiered former non-profit.
    function revoke(address holder) external onlyRole(REVOKER_ROLE) nonReentrant {
        IPoolRegistry.Member memory member = registry.memberOf(holder);
        if (member.status != IPoolRegistry.Status.Expelled) {
            bool freeAbovePaidTier = member.tier != IPoolRegistry.Tier.NonProfit
                && bpr.licenceOf(holder).kind == IBPR.LicenceKind.NonProfit;
            if (!freeAbovePaidTier) revert GateNotExpelled(holder, member.status);
        }
        if (bpr.balanceOf(holder) == 0) revert GateNotLicensed(holder);
        IBPR.Licence memory licence = bpr.end(holder);
        if (licence.lockedBpc != 0) bpc.safeTransfer(holder, licence.lockedBpc);
        emit LicenceRevoked(holder, licence.lockedBpc);
    }

    /// @notice Set the fee licence price and term (a zero price withdraws the offer).
    /// @param price BPC base units per term.
    /// @param term Seconds per term.
    function setFeeLicenceTerms(uint256 price, uint64 term) external onlyRole(DEFAULT_ADMIN_ROLE) {
        feeLicencePrice = price;
        feeLicenceTerm = term;
        emit FeeLicenceTermsChanged(price, term);
    }

    function _requireFeeLicenceOffer(address account) private view returns (uint256 price) {
        price = feeLicencePrice;
        if (price == 0 || feeLicenceTerm == 0) revert GateFeeLicenceUnavailable();
        IPoolRegistry.Status status = registry.memberOf(account).status;
        if (status != IPoolRegistry.Status.None) revert GateFeeLicenceForNonMembersOnly(account, status);
    }

    /// @dev An expired fee licence no longer counts; ending it lets the holder acquire anew.
    function _endIfExpired(address holder) private {
        IBPR.Licence memory licence = bpr.licenceOf(holder);
        if (licence.kind == IBPR.LicenceKind.Fee && licence.expiresAt <= block.timestamp) {
            bpr.end(holder);
        }
    }

    function _collectFee(address payer, uint256 fee) private {
        bpc.safeTransferFrom(payer, address(this), fee);
        bpc.forceApprove(address(fund), fee);
        fund.deposit(bpc, fee, LICENCE_FEE_SOURCE);
    }
}
