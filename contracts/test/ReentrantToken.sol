// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title ReentrantToken
/// @notice A hostile ERC-20 for tests: when armed, its next transfer calls back
/// into a target before balances move (like an ERC-777 send hook), to show
/// that the target's reentrancy guard holds.
/// @dev In bubbling mode the callback's revert aborts the whole transfer; in
/// recording mode the transfer goes on and the callback's revert data is kept.
contract ReentrantToken is ERC20 {
    /// @notice The contract called back into on the next transfer (zero: disarmed).
    address public reentryTarget;
    /// @notice Whether a failed callback aborts the transfer (true) or is recorded (false).
    bool public bubbleRevert;
    /// @notice Revert data of the last recorded failed callback.
    bytes public lastReentryError;
    /// @notice Number of callbacks attempted.
    uint256 public reentryAttempts;
    /// @notice Number of callbacks that succeeded (a successful re-entry is a test failure).
    uint256 public reentrySuccesses;

    bytes private _reentryData;

    /// @notice `callTarget` is for the token's own use.
    error ReentrantTokenSelfCallOnly(address caller);

    /// @param name_ Token name.
    /// @param symbol_ Token symbol.
    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {}

    /// @notice Mint freely (tests only).
    /// @param to Recipient.
    /// @param amount Base units.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Call `target` with `data` during the next transfer.
    /// @param target The contract to re-enter.
    /// @param data The calldata of the callback.
    /// @param bubble True: a failed callback aborts the transfer; false: it is recorded.
    function arm(address target, bytes calldata data, bool bubble) external {
        reentryTarget = target;
        _reentryData = data;
        bubbleRevert = bubble;
    }

    /// @notice Perform the callback (called by the token itself, so that a revert can be caught).
    /// @param target The contract to call.
    /// @param data The calldata.
    function callTarget(address target, bytes calldata data) external {
        if (msg.sender != address(this)) revert ReentrantTokenSelfCallOnly(msg.sender);
        Address.functionCall(target, data);
    }

    /// @dev The callback runs before the balances move, the most dangerous moment for the caller.
    function _update(address from, address to, uint256 value) internal override {
        address target = reentryTarget;
        if (target != address(0)) {
            reentryTarget = address(0);
            ++reentryAttempts;
            if (bubbleRevert) {
                Address.functionCall(target, _reentryData);
                ++reentrySuccesses;
            } else {
                try this.callTarget(target, _reentryData) {
                    ++reentrySuccesses;
                } catch (bytes memory reason) {
                    lastReentryError = reason;
                }
            }
        }
        super._update(from, to, value);
    }
}
