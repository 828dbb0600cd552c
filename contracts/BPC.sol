// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title BPC — Blockchain Patent Collection
/// @notice The pool's tradable unit (white paper §3.1(2), §4.2). New BPC is minted
/// by the foundation when patents are admitted to the pool; holders may burn.
/// A mint owed for something (a contributed patent) carries a key and mints once
/// (`mintOnce`): a transaction sent again (a mint thought lost, resent while the
/// first was still on its way) reverts instead of minting twice.
/// @dev Plain OpenZeppelin ERC-20 behaviour (errors, allowance semantics), plus
/// EIP-2612 permits and a minter role.
contract BPC is ERC20, ERC20Burnable, ERC20Permit, AccessControl {
    /// @notice Role allowed to mint (the foundation).
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");

    /// @notice Whether a mint with `key` was made; a key is used by one mint only.
    mapping(bytes32 key => bool used) public mintKeys;

    /// @notice A mint with `key` was already made; nothing is minted again.
    /// @param key The key of the earlier mint.
    error BPCMintKeyUsed(bytes32 key);
    /// @notice A keyed mint without a key.
    error BPCZeroMintKey();

    /// @notice `amount` base units were minted to `to` under `key`, once.
    /// @param to The recipient.
    /// @param amount Base units.
    /// @param key The mint's idempotency key.
    event MintedOnce(address indexed to, uint256 amount, bytes32 indexed key);

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

    /// @notice Mint `amount` base units to `to`, once per `key`.
    /// @dev The key is recorded before the mint; a second mint with the same key, whatever
    /// its recipient or amount, reverts `BPCMintKeyUsed`.
    /// @param to The recipient (a patent contributor).
    /// @param amount The amount in base units (18 decimals).
    /// @param key A non-zero key unique to what the mint pays for, e.g. a hash of the patent and policy.
    function mintOnce(address to, uint256 amount, bytes32 key) external onlyRole(MINTER_ROLE) {
        if (key == bytes32(0)) revert BPCZeroMintKey();
        if (mintKeys[key]) revert BPCMintKeyUsed(key);
        mintKeys[key] = true;
        emit MintedOnce(to, amount, key);
        _mint(to, amount);
    }
}
