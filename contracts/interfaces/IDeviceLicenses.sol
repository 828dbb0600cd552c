// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IPoolRegistry} from "./IPoolRegistry.sol";

/// @title Per-device licence batches: records, errors and events
/// @notice A licensed manufacturer registers a batch of devices by the Merkle
/// root of their ids and embeds BPC in every device (white paper §3.1(2), Figure 7).
interface IDeviceLicenses {
    /// @notice Batch status. `None` means the batch id was never registered.
    /// Active -> Suspended -> Active, by the foundation; batches never end.
    enum BatchStatus {
        None,
        Active,
        Suspended
    }

    /// @notice Why a device is or is not licensed, in the order the checks run.
    enum DeviceStatus {
        Licensed,
        UnknownBatch,
        IndexOutOfRange,
        InvalidProof,
        BatchSuspended,
        Revoked
    }

    /// @notice One registered batch.
    /// @dev Three storage slots: registration cost does not depend on the device count.
    struct Batch {
        address manufacturer;
        uint32 deviceCount;
        uint32 revokedCount;
        BatchStatus status;
        bytes32 root;
        uint128 bpcPerDevice;
        uint64 registeredBlock;
    }

    /// @notice A constructor argument is the zero address.
    error DevicesZeroAddress();
    /// @notice The caller holds no live BPR, so it cannot license devices.
    /// @param account The caller.
    error DevicesManufacturerNotLicensed(address account);
    /// @notice The caller is a pool member the foundation suspended or expelled: it acquires no
    /// licences, device licences included, whatever BPR it still holds.
    /// @param account The caller.
    /// @param status Its membership status in the PoolRegistry.
    error DevicesManufacturerNotActive(address account, IPoolRegistry.Status status);
    /// @notice A batch root of zero.
    error DevicesZeroRoot();
    /// @notice The device count is zero or does not fit in 32 bits.
    /// @param deviceCount The count given.
    error DevicesInvalidDeviceCount(uint256 deviceCount);
    /// @notice The BPC per device is below the foundation's minimum (or zero).
    /// @param bpcPerDevice The amount given.
    /// @param minimum The current minimum (at least one base unit).
    error DevicesBpcPerDeviceTooLow(uint256 bpcPerDevice, uint256 minimum);
    /// @notice The BPC per device does not fit in 128 bits.
    /// @param bpcPerDevice The amount that would result.
    error DevicesBpcPerDeviceTooHigh(uint256 bpcPerDevice);
    /// @notice No batch has this id.
    /// @param batchId The id given.
    error DevicesUnknownBatch(uint256 batchId);
    /// @notice Only the batch's manufacturer may do this.
    /// @param batchId The batch.
    /// @param account The caller.
    error DevicesNotManufacturer(uint256 batchId, address account);
    /// @notice Only the batch's manufacturer or a holder of REVOKER_ROLE may revoke its devices.
    /// @param batchId The batch.
    /// @param account The caller.
    error DevicesRevocationNotAllowed(uint256 batchId, address account);
    /// @notice The device index is not below the batch's device count.
    /// @param batchId The batch.
    /// @param index The index given.
    /// @param deviceCount The batch's device count.
    error DevicesIndexOutOfRange(uint256 batchId, uint256 index, uint256 deviceCount);
    /// @notice The device was revoked before.
    /// @param batchId The batch.
    /// @param index The device's index in the batch.
    error DevicesAlreadyRevoked(uint256 batchId, uint256 index);
    /// @notice A revocation without device indices.
    /// @param batchId The batch.
    error DevicesNothingToRevoke(uint256 batchId);
    /// @notice A top-up that would take the BPC per device above 2^128 - 1.
    /// @param batchId The batch.
    /// @param addedPerDevice The amount given.
    /// @param maximum The most that can still be added per device.
    error DevicesTopUpTooLarge(uint256 batchId, uint256 addedPerDevice, uint256 maximum);
    /// @notice A top-up of zero BPC per device.
    /// @param batchId The batch.
    error DevicesZeroTopUp(uint256 batchId);
    /// @notice The batch cannot move from its current status to the requested one.
    /// @param batchId The batch.
    /// @param from The current status.
    /// @param to The requested status.
    error DevicesInvalidTransition(uint256 batchId, BatchStatus from, BatchStatus to);

    /// @notice A batch was registered and `lockedBpc` (= deviceCount × bpcPerDevice) embedded in its devices.
    /// @param batchId The new batch id.
    /// @param manufacturer The licensed manufacturer that paid.
    /// @param root Merkle root over the batch's device leaves.
    /// @param deviceCount Number of devices (leaves) in the batch.
    /// @param bpcPerDevice BPC base units embedded in each device.
    /// @param lockedBpc BPC base units taken from the manufacturer.
    event BatchRegistered(
        uint256 indexed batchId,
        address indexed manufacturer,
        bytes32 root,
        uint32 deviceCount,
        uint256 bpcPerDevice,
        uint256 lockedBpc
    );
    /// @notice The manufacturer raised the BPC embedded in every device of a batch.
    /// @param batchId The batch.
    /// @param addedPerDevice BPC base units added to each device.
    /// @param bpcPerDevice BPC base units per device after the top-up.
    /// @param paidBpc BPC base units taken from the manufacturer (= deviceCount × addedPerDevice).
    event BatchToppedUp(uint256 indexed batchId, uint256 addedPerDevice, uint256 bpcPerDevice, uint256 paidBpc);
    /// @notice A device lost its licence for good.
    /// @param batchId The batch.
    /// @param index The device's index in the batch.
    /// @param revoker The manufacturer or the foundation account that revoked it.
    event DeviceRevoked(uint256 indexed batchId, uint256 indexed index, address indexed revoker);
    /// @notice The foundation suspended or reinstated a batch.
    /// @param batchId The batch.
    /// @param previousStatus The status before.
    /// @param newStatus The status after.
    /// @param by The foundation account.
    event BatchStatusChanged(
        uint256 indexed batchId, BatchStatus previousStatus, BatchStatus newStatus, address indexed by
    );
    /// @notice The council changed the minimum BPC per device for new batches.
    /// @param previousMinimum The minimum before.
    /// @param newMinimum The minimum after.
    event MinBpcPerDeviceChanged(uint256 previousMinimum, uint256 newMinimum);

    /// @notice Register a batch of devices, embedding `bpcPerDevice` BPC in each.
    /// @param root Merkle root of the leaves `keccak256(bytes.concat(keccak256(abi.encode(index, deviceIdHash))))`.
    /// @param deviceCount Number of devices; leaf indices run from 0 to deviceCount - 1.
    /// @param bpcPerDevice BPC base units per device.
    /// @return batchId The new batch id.
    function registerBatch(bytes32 root, uint256 deviceCount, uint256 bpcPerDevice) external returns (uint256 batchId);

    /// @notice Why the device `(index, deviceIdHash)` of batch `batchId` is or is not licensed.
    /// @param batchId The batch.
    /// @param index The device's index in the batch.
    /// @param deviceIdHash keccak256 of the device's canonical id.
    /// @param proof Sibling hashes from the leaf to the root, positional (left ‖ right), exactly as
    /// many as the index's path in a tree of the batch's device count takes.
    /// @return The device's status; `Licensed` only if every check passes.
    function deviceStatus(uint256 batchId, uint256 index, bytes32 deviceIdHash, bytes32[] calldata proof)
        external
        view
        returns (DeviceStatus);

    /// @notice True iff the device is in the batch (valid proof), not revoked, and the batch is active.
    /// @param batchId The batch.
    /// @param index The device's index in the batch.
    /// @param deviceIdHash keccak256 of the device's canonical id.
    /// @param proof Sibling hashes from the leaf to the root, positional (left ‖ right), exactly as
    /// many as the index's path in a tree of the batch's device count takes.
    /// @return Whether the device is licensed now.
    function isLicensed(uint256 batchId, uint256 index, bytes32 deviceIdHash, bytes32[] calldata proof)
        external
        view
        returns (bool);
}
