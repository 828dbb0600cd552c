// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title LibAccount
/// @notice A Vault account packed into one 256-bit storage word.
/// @dev Layout, low bits first:
///
///     bits   0..103  base-token balance   (uint104: 2e31 units, 2e13 whole 18-decimal tokens)
///     bits 104..207  quote-token balance  (uint104)
///     bits 208..247  exitAvailableAt      (uint40 timestamp; 0: no exit requested)
///     bit  248       hasNonceFloor        (the maker has cancelled orders by nonce)
///
/// Settlement reads and writes each account once per fill as a whole word. A
/// Solidity struct in storage would be read and written field by field, which
/// costs a warm storage access per field.
library LibAccount {
    uint256 private constant _BALANCE_BITS = 104;
    uint256 private constant _BALANCE_MASK = (1 << _BALANCE_BITS) - 1;
    uint256 private constant _QUOTE_SHIFT = 104;
    uint256 private constant _EXIT_SHIFT = 208;
    uint256 private constant _EXIT_MASK = (1 << 40) - 1;
    uint256 private constant _NONCE_FLOOR_BIT = 1 << 248;
    uint256 private constant _BALANCES_MASK = (1 << (2 * _BALANCE_BITS)) - 1;

    /// @notice The base-token balance.
    /// @param word The packed account.
    /// @return Base units.
    function baseBalance(uint256 word) internal pure returns (uint256) {
        return word & _BALANCE_MASK;
    }

    /// @notice The quote-token balance.
    /// @param word The packed account.
    /// @return Base units.
    function quoteBalance(uint256 word) internal pure returns (uint256) {
        return (word >> _QUOTE_SHIFT) & _BALANCE_MASK;
    }

    /// @notice When the requested exit becomes available (zero: no exit requested).
    /// @param word The packed account.
    /// @return A timestamp, or zero.
    function exitAvailableAt(uint256 word) internal pure returns (uint256) {
        return (word >> _EXIT_SHIFT) & _EXIT_MASK;
    }

    /// @notice Whether the maker has set a minimum valid nonce.
    /// @param word The packed account.
    /// @return True once `cancelOrdersBelowNonce` was called.
    function hasNonceFloor(uint256 word) internal pure returns (bool) {
        return word & _NONCE_FLOOR_BIT != 0;
    }

    /// @notice `word` with both balances replaced.
    /// @dev Reverts with SafeCast's error when a balance does not fit in 104 bits.
    /// @param word The packed account.
    /// @param base The new base balance.
    /// @param quote The new quote balance.
    /// @return The packed account.
    function withBalances(uint256 word, uint256 base, uint256 quote) internal pure returns (uint256) {
        uint256 packed = uint256(SafeCast.toUint104(base)) | (uint256(SafeCast.toUint104(quote)) << _QUOTE_SHIFT);
        return (word & ~_BALANCES_MASK) | packed;
    }

    /// @notice `word` with the exit time replaced.
    /// @param word The packed account.
    /// @param timestamp The new exit time (zero clears the request).
    /// @return The packed account.
    function withExitAvailableAt(uint256 word, uint256 timestamp) internal pure returns (uint256) {
        return (word & ~(_EXIT_MASK << _EXIT_SHIFT)) | (uint256(SafeCast.toUint40(timestamp)) << _EXIT_SHIFT);
    }

    /// @notice `word` marked as having a minimum valid nonce.
    /// @param word The packed account.
    /// @return The packed account.
    function withNonceFloor(uint256 word) internal pure returns (uint256) {
        return word | _NONCE_FLOOR_BIT;
    }
}
