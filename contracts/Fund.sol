// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title Fund
/// @notice The foundation's treasury (white paper §3.3, §3.5): receives licence
/// and trading fees, pays royalties and expenses only through the treasurer role.
/// Each payout tag pays once: a transaction sent again (a payout thought lost,
/// resent while the first was still on its way) reverts instead of paying twice.
contract Fund is AccessControl, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Role allowed to pay out of the fund (council-controlled).
    bytes32 public constant TREASURER_ROLE = keccak256("TREASURER_ROLE");

    /// @notice Whether a payout with `tag` was made; a tag is used by one payout only.
    mapping(bytes32 tag => bool paid) public paidTags;

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
    /// empty list reverts `FundEmptyPayout`, leaving the tag unused.
    /// @param token The token.
    /// @param recipients The payees.
    /// @param amounts The amounts in base units.
    /// @param tag A tag for accounting, unique to this payout, e.g. a hash of the run and batch.
    function payout(IERC20 token, address[] calldata recipients, uint256[] calldata amounts, bytes32 tag)
        external
        onlyRole(TREASURER_ROLE)
    {
        if (recipients.length != amounts.length) revert FundLengthMismatch(recipients.length, amounts.length);
        if (recipients.length == 0) revert FundEmptyPayout();
        if (paidTags[tag]) revert FundTagAlreadyPaid(tag);
        paidTags[tag] = true;
        for (uint256 i = 0; i < recipients.length; ++i) {
            if (recipients[i] == address(0)) revert FundZeroRecipient(i);
            token.safeTransfer(recipients[i], amounts[i]);
            emit FundPayout(address(token), recipients[i], amounts[i], tag);
        }
    }
}
