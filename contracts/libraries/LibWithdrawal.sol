// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title LibWithdrawal
/// @notice The operator's EIP-712 withdrawal authorisation: it lets `account`
/// withdraw `amount` of `token` at once, because the off-chain ledger has
/// checked that the amount is not reserved for open orders.
/// @dev The Python mirror is `exchange/trading/eip712.py`; change both together.
library LibWithdrawal {
    /// @notice keccak256 of the EIP-712 type string of a withdrawal authorisation.
    /// @dev Hashed at compile time: the long string never reaches the bytecode.
    // solhint-disable-next-line gas-small-strings
    bytes32 internal constant WITHDRAWAL_TYPEHASH = keccak256(
        "Withdrawal(address account,address token,uint256 amount,uint64 nonce,uint64 expiry)"
    );

    /// @notice The EIP-712 struct hash of a withdrawal authorisation.
    /// @param account The account allowed to withdraw (funds go to it).
    /// @param token The token.
    /// @param amount Base units.
    /// @param nonce Single-use number chosen by the operator, per account.
    /// @param expiry First timestamp at which the authorisation is no longer valid.
    /// @return The struct hash.
    function hash(address account, address token, uint256 amount, uint64 nonce, uint64 expiry)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(WITHDRAWAL_TYPEHASH, account, token, amount, nonce, expiry));
    }
}
