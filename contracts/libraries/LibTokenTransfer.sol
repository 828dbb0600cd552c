// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @title LibTokenTransfer
/// @notice An ERC-20 transfer that reports a refusal instead of reverting, with a gas cap.
/// @dev The same call and result check as OpenZeppelin's `SafeERC20.trySafeTransfer` (a token
/// that returns nothing succeeds if it has code; one that returns anything but `true` fails),
/// except that the call is given at most `gasLimit` gas. `trySafeTransfer` gives the token all
/// the gas left: a token that calls the recipient during a transfer would let a recipient burn
/// 63/64 of what the whole transaction has left, and so make every other transfer after it fail.
/// Only the first 32 bytes of what the token returns are copied, whatever it returns.
library LibTokenTransfer {
    /// @notice Transfer `value` of `token` to `to`, giving the call at most `gasLimit` gas.
    /// @param token The token.
    /// @param to The receiver.
    /// @param value Base units.
    /// @param gasLimit The most gas the token's transfer may use.
    /// @return success Whether the token made the transfer.
    function tryTransfer(IERC20 token, address to, uint256 value, uint256 gasLimit)
        internal
        returns (bool success)
    {
        bytes4 selector = IERC20.transfer.selector;
        // solhint-disable-next-line no-inline-assembly
        assembly ("memory-safe") {
            let fmp := mload(0x40)
            mstore(0x00, selector)
            mstore(0x04, and(to, shr(96, not(0))))
            mstore(0x24, value)
            success := call(gasLimit, token, 0, 0x00, 0x44, 0x00, 0x20)
            // A call that returned `true` succeeded; otherwise only one that returned nothing,
            // to a token that has code (a token without a return value, such as USDT).
            if iszero(and(success, eq(mload(0x00), 1))) {
                success := and(success, and(iszero(returndatasize()), gt(extcodesize(token), 0)))
            }
            mstore(0x40, fmp)
        }
    }
}
