// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {LibTokenTransfer} from "./libraries/LibTokenTransfer.sol";

/// @title Fund
/// @notice The foundation's treasury (white paper §3.3, §3.5): receives licence
/// and trading fees, pays royalties and expenses only through the treasurer role.
/// Each payout tag pays once: a transaction sent again (a payout thought lost,
/// resent while the first was still on its way) reverts instead of paying twice.
/// A recipient the token refuses (a block list, a pause, a hook that reverts) does not
/// stop a payout: what it could not be sent is held for it (`owed`), the others are paid,
/// and it claims what it is owed later, to itself or to an address it names. What is held
/// is never paid to anyone else: a payout spends only the balance less `totalOwed`.
/// A payout of two or more lines of which the token delivers none reverts instead: the token
/// is refusing the fund itself (a global pause, the fund on a block list), not a recipient, and
/// the payout can be sent again once it is lifted. A payout of one line cannot tell the two
/// apart, and holds its line.
contract Fund is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using LibTokenTransfer for IERC20;

    /// @notice Role allowed to pay out of the fund (council-controlled).
    bytes32 public constant TREASURER_ROLE = keccak256("TREASURER_ROLE");

    /// @notice The most gas a payout's transfer to one recipient may use. A transfer of a plain
    /// ERC-20 uses a fraction of it; a token that calls the recipient during the transfer gives
    /// a hostile recipient this much to burn, not the whole transaction's. A transfer that runs
    /// out of it is held for its recipient, who claims it with all the gas it chooses.
    uint256 public constant PAYOUT_TRANSFER_GAS = 200_000;

    /// @notice Whether a payout with `tag` was made; a tag is used by one payout only.
    mapping(bytes32 tag => bool paid) public paidTags;

    /// @notice What the fund holds of `token` for `recipient`: payouts the token refused to deliver.
    mapping(address token => mapping(address recipient => uint256 amount)) public owed;

    /// @notice The sum of `owed[token][*]`: the part of the fund's balance no payout may spend.
    mapping(address token => uint256 amount) public totalOwed;

    /// @notice The recipient list and amount list have different lengths.
    error FundLengthMismatch(uint256 recipients, uint256 amounts);
    /// @notice A payout to the zero address.
    error FundZeroRecipient(uint256 index);
    /// @notice A payout to nobody: it would use up its tag and pay nothing.
    error FundEmptyPayout();
    /// @notice A zero deposit, or one of which nothing reached the fund.
    error FundZeroAmount();
    /// @notice A payout with `tag` was already made; nothing is paid again.
    /// @param tag The tag of the earlier payout.
    error FundTagAlreadyPaid(bytes32 tag);
    /// @notice A payout beyond what the fund may spend: its balance less what it holds for others.
    /// @param token The token.
    /// @param available What the fund could still spend in this payout.
    /// @param needed The amount of the payout line that does not fit.
    error FundInsufficientFree(address token, uint256 available, uint256 needed);
    /// @notice A claim by a recipient for whom the fund holds nothing of the token.
    /// @param token The token.
    /// @param recipient The claimant.
    error FundNothingOwed(address token, address recipient);
    /// @notice A claim to the zero address.
    error FundClaimToZeroAddress();
    /// @notice The token refused the claim's transfer; the amount stays owed.
    /// @param token The token.
    /// @param to The address the claim was to pay.
    /// @param amount The amount owed.
    error FundClaimRefused(address token, address to, uint256 amount);
    /// @notice The token refused every line of a payout of two or more: it refuses the fund itself
    /// (a pause, the fund on a block list) rather than a recipient, so nothing is held and the tag
    /// stays unused, for the payout to be sent again once the token delivers.
    /// @param token The token.
    error FundNothingDelivered(address token);
    /// @notice A payout's transfer to `to` failed when the transaction had too little gas left to
    /// have given it `PAYOUT_TRANSFER_GAS`: the gas limit, not the token, may have failed it, so
    /// the payout reverts rather than hold the line.
    /// @param to The payee of the line.
    error FundTransferOutOfGas(address to);

    /// @notice `amount` of `token` came into the fund from `from`, tagged by `source`.
    /// @param token The token.
    /// @param from The payer.
    /// @param amount Base units the fund received (less than was sent when the token takes a fee).
    /// @param source Accounting tag.
    event FundDeposit(address indexed token, address indexed from, uint256 amount, bytes32 indexed source);
    /// @notice `amount` of `token` left the fund to `to`, tagged by `tag`.
    /// @param token The token.
    /// @param to The payee.
    /// @param amount Base units.
    /// @param tag Accounting tag.
    event FundPayout(address indexed token, address indexed to, uint256 amount, bytes32 indexed tag);
    /// @notice The token refused to deliver `amount` to `to` in the payout tagged `tag`: the fund
    /// holds it for `to` (`owed`), who may claim it.
    /// @param token The token.
    /// @param to The payee the fund holds it for.
    /// @param amount Base units.
    /// @param tag Accounting tag of the payout.
    event FundPayoutHeld(address indexed token, address indexed to, uint256 amount, bytes32 indexed tag);
    /// @notice `recipient` claimed `amount` of `token` the fund held for it, paid to `to`.
    /// @param token The token.
    /// @param recipient The payee the amount was held for.
    /// @param to The address paid (the recipient or one it named).
    /// @param amount Base units: all that was owed.
    event FundClaimed(address indexed token, address indexed recipient, address indexed to, uint256 amount);

    /// @param council The account that administers roles.
    constructor(address council) {
        _grantRole(DEFAULT_ADMIN_ROLE, council);
    }

    /// @notice Pull `amount` of `token` from the caller into the fund (caller approves first).
    /// @dev `FundDeposit` carries what the fund's balance grew by, which is less than `amount`
    /// for a token that takes a fee on transfer: royalties are paid out of what arrived. A
    /// deposit of which nothing arrives reverts `FundZeroAmount`, as a zero deposit does. A
    /// deposit made from inside another's transfer (a token's hook) reverts, so that the outer
    /// one's balance difference never counts the inner one's amount a second time.
    /// @param token The token.
    /// @param amount The amount in base units taken from the caller.
    /// @param source A tag for accounting, e.g. keccak256("licence-fee").
    function deposit(IERC20 token, uint256 amount, bytes32 source) external nonReentrant {
        if (amount == 0) revert FundZeroAmount();
        uint256 before = token.balanceOf(address(this));
        token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - before;
        if (received == 0) revert FundZeroAmount();
        emit FundDeposit(address(token), msg.sender, received, source);
    }

    /// @notice Pay `amounts[i]` of `token` to `recipients[i]` for every i, once per `tag`.
    /// @dev The tag is recorded in `paidTags` before any transfer; a second payout with the
    /// same tag, whatever its token, recipients or amounts, reverts `FundTagAlreadyPaid`. An
    /// empty list reverts `FundEmptyPayout`, leaving the tag unused. The payout spends only
    /// the fund's balance less `totalOwed[token]`; beyond it, it reverts `FundInsufficientFree`.
    /// A transfer the token refuses (or that uses more than `PAYOUT_TRANSFER_GAS`) is held:
    /// added to `owed[token][recipient]` and `totalOwed[token]`, with `FundPayoutHeld` in place
    /// of `FundPayout`. Either way the line is settled and its tag spent. A transfer that fails
    /// when the transaction had too little gas left to give it that cap reverts
    /// `FundTransferOutOfGas` instead, so that no gas limit can turn a line into a held one. A payout of two or more
    /// lines that delivers none reverts `FundNothingDelivered`, holding nothing and leaving the tag
    /// unused: the token refuses the fund, not its recipients. A payout of one line whose
    /// recipient the token refuses is held, since the fund cannot tell which of the two the token
    /// refuses. The balance is read
    /// once, and each line delivered takes its amount from it: a token that debits the sender
    /// more than it is asked to send would break that, and is not one to pay royalties in.
    /// @param token The token.
    /// @param recipients The payees.
    /// @param amounts The amounts in base units.
    /// @param tag A tag for accounting, unique to this payout, e.g. a hash of the run and batch.
    function payout(IERC20 token, address[] calldata recipients, uint256[] calldata amounts, bytes32 tag)
        external
        onlyRole(TREASURER_ROLE)
        nonReentrant
    {
        if (recipients.length != amounts.length) revert FundLengthMismatch(recipients.length, amounts.length);
        if (recipients.length == 0) revert FundEmptyPayout();
        if (paidTags[tag]) revert FundTagAlreadyPaid(tag);
        paidTags[tag] = true;
        uint256 reserved = totalOwed[address(token)];
        uint256 balance = token.balanceOf(address(this));
        uint256 free = balance > reserved ? balance - reserved : 0;
        uint256 held = _payLines(token, recipients, amounts, tag, free);
        if (held != 0) totalOwed[address(token)] = reserved + held;
    }

    /// @notice Pay the caller's held payouts of `token` (all of `owed[token][msg.sender]`) to `to`.
    /// @dev The debt is cleared before the transfer, and the guard refuses a call back into the
    /// fund from the token. A transfer the token refuses reverts `FundClaimRefused`, and the
    /// amount stays owed: the caller may claim again later, or to another address.
    /// @param token The token.
    /// @param to The address to pay: the caller itself or any other it names.
    function claim(IERC20 token, address to) external nonReentrant {
        if (to == address(0)) revert FundClaimToZeroAddress();
        uint256 amount = owed[address(token)][msg.sender];
        if (amount == 0) revert FundNothingOwed(address(token), msg.sender);
        owed[address(token)][msg.sender] = 0;
        totalOwed[address(token)] -= amount;
        if (!token.trySafeTransfer(to, amount)) revert FundClaimRefused(address(token), to, amount);
        emit FundClaimed(address(token), msg.sender, to, amount);
    }

    /// @notice Pay or hold every line of a payout out of `free`, the part of the balance it may spend.
    /// @dev Reverts `FundNothingDelivered` when two or more lines are all held (see `payout`).
    /// @param token The token.
    /// @param recipients The payees.
    /// @param amounts The amounts in base units.
    /// @param tag Accounting tag of the payout.
    /// @param free What the payout may spend.
    /// @return held The sum of the lines held (the caller adds it to `totalOwed`).
    function _payLines(
        IERC20 token,
        address[] calldata recipients,
        uint256[] calldata amounts,
        bytes32 tag,
        uint256 free
    ) private returns (uint256 held) {
        bool delivered = false;
        for (uint256 i = 0; i < recipients.length; ++i) {
            if (recipients[i] == address(0)) revert FundZeroRecipient(i);
            if (amounts[i] > free) revert FundInsufficientFree(address(token), free, amounts[i]);
            // Unchecked: amounts[i] <= free was checked on the line above.
            unchecked {
                free -= amounts[i];
            }
            if (_payOrHold(token, recipients[i], amounts[i], tag)) delivered = true;
            else held += amounts[i];
        }
        // Every line refused: the token refuses the fund (paused, or the fund blocked), not the
        // recipients. Holding them all would mark the batch paid and make each recipient claim;
        // reverting keeps it pending, to be sent again. One line cannot tell the two apart.
        if (!delivered && recipients.length > 1) revert FundNothingDelivered(address(token));
    }

    /// @notice Send `amount` of `token` to `to`, or hold it for `to` if the token refuses.
    /// @param token The token.
    /// @param to The payee.
    /// @param amount Base units.
    /// @param tag Accounting tag of the payout.
    /// @dev A failed transfer with less than `PAYOUT_TRANSFER_GAS / 63` gas left reverts
    /// `FundTransferOutOfGas` instead of holding, as the transfer may have been starved of gas.
    /// @return delivered Whether the token delivered it; if not, the caller adds `amount` to `totalOwed`.
    function _payOrHold(IERC20 token, address to, uint256 amount, bytes32 tag) private returns (bool delivered) {
        if (token.tryTransfer(to, amount, PAYOUT_TRANSFER_GAS)) {
            emit FundPayout(address(token), to, amount, tag);
            return true;
        }
        // A call gets at most 63/64 of the gas left: with less than 1/63 of the cap left after it,
        // the call may have had less than its cap and failed for that alone. A low gas limit (an
        // estimate, a treasurer contract) must not turn an honest line into a held one.
        if (gasleft() < PAYOUT_TRANSFER_GAS / 63) revert FundTransferOutOfGas(to);
        owed[address(token)][to] += amount;
        emit FundPayoutHeld(address(token), to, amount, tag);
        return false;
    }
}
