// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title BPC — Blockchain Patent Collection
/// @notice The pool's tradable unit (white paper §3.1(2), §4.2). New BPC is minted
/// by the foundation when patents are admitted to the pool; holders may burn.
/// @dev Plain OpenZeppelin ERC-20 behaviour (errors, allowance semantics), plus
/// EIP-2612 permits and a minter role.
contract BPC is ERC20, ERC20Burnable, ERC20Permit, AccessControl {
    /// @notice Role allowed to mint (the foundation).
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /// @param council The account that administers roles.
    constructor(address council) ERC20("Blockchain Patent Collection", "BPC") ERC20Permit("Blockchain Patent Collection") {
        _grantRole(DEFAULT_ADMIN_ROLE, council);
    }

    /// @notice Mint `amount` base units to `to`.
    /// @param to The recipient (a patent contributor or the foundation).
    /// @param amount The amount in base units (18 decimals).
    function mint(address to, uint256 amount) external onlyRole(MINTER_ROLE) {
        _mint(to, amount);
    }
}
