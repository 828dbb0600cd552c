// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IPoolRegistry} from "./interfaces/IPoolRegistry.sol";
import {IVault} from "./interfaces/IVault.sol";
import {LibOrder} from "./libraries/LibOrder.sol";
import {LibWithdrawal} from "./libraries/LibWithdrawal.sol";

/// @title Vault
/// @notice Custody and settlement of BPC trading (white paper §3.4, §4.2):
/// members deposit BPC (base) and a stablecoin (quote), sign EIP-712 orders,
/// and the operator settles matched fills in batches; fees go to the Fund.
/// @dev Invariant: for each token, the sum of all account balances equals the
/// Vault's balance of that token (fees leave for the Fund in the same call).
/// Price and fee arithmetic: see LibOrder. Each account is one storage slot
/// (both balances, exit time, nonce-floor flag), so settling against a maker
/// touches one cold account slot; order state (filled amount and cancellation
/// flag) is one slot per order hash.
contract Vault is IVault, AccessControl, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using LibOrder for LibOrder.Order;

    /// @notice Role that settles batches and co-signs instant withdrawals.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice Upper bound of the exit delay, so the council cannot lock funds away.
    uint256 public constant MAX_EXIT_DELAY = 30 days;

    /// @dev Bit 255 of an order's state marks it cancelled; the low bits hold the filled amount,
    /// which cannot reach 2^255 because every fill is bounded by a 104-bit balance.
    uint256 private constant _CANCELLED_FLAG = 1 << 255;

    /// @dev A fill resolved against its orders: who buys, who sells, on which fee terms.
    struct Match {
        bytes32 makerHash;
        bytes32 takerHash;
        address buyer;
        address seller;
        uint256 buyFeeBps;
        uint256 buyMaxFeeBps;
        uint256 sellFeeBps;
        uint256 sellMaxFeeBps;
    }

    /// @notice The base token (BPC).
    IERC20 public immutable baseToken;
    /// @notice The quote token (a stablecoin).
    IERC20 public immutable quoteToken;
    /// @notice The membership register: only active members trade.
    IPoolRegistry public immutable registry;
    /// @notice The foundation fund receiving trading fees.
    address public immutable fund;

    /// @notice Seconds between an exit request and the exit.
    uint256 public exitDelay;

    mapping(address account => Account) private _accounts;
    mapping(address account => uint64) private _minValidNonces;
    mapping(bytes32 orderHash => uint256 state) private _orderStates;
    mapping(address account => mapping(uint256 word => uint256 bits)) private _withdrawalNonces;

    /// @param council The foundation council: role administrator, sets the exit delay.
    /// @param base The base token (BPC).
    /// @param quote The quote token.
    /// @param poolRegistry The membership register.
    /// @param feeRecipient The Fund.
    /// @param initialExitDelay Seconds between an exit request and the exit.
    constructor(
        address council,
        IERC20 base,
        IERC20 quote,
        IPoolRegistry poolRegistry,
        address feeRecipient,
        uint256 initialExitDelay
    ) EIP712("BPC Vault", "1") {
        if (
            council == address(0) || address(base) == address(0) || address(quote) == address(0)
                || address(poolRegistry) == address(0) || feeRecipient == address(0)
        ) revert VaultZeroAddress();
        if (base == quote) revert VaultSameToken(address(base));
        _grantRole(DEFAULT_ADMIN_ROLE, council);
        baseToken = base;
        quoteToken = quote;
        registry = poolRegistry;
        fund = feeRecipient;
        _setExitDelay(initialExitDelay);
    }

    // ---------------------------------------------------------------- custody

    /// @inheritdoc IVault
    function deposit(address token, uint256 amount) external nonReentrant {
        if (amount == 0) revert VaultZeroAmount();
        bool isBase = _isBase(token);
        IERC20 asset = IERC20(token);
        uint256 before = asset.balanceOf(address(this));
        asset.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = asset.balanceOf(address(this)) - before;
        Account storage account = _accounts[msg.sender];
        if (isBase) {
            account.baseBalance = SafeCast.toUint104(account.baseBalance + received);
        } else {
            account.quoteBalance = SafeCast.toUint104(account.quoteBalance + received);
        }
        emit Deposited(msg.sender, token, received);
    }

    /// @inheritdoc IVault
    function withdraw(address token, uint256 amount, uint64 nonce, uint64 expiry, bytes calldata operatorSignature)
        external
        nonReentrant
    {
        if (amount == 0) revert VaultZeroAmount();
        if (block.timestamp >= expiry) revert VaultWithdrawalExpired(expiry);
        bytes32 digest = _hashTypedDataV4(LibWithdrawal.hash(msg.sender, token, amount, nonce, expiry));
        (address signer, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(digest, operatorSignature);
        if (error != ECDSA.RecoverError.NoError || !hasRole(OPERATOR_ROLE, signer)) {
            revert VaultInvalidOperatorSignature(digest, signer);
        }
        _useWithdrawalNonce(msg.sender, nonce);
        _debit(msg.sender, token, amount);
        IERC20(token).safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, token, amount, nonce);
    }

    /// @inheritdoc IVault
    function requestExit() external {
        Account storage account = _accounts[msg.sender];
        uint256 availableAt = account.exitAvailableAt;
        if (availableAt != 0) revert VaultExitAlreadyRequested(msg.sender, availableAt);
        availableAt = block.timestamp + exitDelay;
        account.exitAvailableAt = SafeCast.toUint40(availableAt);
        emit ExitRequested(msg.sender, availableAt);
    }

    /// @inheritdoc IVault
    function cancelExit() external {
        Account storage account = _accounts[msg.sender];
        if (account.exitAvailableAt == 0) revert VaultExitNotRequested(msg.sender);
        account.exitAvailableAt = 0;
        emit ExitCancelled(msg.sender);
    }

    /// @inheritdoc IVault
    function exit() external nonReentrant {
        Account memory account = _accounts[msg.sender];
        if (account.exitAvailableAt == 0) revert VaultExitNotRequested(msg.sender);
        if (block.timestamp < account.exitAvailableAt) {
            revert VaultExitNotReady(msg.sender, account.exitAvailableAt, block.timestamp);
        }
        _accounts[msg.sender] = Account({
            baseBalance: 0,
            quoteBalance: 0,
            exitAvailableAt: account.exitAvailableAt,
            hasNonceFloor: account.hasNonceFloor
        });
        if (account.baseBalance != 0) baseToken.safeTransfer(msg.sender, account.baseBalance);
        if (account.quoteBalance != 0) quoteToken.safeTransfer(msg.sender, account.quoteBalance);
        emit Exited(msg.sender, account.baseBalance, account.quoteBalance);
    }

    // ---------------------------------------------------------------- orders

    /// @inheritdoc IVault
    function cancelOrder(LibOrder.Order calldata order) external {
        bytes32 orderHash = _hashTypedDataV4(order.hash());
        if (order.maker != msg.sender) revert VaultNotOrderMaker(orderHash, order.maker, msg.sender);
        uint256 state = _orderStates[orderHash];
        if (state & _CANCELLED_FLAG != 0) revert VaultOrderCancelled(orderHash);
        _orderStates[orderHash] = state | _CANCELLED_FLAG;
        emit OrderCancelled(orderHash, msg.sender);
    }

    /// @inheritdoc IVault
    function cancelOrdersBelowNonce(uint64 newMinValidNonce) external {
        uint64 current = _minValidNonces[msg.sender];
        if (newMinValidNonce <= current) revert VaultNonceNotIncreasing(msg.sender, current, newMinValidNonce);
        _minValidNonces[msg.sender] = newMinValidNonce;
        _accounts[msg.sender].hasNonceFloor = true;
        emit NonceCancelled(msg.sender, newMinValidNonce);
    }

    /// @inheritdoc IVault
    function settle(LibOrder.Order[] calldata orders, bytes[] calldata signatures, Fill[] calldata fills)
        external
        nonReentrant
        onlyRole(OPERATOR_ROLE)
    {
        if (orders.length != signatures.length) revert VaultLengthMismatch(orders.length, signatures.length);
        bytes32[] memory hashes = new bytes32[](orders.length);
        for (uint256 i = 0; i < orders.length; ++i) {
            hashes[i] = _validateOrder(orders[i], signatures[i]);
        }
        uint256 fees = 0;
        for (uint256 i = 0; i < fills.length; ++i) {
            fees += _settleFill(orders, hashes, fills[i], i);
        }
        if (fees != 0) {
            quoteToken.safeTransfer(fund, fees);
            emit FeesCollected(address(quoteToken), fees);
        }
    }

    // ---------------------------------------------------------------- administration

    /// @inheritdoc IVault
    function setExitDelay(uint256 delay) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setExitDelay(delay);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IVault
    function hashOrder(LibOrder.Order calldata order) external view returns (bytes32) {
        return _hashTypedDataV4(order.hash());
    }

    /// @inheritdoc IVault
    function hashWithdrawal(address account, address token, uint256 amount, uint64 nonce, uint64 expiry)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(LibWithdrawal.hash(account, token, amount, nonce, expiry));
    }

    /// @inheritdoc IVault
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @inheritdoc IVault
    function balanceOf(address account, address token) external view returns (uint256) {
        return _isBase(token) ? _accounts[account].baseBalance : _accounts[account].quoteBalance;
    }

    /// @inheritdoc IVault
    function accountOf(address account) external view returns (Account memory) {
        return _accounts[account];
    }

    /// @inheritdoc IVault
    function orderState(bytes32 orderHash) external view returns (uint256 filled, bool cancelled) {
        uint256 state = _orderStates[orderHash];
        return (state & ~_CANCELLED_FLAG, state & _CANCELLED_FLAG != 0);
    }

    /// @inheritdoc IVault
    function minValidNonce(address account) external view returns (uint64) {
        return _minValidNonces[account];
    }

    /// @inheritdoc IVault
    function isWithdrawalNonceUsed(address account, uint64 nonce) external view returns (bool) {
        return _withdrawalNonces[account][nonce >> 8] & (1 << (nonce & 0xff)) != 0;
    }

    // ---------------------------------------------------------------- internals

    /// @dev Checks everything about an order that does not depend on a fill; returns its hash.
    function _validateOrder(LibOrder.Order calldata order, bytes calldata signature) private view returns (bytes32) {
        bytes32 orderHash = _hashTypedDataV4(order.hash());
        if (order.baseToken != address(baseToken) || order.quoteToken != address(quoteToken)) {
            revert VaultUnsupportedMarket(orderHash, order.baseToken, order.quoteToken);
        }
        if (block.timestamp >= order.expiry) revert VaultOrderExpired(orderHash, order.expiry);
        address maker = order.maker;
        Account storage account = _accounts[maker];
        if (account.exitAvailableAt != 0) revert VaultAccountExiting(maker);
        if (account.hasNonceFloor) {
            uint64 floor = _minValidNonces[maker];
            if (order.nonce < floor) revert VaultOrderNonceCancelled(orderHash, order.nonce, floor);
        }
        if (!registry.isActiveMember(maker)) revert VaultNotActiveMember(maker);
        if (!_isValidSignature(maker, orderHash, signature)) revert VaultInvalidSignature(orderHash, maker);
        return orderHash;
    }

    /// @dev ECDSA first: an address whose key signed is its owner, whether or not it has code,
    /// and skipping the code-size probe saves a cold account access per maker. Contract
    /// wallets whose key is unknown fall through to ERC-1271.
    function _isValidSignature(address signer, bytes32 digest, bytes calldata signature)
        private
        view
        returns (bool)
    {
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (error == ECDSA.RecoverError.NoError && recovered == signer) return true;
        return SignatureChecker.isValidERC1271SignatureNowCalldata(signer, digest, signature);
    }

    /// @dev Settles one fill and returns the fees it owes the Fund.
    function _settleFill(
        LibOrder.Order[] calldata orders,
        bytes32[] memory hashes,
        Fill calldata fill,
        uint256 fillIndex
    ) private returns (uint256) {
        Match memory matched = _match(orders, hashes, fill, fillIndex);
        LibOrder.Amounts memory amounts = LibOrder.settlementAmounts(
            fill.baseAmount, fill.price, matched.buyFeeBps, matched.buyMaxFeeBps, matched.sellFeeBps,
            matched.sellMaxFeeBps
        );
        if (amounts.quote == 0) revert VaultFillTooSmall(fill.baseAmount, fill.price);
        _swap(matched.buyer, matched.seller, fill.baseAmount, amounts);
        emit Trade(
            matched.makerHash,
            matched.takerHash,
            matched.buyer,
            matched.seller,
            fill.baseAmount,
            amounts.quote,
            amounts.buyerFee,
            amounts.sellerFee
        );
        return amounts.buyerFee + amounts.sellerFee;
    }

    /// @dev Checks a fill against its two orders, records it on both, and names buyer and seller.
    function _match(LibOrder.Order[] calldata orders, bytes32[] memory hashes, Fill calldata fill, uint256 fillIndex)
        private
        returns (Match memory matched)
    {
        if (fill.makerIndex >= orders.length) revert VaultUnknownOrderIndex(fillIndex, fill.makerIndex);
        if (fill.takerIndex >= orders.length) revert VaultUnknownOrderIndex(fillIndex, fill.takerIndex);
        LibOrder.Order calldata maker = orders[fill.makerIndex];
        LibOrder.Order calldata taker = orders[fill.takerIndex];
        matched.makerHash = hashes[fill.makerIndex];
        matched.takerHash = hashes[fill.takerIndex];
        if (maker.side == taker.side) revert VaultSameSide(matched.makerHash, matched.takerHash);
        _checkLimitAndFee(maker, matched.makerHash, fill.price, fill.makerFeeBps);
        _checkLimitAndFee(taker, matched.takerHash, fill.price, fill.takerFeeBps);
        _recordFill(matched.makerHash, maker.amount, fill.baseAmount);
        _recordFill(matched.takerHash, taker.amount, fill.baseAmount);
        if (maker.side == LibOrder.Side.Buy) {
            _assign(matched, maker, fill.makerFeeBps, taker, fill.takerFeeBps);
        } else {
            _assign(matched, taker, fill.takerFeeBps, maker, fill.makerFeeBps);
        }
    }

    /// @dev Fills in the buyer's and the seller's account and fee terms.
    function _assign(
        Match memory matched,
        LibOrder.Order calldata buy,
        uint256 buyFeeBps,
        LibOrder.Order calldata sell,
        uint256 sellFeeBps
    ) private pure {
        matched.buyer = buy.maker;
        matched.buyFeeBps = buyFeeBps;
        matched.buyMaxFeeBps = buy.maxFeeBps;
        matched.seller = sell.maker;
        matched.sellFeeBps = sellFeeBps;
        matched.sellMaxFeeBps = sell.maxFeeBps;
    }

    /// @dev The fill price within the order's limit, and the fee rate within its cap (and 100 %).
    function _checkLimitAndFee(LibOrder.Order calldata order, bytes32 orderHash, uint256 price, uint256 feeBps)
        private
        pure
    {
        if (order.side == LibOrder.Side.Buy ? price > order.price : price < order.price) {
            revert VaultPriceOutsideLimit(orderHash, price, order.price);
        }
        uint256 cap = order.maxFeeBps < LibOrder.BPS ? order.maxFeeBps : LibOrder.BPS;
        if (feeBps > cap) revert VaultFeeAboveCap(orderHash, feeBps, cap);
    }

    /// @dev Adds `baseAmount` to the order's filled amount; rejects cancelled orders and overfills.
    function _recordFill(bytes32 orderHash, uint256 orderAmount, uint256 baseAmount) private {
        uint256 state = _orderStates[orderHash];
        if (state & _CANCELLED_FLAG != 0) revert VaultOrderCancelled(orderHash);
        uint256 filled = state + baseAmount;
        if (filled > orderAmount) revert VaultOrderOverfilled(orderHash, filled, orderAmount);
        _orderStates[orderHash] = filled;
    }

    /// @dev Moves base from seller to buyer and quote from buyer to seller, fees left in the
    /// Vault for the batch's single transfer to the Fund. One read and one write per account.
    function _swap(address buyer, address seller, uint256 baseAmount, LibOrder.Amounts memory amounts) private {
        Account memory buyerAccount = _accounts[buyer];
        uint256 buyerPays = amounts.quote + amounts.buyerFee;
        if (buyerAccount.quoteBalance < buyerPays) {
            revert VaultInsufficientBalance(buyer, address(quoteToken), buyerAccount.quoteBalance, buyerPays);
        }
        // unchecked: the balance was just checked to cover the payment.
        unchecked {
            buyerAccount.quoteBalance -= uint104(buyerPays);
        }
        buyerAccount.baseBalance = SafeCast.toUint104(buyerAccount.baseBalance + baseAmount);
        _accounts[buyer] = buyerAccount;

        Account memory sellerAccount = _accounts[seller];
        if (sellerAccount.baseBalance < baseAmount) {
            revert VaultInsufficientBalance(seller, address(baseToken), sellerAccount.baseBalance, baseAmount);
        }
        // unchecked: the balance was just checked to cover the amount, and sellerFee <= quote
        // because the seller's fee cap is at most 100 % (see LibOrder.fee).
        unchecked {
            sellerAccount.baseBalance -= uint104(baseAmount);
            sellerAccount.quoteBalance =
                SafeCast.toUint104(sellerAccount.quoteBalance + (amounts.quote - amounts.sellerFee));
            // (the uint256 sum cannot wrap either: quote <= 2^256 / PRICE_SCALE.)
        }
        _accounts[seller] = sellerAccount;
    }

    /// @dev Debits `amount` of `token` from `account`.
    function _debit(address account, address token, uint256 amount) private {
        Account storage record = _accounts[account];
        uint256 balance = _isBase(token) ? record.baseBalance : record.quoteBalance;
        if (balance < amount) revert VaultInsufficientBalance(account, token, balance, amount);
        // unchecked: amount <= balance, which fits in 104 bits.
        unchecked {
            if (_isBase(token)) {
                record.baseBalance = uint104(balance - amount);
            } else {
                record.quoteBalance = uint104(balance - amount);
            }
        }
    }

    /// @dev Marks a withdrawal nonce used; reverts if it was.
    function _useWithdrawalNonce(address account, uint64 nonce) private {
        uint256 bit = 1 << (nonce & 0xff);
        uint256 bits = _withdrawalNonces[account][nonce >> 8];
        if (bits & bit != 0) revert VaultWithdrawalNonceUsed(account, nonce);
        _withdrawalNonces[account][nonce >> 8] = bits | bit;
    }

    /// @dev True for the base token, false for the quote token; reverts for any other.
    function _isBase(address token) private view returns (bool) {
        if (token == address(baseToken)) return true;
        if (token == address(quoteToken)) return false;
        revert VaultUnsupportedToken(token);
    }

    function _setExitDelay(uint256 delay) private {
        if (delay > MAX_EXIT_DELAY) revert VaultExitDelayTooLong(delay, MAX_EXIT_DELAY);
        emit ExitDelayChanged(exitDelay, delay);
        exitDelay = delay;
    }
}
