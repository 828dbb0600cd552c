// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title BlockingToken
/// @notice A token for tests that refuses every transfer from or to an account it blocks, as
/// stablecoins with a block list (or a pause) do.
contract BlockingToken is ERC20 {
    /// @notice Accounts whose transfers are refused.
    mapping(address account => bool) public blocked;

    /// @notice A transfer from or to a blocked account.
    error BlockingTokenBlocked(address account);

    /// @param name_ The token's name.
    /// @param symbol_ The token's symbol.
    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {}

    /// @notice Mint `amount` to `to` (anyone may, in tests).
    /// @param to The receiver.
    /// @param amount The amount.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Block or unblock `account`.
    /// @param account The account.
    /// @param isBlocked Whether its transfers are refused.
    function setBlocked(address account, bool isBlocked) external {
        blocked[account] = isBlocked;
    }

    /// @dev Refuses transfers from or to a blocked account.
    function _update(address from, address to, uint256 value) internal override {
        if (blocked[from]) revert BlockingTokenBlocked(from);
        if (blocked[to]) revert BlockingTokenBlocked(to);
        super._update(from, to, value);
    }
}
