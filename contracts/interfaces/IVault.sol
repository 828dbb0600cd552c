// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {LibOrder} from "../libraries/LibOrder.sol";

/// @title The exchange Vault
/// @notice Custody of BPC and the quote token for trading (white paper §3.4,
/// §4.2): deposits, operator-co-signed withdrawals, an escape hatch, and
/// batched settlement of EIP-712 signed orders matched off chain.
interface IVault {
    /// @notice One match between two orders of a batch, given by their index in the batch's order list.
    /// @dev Both orders must be on opposite sides. `price` must lie within both
    /// limits; each fee rate within its order's cap. Fees are paid in the quote token.
    struct Fill {
        uint32 makerIndex;
        uint32 takerIndex;
        uint16 makerFeeBps;
        uint16 takerFeeBps;
        uint256 baseAmount;
        uint256 price;
    }

    /// @notice Why `settle` skipped a fill: its maker withdrew one of the fill's orders on chain.
    /// @dev Only what the order's own maker can do after the match; anything else wrong with a
    /// batch (expired order, inactive member, price, fee, amounts) reverts it. `None` (0) is
    /// never reported.
    enum SkipReason {
        None,
        /// The maker cancelled the order (`cancelOrder`); its filled amount stays as it was.
        OrderCancelled,
        /// The maker raised its minimum valid nonce above the order's (`cancelOrdersBelowNonce`).
        OrderNonceCancelled,
        /// The maker requested an exit (`requestExit`) and trades no more until `cancelExit`.
        AccountExiting,
        /// The signature does not recover to the maker, and the maker's `isValidSignature`
        /// (ERC-1271), given its whole `WALLET_CHECK_GAS`, does not accept it: a contract wallet
        /// that withdrew its approval, or an account that cleared its EIP-7702 delegation (an
        /// account without code answers nothing, a refusal).
        WalletRefused
    }

    /// @notice An account's state as `accountOf` reports it: both balances, its exit time and nonce-floor flag.
    /// @dev Stored packed in one word (LibAccount); 104-bit balances hold 2e31 base units
    /// (2e13 whole tokens of 18 decimals).
    struct Account {
        uint104 baseBalance;
        uint104 quoteBalance;
        uint40 exitAvailableAt;
        bool hasNonceFloor;
    }

    /// @notice A constructor argument is the zero address.
    error VaultZeroAddress();
    /// @notice The base and the quote token are the same token.
    error VaultSameToken(address token);
    /// @notice The token is neither the base nor the quote token of the Vault.
    error VaultUnsupportedToken(address token);
    /// @notice A deposit or withdrawal of zero, or a deposit of which nothing arrived.
    error VaultZeroAmount();
    /// @notice `account` holds `balance` of `token`, less than the `needed` amount.
    error VaultInsufficientBalance(address account, address token, uint256 balance, uint256 needed);
    /// @notice The order list and the signature list have different lengths.
    error VaultLengthMismatch(uint256 orders, uint256 signatures);
    /// @notice Fill `fillIndex` refers to an order index outside the batch's order list.
    error VaultUnknownOrderIndex(uint256 fillIndex, uint256 orderIndex);
    /// @notice The order trades a pair other than this Vault's base and quote token.
    error VaultUnsupportedMarket(bytes32 orderHash, address baseToken, address quoteToken);
    /// @notice The order expired at `expiry`.
    error VaultOrderExpired(bytes32 orderHash, uint64 expiry);
    /// @notice The signature does not recover to `maker` for this order in this Vault's domain, and
    /// `maker` has no code to ask (ERC-1271).
    /// @dev Raised by no function of this Vault: `settle` skips the fills of an order whose
    /// signature neither recovers to its maker nor is accepted by it through ERC-1271
    /// (`SkipReason.WalletRefused`), code or none, since with EIP-7702 an account without code
    /// now may have had it when it signed. A Vault deployed before raised it from `settle`; the
    /// error stays so that the service still reads such a revert.
    error VaultInvalidSignature(bytes32 orderHash, address maker);
    /// @notice The account is not an active pool member.
    error VaultNotActiveMember(address account);
    /// @notice The maker cancelled the order already (`cancelOrder` only: `settle` skips the
    /// fills of a cancelled order, see `FillSkipped`).
    error VaultOrderCancelled(bytes32 orderHash);
    /// @notice The fill would bring the order's filled amount to `filled`, above its `amount`.
    error VaultOrderOverfilled(bytes32 orderHash, uint256 filled, uint256 amount);
    /// @notice The maker and the taker order are on the same side.
    error VaultSameSide(bytes32 makerOrderHash, bytes32 takerOrderHash);
    /// @notice The fill price is beyond the order's limit price.
    error VaultPriceOutsideLimit(bytes32 orderHash, uint256 price, uint256 limit);
    /// @notice The fee rate applied to the order exceeds its cap (the order's maxFeeBps, at most 10,000).
    error VaultFeeAboveCap(bytes32 orderHash, uint256 feeBps, uint256 maxFeeBps);
    /// @notice The fill's quote amount rounds to zero.
    error VaultFillTooSmall(uint256 baseAmount, uint256 price);
    /// @notice Only the maker may cancel its order.
    error VaultNotOrderMaker(bytes32 orderHash, address maker, address caller);
    /// @notice A new minimum valid nonce must be above the current one.
    error VaultNonceNotIncreasing(address account, uint64 current, uint64 requested);
    /// @notice The withdrawal authorisation expired at `expiry`.
    error VaultWithdrawalExpired(uint64 expiry);
    /// @notice The withdrawal authorisation is not signed by an operator (`signer` recovered, zero if none).
    error VaultInvalidOperatorSignature(bytes32 digest, address signer);
    /// @notice The withdrawal authorisation's nonce was already used by `account`.
    error VaultWithdrawalNonceUsed(address account, uint64 nonce);
    /// @notice The account has already requested an exit.
    error VaultExitAlreadyRequested(address account, uint256 availableAt);
    /// @notice The account has not requested an exit.
    error VaultExitNotRequested(address account);
    /// @notice The exit delay has not passed yet.
    error VaultExitNotReady(address account, uint256 availableAt, uint256 timestamp);
    /// @notice The exit delay exceeds the maximum.
    error VaultExitDelayTooLong(uint256 delay, uint256 maxDelay);
    /// @notice Neither token would transfer the account's balance out: nothing left the Vault.
    error VaultExitTransferFailed(address account);
    /// @notice The transaction left `wallet` less gas than `WALLET_CHECK_GAS` to check a signature
    /// and the check failed: the transaction was short of gas, the order may be valid.
    error VaultWalletCheckOutOfGas(address wallet);

    /// @notice `account` deposited `amount` of `token` (the amount the Vault actually received).
    /// @param account The depositor, credited.
    /// @param token The token.
    /// @param amount Base units credited.
    event Deposited(address indexed account, address indexed token, uint256 amount);
    /// @notice `account` withdrew `amount` of `token` under an operator authorisation.
    /// @param account The account, debited and paid.
    /// @param token The token.
    /// @param amount Base units.
    /// @param nonce The authorisation's nonce.
    event Withdrawn(address indexed account, address indexed token, uint256 amount, uint64 nonce);
    /// @notice `account` requested an exit; it stops trading and may exit from `availableAt`.
    /// @param account The account.
    /// @param availableAt The first timestamp at which `exit` succeeds.
    event ExitRequested(address indexed account, uint256 availableAt);
    /// @notice `account` withdrew its request to exit and may trade again.
    /// @param account The account.
    event ExitCancelled(address indexed account);
    /// @notice `account` withdrew its whole balances without the operator.
    /// @param account The account.
    /// @param baseAmount Base-token units paid out.
    /// @param quoteAmount Quote-token units paid out.
    event Exited(address indexed account, uint256 baseAmount, uint256 quoteAmount);
    /// @notice The maker cancelled an order.
    /// @param orderHash The order's EIP-712 hash.
    /// @param maker The maker.
    event OrderCancelled(bytes32 indexed orderHash, address indexed maker);
    /// @notice The maker cancelled every order with a nonce below `minValidNonce`.
    /// @param maker The maker.
    /// @param minValidNonce The smallest nonce still valid.
    event NonceCancelled(address indexed maker, uint64 minValidNonce);
    /// @notice One fill was settled.
    /// @param makerOrderHash The maker order's EIP-712 hash.
    /// @param takerOrderHash The taker order's EIP-712 hash.
    /// @param buyer The buying account (pays quoteAmount + buyerFee, receives baseAmount).
    /// @param seller The selling account (gives baseAmount, receives quoteAmount - sellerFee).
    /// @param baseAmount Base units traded.
    /// @param quoteAmount Quote units traded, before fees.
    /// @param buyerFee The buyer's fee in quote units.
    /// @param sellerFee The seller's fee in quote units.
    event Trade(
        bytes32 indexed makerOrderHash,
        bytes32 indexed takerOrderHash,
        address buyer,
        address seller,
        uint256 baseAmount,
        uint256 quoteAmount,
        uint256 buyerFee,
        uint256 sellerFee
    );
    /// @notice Fill `fillIndex` of a batch was skipped: the maker of `orderHash`, one of its two
    /// orders, withdrew that order on chain before the batch ran (or no longer accepts its
    /// signature through ERC-1271).
    /// @dev The batch goes on without the fill: no balance moves for it, no filled amount is
    /// recorded for either order, it pays no fee (not in `FeesCollected`) and it has no `Trade`.
    /// Every fill of the batch that uses a withdrawn order is skipped, each with its own event.
    /// When both orders are withdrawn, `orderHash` is the maker order's.
    /// @param fillIndex The fill's position in the `fills` argument of `settle`, from 0.
    /// @param orderHash The withdrawn order's EIP-712 hash.
    /// @param reason How its maker withdrew it.
    event FillSkipped(uint256 indexed fillIndex, bytes32 indexed orderHash, SkipReason reason);
    /// @notice The fees of a settlement batch were transferred to the Fund.
    /// @dev `amount` is what left the Vault (the sum of the batch's fees, as its `Trade` events
    /// state them); `received` is what the Fund's balance grew by, less than `amount` when the
    /// quote token takes a fee on transfer.
    /// @param token The fee token (the quote token).
    /// @param amount Base units sent by the Vault.
    /// @param received Base units that reached the Fund.
    event FeesCollected(address indexed token, uint256 amount, uint256 received);
    /// @notice The council changed the exit delay (exits already requested keep theirs).
    /// @param previousDelay Seconds before.
    /// @param newDelay Seconds now.
    event ExitDelayChanged(uint256 previousDelay, uint256 newDelay);

    /// @notice Deposit `amount` of `token` (base or quote) from the caller, who approved the Vault first.
    /// @dev Credits what the Vault actually received; reverts VaultZeroAmount if that is nothing.
    /// @param token The base or the quote token.
    /// @param amount Base units to pull.
    function deposit(address token, uint256 amount) external;

    /// @notice Withdraw at once under an operator's EIP-712 withdrawal authorisation for the caller.
    /// @param token The token.
    /// @param amount Base units.
    /// @param nonce The authorisation's nonce (single use per account).
    /// @param expiry First timestamp at which the authorisation is no longer valid.
    /// @param operatorSignature An OPERATOR_ROLE holder's signature of the authorisation.
    function withdraw(address token, uint256 amount, uint64 nonce, uint64 expiry, bytes calldata operatorSignature)
        external;

    /// @notice Start the escape hatch: the caller stops trading at once and may exit after the exit delay.
    function requestExit() external;

    /// @notice Leave exit mode: the caller may trade again.
    function cancelExit() external;

    /// @notice After the exit delay, withdraw the caller's whole balances without the operator.
    /// @dev The account stays in exit mode (no trading) until it calls `cancelExit`. A token that
    /// refuses the transfer (paused, blocking the account) keeps that balance in the Vault, and
    /// `Exited` names what did leave; a later `exit` tries again. Reverts
    /// `VaultExitTransferFailed` when there was something to pay and nothing could be.
    function exit() external;

    /// @notice Settle a batch of fills (operator only); fees go to the Fund in one transfer.
    /// @dev Atomic for every error: an expired order, an inactive member, a price, fee or amount
    /// outside what the orders allow reverts the whole batch. Not for what a maker did to its own
    /// order on chain since the match (cancelled it, raised its nonce floor past it, requested an
    /// exit, or stopped accepting its signature through ERC-1271, code or none, see
    /// `SkipReason.WalletRefused`): each fill using such an order is skipped with
    /// `FillSkipped` and the others settle. A wallet's refusal counts only when the transaction
    /// had the gas to give it its whole `WALLET_CHECK_GAS`; with less, the batch reverts
    /// (`VaultWalletCheckOutOfGas`). `FeesCollected` states the fees sent and what the Fund
    /// received of them.
    /// @param orders Every order the fills refer to, each once.
    /// @param signatures The makers' signatures, one per order.
    /// @param fills The fills, in order.
    function settle(LibOrder.Order[] calldata orders, bytes[] calldata signatures, Fill[] calldata fills) external;

    /// @notice Cancel one of the caller's orders.
    /// @param order The order (the caller must be its maker).
    function cancelOrder(LibOrder.Order calldata order) external;

    /// @notice Cancel every order of the caller with a nonce below `minValidNonce`.
    /// @param minValidNonce The new minimum valid nonce, above the current one.
    function cancelOrdersBelowNonce(uint64 minValidNonce) external;

    /// @notice Set the exit delay for future exit requests (council only).
    /// @param delay Seconds, at most MAX_EXIT_DELAY.
    function setExitDelay(uint256 delay) external;

    /// @notice The EIP-712 hash (digest) of `order` in this Vault's domain: what the maker signs.
    /// @param order The order.
    /// @return The order hash.
    function hashOrder(LibOrder.Order calldata order) external view returns (bytes32);

    /// @notice The EIP-712 hash (digest) of a withdrawal authorisation in this Vault's domain.
    /// @param account The account.
    /// @param token The token.
    /// @param amount Base units.
    /// @param nonce The nonce.
    /// @param expiry The expiry.
    /// @return The digest the operator signs.
    function hashWithdrawal(address account, address token, uint256 amount, uint64 nonce, uint64 expiry)
        external
        view
        returns (bytes32);

    /// @notice The EIP-712 domain separator of this Vault on this chain.
    /// @return The domain separator.
    function domainSeparator() external view returns (bytes32);

    /// @notice The balance of `account` in `token` (base or quote).
    /// @param account The account.
    /// @param token The token.
    /// @return Base units.
    function balanceOf(address account, address token) external view returns (uint256);

    /// @notice The full state of `account`.
    /// @param account The account.
    /// @return The account record.
    function accountOf(address account) external view returns (Account memory);

    /// @notice How much of an order is filled, and whether it was cancelled.
    /// @param orderHash The order hash.
    /// @return filled Base units filled (kept when the order is cancelled).
    /// @return cancelled True when the maker cancelled it.
    function orderState(bytes32 orderHash) external view returns (uint256 filled, bool cancelled);

    /// @notice The smallest nonce of `account`'s orders still valid.
    /// @param account The maker.
    /// @return The minimum valid nonce.
    function minValidNonce(address account) external view returns (uint64);

    /// @notice Whether `account` has used withdrawal authorisation nonce `nonce`.
    /// @param account The account.
    /// @param nonce The nonce.
    /// @return True when used.
    function isWithdrawalNonceUsed(address account, uint64 nonce) external view returns (bool);
}
