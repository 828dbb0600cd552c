// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title FeeOnTransferToken
/// @notice A token for tests that burns a share of every transfer between accounts (a
/// fee-on-transfer token): the receiver gets less than was sent, or nothing at 100%.
contract FeeOnTransferToken is ERC20 {
    /// @notice The share of each transfer burnt, in basis points.
    uint256 public feeBps;

    /// @param name_ The token's name.
    /// @param symbol_ The token's symbol.
    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {}

    /// @notice Mint `amount` to `to` (anyone may, in tests).
    /// @param to The receiver.
    /// @param amount The amount.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Set the share of each transfer burnt.
    /// @param bps Basis points, at most 10,000.
    function setFee(uint256 bps) external {
        feeBps = bps;
    }

    /// @dev Transfers between accounts deliver `value` less the fee, which is burnt.
    function _update(address from, address to, uint256 value) internal override {
        uint256 fee = from == address(0) || to == address(0) ? 0 : (value * feeBps) / 10_000;
        if (fee != 0) super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}
