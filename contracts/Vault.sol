// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IPoolRegistry} from "./interfaces/IPoolRegistry.sol";
import {IVault} from "./interfaces/IVault.sol";
import {LibAccount} from "./libraries/LibAccount.sol";
import {LibOrder} from "./libraries/LibOrder.sol";
import {LibWithdrawal} from "./libraries/LibWithdrawal.sol";

/// @title Vault
/// @notice Custody and settlement of BPC trading (white paper §3.4, §4.2):
/// members deposit BPC (base) and a stablecoin (quote), sign EIP-712 orders,
/// and the operator settles matched fills in batches; fees go to the Fund.
/// @dev Invariant: for each token, the sum of all account balances equals the
/// Vault's balance of that token (fees leave for the Fund in the same call).
/// Price and fee arithmetic: see LibOrder. Each account is one storage word
/// (LibAccount: both balances, exit time, nonce-floor flag), so settling
/// against a maker touches one account slot; the state of an order (filled
/// amount and cancellation flag) is one slot per order hash. A batch checks
/// each order once (signature, expiry, membership, exit) however many fills
/// it takes part in, so one taker against many makers pays for the taker once.
/// A batch is atomic for the operator's mistakes, not for a maker's own acts:
/// an order its maker withdrew on chain after it was matched (cancelled, below
/// the nonce floor, account exiting, or a signature its maker, through ERC-1271, no
/// longer accepts) has its fills skipped (`FillSkipped`), so that no member can
/// make every other member's fills revert with it.
contract Vault is IVault, AccessControl, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using LibAccount for uint256;
    using LibOrder for LibOrder.Order;

    /// @notice Role that settles batches and co-signs instant withdrawals.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice Upper bound of the exit delay, so the council cannot lock funds away.
    uint256 public constant MAX_EXIT_DELAY = 30 days;
    /// @notice Gas a maker's contract wallet may spend answering `isValidSignature` in `settle`.
    /// @dev EIP-1271 leaves the gas to the caller. Forwarding all of it (as OpenZeppelin's
    /// SignatureChecker does) would let one wallet burn 63/64 of a batch's gas, so that no batch
    /// holding its order fits in a block and every other member's fills wait behind it. The
    /// service asks a wallet with the same cap when it takes the order.
    uint256 public constant WALLET_CHECK_GAS = 500_000;

    /// @notice The gas `settle` must have just before it calls a wallet for the wallet to get its
    /// whole `WALLET_CHECK_GAS`; a refusal with less reverts `VaultWalletCheckOutOfGas`. The
    /// settler reserves it for each wallet order of a batch.
    /// @dev A call passes on at most 63/64 of what is left once the call's own cost is paid
    /// (EIP-150), so 64/63 of the cap, plus that cost: a cold account access (2,600), and another
    /// (2,600) for the delegate of an account delegated under EIP-7702, whose code is loaded from
    /// there; plus 100 for the few opcodes between the reading and the call.
    uint256 public constant WALLET_CALL_GAS = WALLET_CHECK_GAS * 64 / 63 + 2_600 + 2_600 + 100;

    /// @dev Bit 255 of an order's state marks it cancelled; the low bits hold the filled amount,
    /// which cannot reach 2^255 because every fill is bounded by a 104-bit balance.
    uint256 private constant _CANCELLED_FLAG = 1 << 255;

    /// @dev What the fills of a batch need from an order that passed its checks. `withdrawn` is a
    /// `SkipReason`, 0 (None) unless its maker requested an exit or raised the nonce floor past it
    /// before the batch, or its maker's wallet refuses its signature now: then every fill it takes
    /// part in is skipped (a cancellation is in the order's state, read by each fill). A plain
    /// word: the check every fill makes needs no enum range check.
    struct CheckedOrder {
        bytes32 orderHash;
        address maker;
        bool isBuy;
        uint256 withdrawn;
        uint256 limitPrice;
        uint256 amount;
        uint256 feeCapBps;
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

    mapping(address account => uint256 word) private _accounts;
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
        // A token that delivers nothing (all of it taken as a fee) credits nothing: no Deposited of 0.
        if (received == 0) revert VaultZeroAmount();
        uint256 word = _accounts[msg.sender];
        (uint256 base, uint256 quote) = (word.baseBalance(), word.quoteBalance());
        _accounts[msg.sender] =
            isBase ? word.withBalances(base + received, quote) : word.withBalances(base, quote + received);
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
        uint256 word = _accounts[msg.sender];
        uint256 availableAt = word.exitAvailableAt();
        if (availableAt != 0) revert VaultExitAlreadyRequested(msg.sender, availableAt);
        availableAt = block.timestamp + exitDelay;
        _accounts[msg.sender] = word.withExitAvailableAt(availableAt);
        emit ExitRequested(msg.sender, availableAt);
    }

    /// @inheritdoc IVault
    function cancelExit() external {
        uint256 word = _accounts[msg.sender];
        if (word.exitAvailableAt() == 0) revert VaultExitNotRequested(msg.sender);
        _accounts[msg.sender] = word.withExitAvailableAt(0);
        emit ExitCancelled(msg.sender);
    }

    /// @inheritdoc IVault
    function exit() external nonReentrant {
        uint256 word = _accounts[msg.sender];
        uint256 availableAt = word.exitAvailableAt();
        if (availableAt == 0) revert VaultExitNotRequested(msg.sender);
        if (block.timestamp < availableAt) revert VaultExitNotReady(msg.sender, availableAt, block.timestamp);
        (uint256 base, uint256 quote) = (word.baseBalance(), word.quoteBalance());
        _accounts[msg.sender] = word.withBalances(0, 0);
        // Each token leaves on its own: one that refuses the transfer (paused, or blocking the
        // account) keeps its balance here for a later exit, and does not hold the other back.
        uint256 paidBase = _payOut(baseToken, base);
        uint256 paidQuote = _payOut(quoteToken, quote);
        if (paidBase != base || paidQuote != quote) {
            if (paidBase == 0 && paidQuote == 0) revert VaultExitTransferFailed(msg.sender);
            _accounts[msg.sender] = _accounts[msg.sender].withBalances(base - paidBase, quote - paidQuote);
        }
        emit Exited(msg.sender, paidBase, paidQuote);
    }

    /// @dev `amount` of `token` to the caller: `amount` when paid, 0 when nothing was or the token refused.
    function _payOut(IERC20 token, uint256 amount) private returns (uint256) {
        return amount != 0 && token.trySafeTransfer(msg.sender, amount) ? amount : 0;
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
        _accounts[msg.sender] = _accounts[msg.sender].withNonceFloor();
        emit NonceCancelled(msg.sender, newMinValidNonce);
    }

    /// @inheritdoc IVault
    function settle(LibOrder.Order[] calldata orders, bytes[] calldata signatures, Fill[] calldata fills)
        external
        nonReentrant
        onlyRole(OPERATOR_ROLE)
    {
        if (orders.length != signatures.length) revert VaultLengthMismatch(orders.length, signatures.length);
        CheckedOrder[] memory checked = new CheckedOrder[](orders.length);
        for (uint256 i = 0; i < orders.length; ++i) {
            checked[i] = _checkOrder(orders[i], signatures[i]);
        }
        uint256 fees = 0;
        for (uint256 i = 0; i < fills.length; ++i) {
            fees += _settleFill(checked, fills[i], i);
        }
        if (fees != 0) {
            // What reaches the Fund is what its royalty runs can pay out: a quote token that
            // takes a fee on transfer delivers less than the fills' fees.
            uint256 before = quoteToken.balanceOf(fund);
            quoteToken.safeTransfer(fund, fees);
            emit FeesCollected(address(quoteToken), fees, quoteToken.balanceOf(fund) - before);
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
        uint256 word = _accounts[account];
        return _isBase(token) ? word.baseBalance() : word.quoteBalance();
    }

    /// @inheritdoc IVault
    function accountOf(address account) external view returns (Account memory) {
        uint256 word = _accounts[account];
        return Account({
            baseBalance: uint104(word.baseBalance()),
            quoteBalance: uint104(word.quoteBalance()),
            exitAvailableAt: uint40(word.exitAvailableAt()),
            hasNonceFloor: word.hasNonceFloor()
        });
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

    /// @dev Checks everything about an order that does not depend on a fill. What only its maker
    /// can do to it (raise the nonce floor past it, request an exit, have its contract wallet
    /// refuse the signature; a cancellation is found by its fills) does not revert: it marks the
    /// order withdrawn, and its fills are skipped. Everything else reverts, also for a withdrawn
    /// order: those are the operator's mistakes, which no member can cause.
    function _checkOrder(LibOrder.Order calldata order, bytes calldata signature)
        private
        view
        returns (CheckedOrder memory checked)
    {
        bytes32 orderHash = _hashTypedDataV4(order.hash());
        if (order.baseToken != address(baseToken) || order.quoteToken != address(quoteToken)) {
            revert VaultUnsupportedMarket(orderHash, order.baseToken, order.quoteToken);
        }
        if (block.timestamp >= order.expiry) revert VaultOrderExpired(orderHash, order.expiry);
        address maker = order.maker;
        // Withdrawn by its maker: all its orders (an exit request, which comes first) or this one
        // (a nonce floor above its nonce). A cancellation is in the order's state, read by each fill.
        uint256 word = _accounts[maker];
        uint256 withdrawn = 0;
        if (word.exitAvailableAt() != 0) {
            withdrawn = uint256(SkipReason.AccountExiting);
        } else if (word.hasNonceFloor() && order.nonce < _minValidNonces[maker]) {
            withdrawn = uint256(SkipReason.OrderNonceCancelled);
        }
        if (!registry.isActiveMember(maker)) revert VaultNotActiveMember(maker);
        // A withdrawn order moves nothing, so its signature need not be checked: an exit or nonce
        // floor, on chain for all to see, is the reason reported, and its wallet is not asked.
        if (withdrawn == 0 && !_isSignedBy(maker, orderHash, signature)) {
            withdrawn = uint256(SkipReason.WalletRefused);
        }
        uint256 maxFeeBps = order.maxFeeBps;
        checked = CheckedOrder({
            orderHash: orderHash,
            maker: maker,
            isBuy: order.side == LibOrder.Side.Buy,
            withdrawn: withdrawn,
            limitPrice: order.price,
            amount: order.amount,
            feeCapBps: maxFeeBps < LibOrder.BPS ? maxFeeBps : LibOrder.BPS
        });
    }

    /// @dev Whether `signer` signed `digest`, as of now. ECDSA first: an address whose key signed
    /// is its owner, whether or not it has code, and skipping the code-size probe (OpenZeppelin's
    /// SignatureChecker starts with it) saves a cold account access per maker. Every other
    /// signature is ERC-1271's to decide, and false means the maker refused it now.
    function _isSignedBy(address signer, bytes32 digest, bytes calldata signature) private view returns (bool) {
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(digest, signature);
        if (error == ECDSA.RecoverError.NoError && recovered == signer) return true;
        return _walletAccepts(signer, digest, signature);
    }

    /// @dev Whether the contract wallet `wallet` accepts `signature` of `digest` (ERC-1271), given at
    /// most `WALLET_CHECK_GAS` (encoded as in OpenZeppelin's
    /// SignatureChecker.isValidERC1271SignatureNowCalldata, which forwards all the gas instead).
    /// False is the maker's own say, which it may change at any time: the order's fills are
    /// skipped, as for a cancellation. That holds for a maker without code too: with EIP-7702 an
    /// account's key delegates it to wallet code, whose ERC-1271 accepts what the key did not
    /// sign, and clearing the delegation takes that back; a call to an account without code
    /// answers nothing, a refusal. (A signature of an account that never had code that does not
    /// recover to it is the operator's mistake, which the service finds off chain; failing its
    /// fills beats reverting every other member's.) The one refusal that is not the maker's say
    /// reverts the transaction instead, `VaultWalletCheckOutOfGas`: the wallet said no, or failed,
    /// while the transaction had too little gas left to give it its whole cap. A wallet may need
    /// its cap and refuse at once when given less, leaving the batch gas enough to finish. So an
    /// order is refused only by a wallet given its whole cap, never by the gas limit the operator
    /// chose or the gas another wallet of the batch burnt: a refusal that skips an order's fills
    /// at some gas limit skips them at any higher one, where the wallet gets the same cap. (Not
    /// so for an acceptance: a wallet may accept with less than its cap and refuse with all of it.)
    function _walletAccepts(address wallet, bytes32 digest, bytes calldata signature)
        private
        view
        returns (bool accepted)
    {
        bytes4 selector = IERC1271.isValidSignature.selector;
        uint256 length = signature.length;
        uint256 gasBeforeCall;
        // solhint-disable-next-line no-inline-assembly
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, selector)
            mstore(add(ptr, 0x04), digest)
            mstore(add(ptr, 0x24), 0x40)
            mstore(add(ptr, 0x44), length)
            calldatacopy(add(ptr, 0x64), signature.offset, length)
            mstore(add(add(ptr, 0x64), length), 0)
            length := shl(5, shr(5, add(length, 0x1F)))
            gasBeforeCall := gas()
            let success := staticcall(WALLET_CHECK_GAS, wallet, ptr, add(length, 0x64), 0x00, 0x20)
            accepted := and(success, and(gt(returndatasize(), 0x1f), eq(mload(0x00), selector)))
        }
        if (!accepted && gasBeforeCall < WALLET_CALL_GAS) revert VaultWalletCheckOutOfGas(wallet);
    }

    /// @dev Settles one fill and returns the fees it owes the Fund. Skips it (no balance, no
    /// filled amount, no fee) when its maker or taker order was withdrawn, once the fill's
    /// indexes, sides, price and fee rates are checked, which no member can change. Both orders'
    /// states are read before either is written: they are two slots, since orders on opposite
    /// sides have different hashes.
    function _settleFill(CheckedOrder[] memory checked, Fill calldata fill, uint256 fillIndex)
        private
        returns (uint256)
    {
        (uint256 makerIndex, uint256 takerIndex) = (fill.makerIndex, fill.takerIndex);
        if (makerIndex >= checked.length) revert VaultUnknownOrderIndex(fillIndex, makerIndex);
        if (takerIndex >= checked.length) revert VaultUnknownOrderIndex(fillIndex, takerIndex);
        CheckedOrder memory maker = checked[makerIndex];
        CheckedOrder memory taker = checked[takerIndex];
        if (maker.isBuy == taker.isBuy) revert VaultSameSide(maker.orderHash, taker.orderHash);
        _checkTerms(maker, fill.price, fill.makerFeeBps);
        _checkTerms(taker, fill.price, fill.takerFeeBps);
        uint256 makerState = _orderStates[maker.orderHash];
        uint256 takerState = _orderStates[taker.orderHash];
        if (((makerState | takerState) & _CANCELLED_FLAG) | maker.withdrawn | taker.withdrawn != 0) {
            _skip(fillIndex, maker, makerState, taker);
            return 0;
        }
        uint256 baseAmount = fill.baseAmount;
        _recordFill(maker, makerState, baseAmount);
        _recordFill(taker, takerState, baseAmount);
        return maker.isBuy
            ? _trade(maker, fill.makerFeeBps, taker, fill.takerFeeBps, fill, maker, taker)
            : _trade(taker, fill.takerFeeBps, maker, fill.makerFeeBps, fill, maker, taker);
    }

    /// @dev Reports a skipped fill with the first withdrawn of its orders, the maker's first: its
    /// exit, nonce floor or wallet's refusal, then its cancellation.
    function _skip(uint256 fillIndex, CheckedOrder memory maker, uint256 makerState, CheckedOrder memory taker)
        private
    {
        CheckedOrder memory withdrawn = maker.withdrawn != 0 || makerState & _CANCELLED_FLAG != 0 ? maker : taker;
        SkipReason reason =
            withdrawn.withdrawn != 0 ? SkipReason(withdrawn.withdrawn) : SkipReason.OrderCancelled;
        emit FillSkipped(fillIndex, withdrawn.orderHash, reason);
    }

    /// @dev Checks the fill price against the order's limit and the fee rate against its cap.
    function _checkTerms(CheckedOrder memory order, uint256 price, uint256 feeBps) private pure {
        if (order.isBuy ? price > order.limitPrice : price < order.limitPrice) {
            revert VaultPriceOutsideLimit(order.orderHash, price, order.limitPrice);
        }
        if (feeBps > order.feeCapBps) revert VaultFeeAboveCap(order.orderHash, feeBps, order.feeCapBps);
    }

    /// @dev Adds `baseAmount` to the order's filled amount, `state` as read for this fill (not
    /// cancelled); rejects overfills.
    function _recordFill(CheckedOrder memory order, uint256 state, uint256 baseAmount) private {
        uint256 filled = state + baseAmount;
        if (filled > order.amount) revert VaultOrderOverfilled(order.orderHash, filled, order.amount);
        _orderStates[order.orderHash] = filled;
    }

    /// @dev Computes the fill's amounts, swaps the balances and reports the trade; returns the fees.
    function _trade(
        CheckedOrder memory buy,
        uint256 buyFeeBps,
        CheckedOrder memory sell,
        uint256 sellFeeBps,
        Fill calldata fill,
        CheckedOrder memory maker,
        CheckedOrder memory taker
    ) private returns (uint256) {
        LibOrder.Amounts memory amounts = LibOrder.settlementAmounts(
            fill.baseAmount, fill.price, buyFeeBps, buy.feeCapBps, sellFeeBps, sell.feeCapBps
        );
        if (amounts.quote == 0) revert VaultFillTooSmall(fill.baseAmount, fill.price);
        _swap(buy.maker, sell.maker, fill.baseAmount, amounts);
        emit Trade(
            maker.orderHash,
            taker.orderHash,
            buy.maker,
            sell.maker,
            fill.baseAmount,
            amounts.quote,
            amounts.buyerFee,
            amounts.sellerFee
        );
        return amounts.buyerFee + amounts.sellerFee;
    }

    /// @dev Moves base from seller to buyer and quote from buyer to seller, fees left in the
    /// Vault for the batch's single transfer to the Fund. Each account word is read, checked
    /// and written whole; the seller's word is read again after the buyer's write, so a
    /// self-trade (buyer == seller) nets out correctly.
    function _swap(address buyer, address seller, uint256 baseAmount, LibOrder.Amounts memory amounts) private {
        uint256 sellerBase = _accounts[seller].baseBalance();
        if (sellerBase < baseAmount) {
            revert VaultInsufficientBalance(seller, address(baseToken), sellerBase, baseAmount);
        }
        uint256 word = _accounts[buyer];
        uint256 buyerQuote = word.quoteBalance();
        uint256 buyerPays = amounts.quote + amounts.buyerFee;
        if (buyerQuote < buyerPays) revert VaultInsufficientBalance(buyer, address(quoteToken), buyerQuote, buyerPays);
        // unchecked: the payment was just checked against the balance, and baseAmount <= sellerBase
        // < 2^104, so the buyer's base sum stays below 2^105 (withBalances rejects more than 104 bits).
        unchecked {
            _accounts[buyer] = word.withBalances(word.baseBalance() + baseAmount, buyerQuote - buyerPays);
        }
        word = _accounts[seller];
        // unchecked: the seller's base is at least sellerBase >= baseAmount (more after a self-trade's
        // credit); sellerFee <= quote because the seller's fee cap is at most 100 % (LibOrder.fee); a
        // 104-bit balance plus a quote amount (< 2^256 / PRICE_SCALE) cannot wrap.
        unchecked {
            uint256 sellerQuote = word.quoteBalance() + (amounts.quote - amounts.sellerFee);
            _accounts[seller] = word.withBalances(word.baseBalance() - baseAmount, sellerQuote);
        }
    }

    /// @dev Debits `amount` of `token` from `account`.
    function _debit(address account, address token, uint256 amount) private {
        uint256 word = _accounts[account];
        bool isBase = _isBase(token);
        (uint256 base, uint256 quote) = (word.baseBalance(), word.quoteBalance());
        uint256 balance = isBase ? base : quote;
        if (balance < amount) revert VaultInsufficientBalance(account, token, balance, amount);
        // unchecked: amount <= balance.
        unchecked {
            _accounts[account] =
                isBase ? word.withBalances(base - amount, quote) : word.withBalances(base, quote - amount);
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
