// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IBPR} from "./interfaces/IBPR.sol";
import {IDeviceLicenses} from "./interfaces/IDeviceLicenses.sol";
import {IPoolRegistry} from "./interfaces/IPoolRegistry.sol";

/// @title DeviceLicenses
/// @notice Atomic per-device licensing (white paper §3.1(2), Figure 7): a BPR
/// holder registers a batch of devices by the Merkle root of their ids and
/// embeds BPC in every device. Anyone can check a device with its Merkle proof.
/// @dev Rules:
/// - Registration costs the same for 1 or 1,000,000 devices: the batch stores
///   its root and count, never per-device data. Leaves are OpenZeppelin's
///   standard double hash of `abi.encode(index, deviceIdHash)`, so a leaf can
///   never pass for an inner node.
/// - The tree's shape is fixed by the batch's device count n: level 0 holds the
///   n leaves in index order, each level above pairs neighbours (0, 1), (2, 3), …
///   into keccak256(left ‖ right) — positional, never sorted — and an odd node at
///   the end of a level moves up unchanged; the root is the one node of the top
///   level (a batch of one device has its leaf as root). A proof is the list of
///   siblings from the leaf upwards, without flags: device `index`'s position
///   and n say at each level whether its node is a left child, a right child or
///   moves up alone, so the proof follows the one path of that position in a
///   tree of n leaves and must be used up exactly. Each index below n thus has
///   at most one leaf that proves, and a batch licenses at most deviceCount
///   devices, the number its BPC paid for.
/// - The embedded BPC is the licence ("a licence exists only because BPC
///   moved", §4.6.3). It stays in this contract for good: no path returns it,
///   because a device already sold must not lose its licence when its maker
///   wants its BPC back. This contract's BPC balance therefore equals the sum
///   over batches of deviceCount × bpcPerDevice.
/// - A device's licence does not depend on its manufacturer's BPR after
///   registration: the manufacturer must be licensed to register a batch, and
///   the devices keep the licence their BPC paid for. The foundation acts on
///   devices through revocation (final, per device) and on whole batches
///   through suspension (reversible).
/// - A pool member the foundation suspended or expelled in the PoolRegistry
///   registers no batch, even while it still holds its BPR: a suspended member
///   acquires no licences, device licences included. Non-members licensed by
///   fee register as any licensee. Top-ups and the manufacturer's own
///   revocations stay open to it: they license no new device.
/// - A top-up raises the BPC of every device of a batch; new devices go into a new batch.
contract DeviceLicenses is AccessControl, IDeviceLicenses {
    using SafeERC20 for IERC20;

    /// @notice Role of the foundation accounts that revoke devices and suspend batches.
    bytes32 public constant REVOKER_ROLE = keccak256("REVOKER_ROLE");

    /// @notice The BPC token embedded in devices.
    IERC20 public immutable bpc;
    /// @notice The BPR licence token: only its holders register batches.
    IBPR public immutable bpr;
    /// @notice The membership register: its suspended and expelled members register no batches.
    IPoolRegistry public immutable registry;

    /// @notice Minimum BPC base units per device for new batches (zero: any positive amount).
    uint256 public minBpcPerDevice;
    /// @notice Number of batches registered; batch ids run from 1 to batchCount.
    uint256 public batchCount;

    mapping(uint256 batchId => Batch) private _batches;
    mapping(uint256 batchId => mapping(uint256 word => uint256 bits)) private _revoked;

    /// @param council The foundation council: role administrator, sets the minimum BPC per device.
    /// @param bpcToken The BPC token.
    /// @param bprToken The BPR token whose holders may register batches.
    /// @param poolRegistry The membership register whose suspended and expelled members may not.
    constructor(address council, IERC20 bpcToken, IBPR bprToken, IPoolRegistry poolRegistry) {
        if (
            council == address(0) || address(bpcToken) == address(0) || address(bprToken) == address(0)
                || address(poolRegistry) == address(0)
        ) revert DevicesZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, council);
        bpc = bpcToken;
        bpr = bprToken;
        registry = poolRegistry;
    }

    /// @inheritdoc IDeviceLicenses
    /// @dev The caller must hold a live BPR, must not be a suspended or expelled pool member, and
    /// must approve deviceCount × bpcPerDevice BPC first.
    function registerBatch(bytes32 root, uint256 deviceCount, uint256 bpcPerDevice)
        external
        returns (uint256 batchId)
    {
        if (!bpr.isLicensed(msg.sender)) revert DevicesManufacturerNotLicensed(msg.sender);
        IPoolRegistry.Status membership = registry.memberOf(msg.sender).status;
        if (membership == IPoolRegistry.Status.Suspended || membership == IPoolRegistry.Status.Expelled) {
            revert DevicesManufacturerNotActive(msg.sender, membership);
        }
        if (root == bytes32(0)) revert DevicesZeroRoot();
        if (deviceCount == 0 || deviceCount > type(uint32).max) revert DevicesInvalidDeviceCount(deviceCount);
        uint256 minimum = minBpcPerDevice;
        if (bpcPerDevice == 0 || bpcPerDevice < minimum) {
            revert DevicesBpcPerDeviceTooLow(bpcPerDevice, minimum == 0 ? 1 : minimum);
        }
        if (bpcPerDevice > type(uint128).max) revert DevicesBpcPerDeviceTooHigh(bpcPerDevice);

        batchId = ++batchCount;
        _batches[batchId] = Batch({
            manufacturer: msg.sender,
            deviceCount: uint32(deviceCount),
            revokedCount: 0,
            status: BatchStatus.Active,
            root: root,
            bpcPerDevice: uint128(bpcPerDevice),
            registeredBlock: uint64(block.number)
        });
        // A uint32 count times a uint128 amount cannot overflow 256 bits.
        uint256 lockedBpc = deviceCount * bpcPerDevice;
        emit BatchRegistered(batchId, msg.sender, root, uint32(deviceCount), bpcPerDevice, lockedBpc);
        bpc.safeTransferFrom(msg.sender, address(this), lockedBpc);
    }

    /// @notice Embed `addedPerDevice` more BPC in every device of a batch, paying deviceCount × addedPerDevice.
    /// @dev Manufacturer only; allowed while the batch or its manufacturer's membership is
    /// suspended (it only adds value to devices already licensed).
    /// @param batchId The batch.
    /// @param addedPerDevice BPC base units to add per device.
    function topUp(uint256 batchId, uint256 addedPerDevice) external {
        Batch storage batch = _existing(batchId);
        if (batch.manufacturer != msg.sender) revert DevicesNotManufacturer(batchId, msg.sender);
        if (addedPerDevice == 0) revert DevicesZeroTopUp(batchId);
        uint256 current = batch.bpcPerDevice;
        uint256 room = type(uint128).max - current;
        if (addedPerDevice > room) revert DevicesTopUpTooLarge(batchId, addedPerDevice, room);
        uint256 bpcPerDevice = current + addedPerDevice;
        batch.bpcPerDevice = uint128(bpcPerDevice);
        uint256 paidBpc = uint256(batch.deviceCount) * addedPerDevice;
        emit BatchToppedUp(batchId, addedPerDevice, bpcPerDevice, paidBpc);
        bpc.safeTransferFrom(msg.sender, address(this), paidBpc);
    }

    /// @notice Revoke devices of a batch for good; their BPC stays embedded.
    /// @dev By the batch's manufacturer or a REVOKER_ROLE holder. The whole call reverts if any
    /// index is out of range or already revoked.
    /// @param batchId The batch.
    /// @param indices The devices' indices in the batch.
    function revokeDevices(uint256 batchId, uint256[] calldata indices) external {
        Batch storage batch = _existing(batchId);
        if (batch.manufacturer != msg.sender && !hasRole(REVOKER_ROLE, msg.sender)) {
            revert DevicesRevocationNotAllowed(batchId, msg.sender);
        }
        uint256 count = indices.length;
        if (count == 0) revert DevicesNothingToRevoke(batchId);
        uint256 deviceCount = batch.deviceCount;
        mapping(uint256 word => uint256 bits) storage revoked = _revoked[batchId];
        for (uint256 i = 0; i < count; ++i) {
            uint256 index = indices[i];
            if (index >= deviceCount) revert DevicesIndexOutOfRange(batchId, index, deviceCount);
            uint256 mask = 1 << (index & 0xff);
            uint256 bits = revoked[index >> 8];
            if (bits & mask != 0) revert DevicesAlreadyRevoked(batchId, index);
            revoked[index >> 8] = bits | mask;
            emit DeviceRevoked(batchId, index, msg.sender);
        }
        // Each index was revoked once and is below a uint32 count, so the sum stays below 2^32.
        batch.revokedCount += uint32(count);
    }

    /// @notice Suspend an active batch: none of its devices is licensed until it is reinstated.
    /// @param batchId The batch.
    function suspendBatch(uint256 batchId) external onlyRole(REVOKER_ROLE) {
        _transition(batchId, BatchStatus.Active, BatchStatus.Suspended);
    }

    /// @notice Reinstate a suspended batch.
    /// @param batchId The batch.
    function reinstateBatch(uint256 batchId) external onlyRole(REVOKER_ROLE) {
        _transition(batchId, BatchStatus.Suspended, BatchStatus.Active);
    }

    /// @notice Set the minimum BPC per device for batches registered from now on.
    /// @param minimum BPC base units (zero: any positive amount).
    function setMinBpcPerDevice(uint256 minimum) external onlyRole(DEFAULT_ADMIN_ROLE) {
        emit MinBpcPerDeviceChanged(minBpcPerDevice, minimum);
        minBpcPerDevice = minimum;
    }

    /// @notice The record of batch `batchId` (status None if it does not exist).
    /// @param batchId The batch.
    /// @return The batch record.
    function batchOf(uint256 batchId) external view returns (Batch memory) {
        return _batches[batchId];
    }

    /// @notice Whether device `index` of batch `batchId` was revoked.
    /// @param batchId The batch.
    /// @param index The device's index in the batch.
    /// @return True once revoked.
    function isRevoked(uint256 batchId, uint256 index) public view returns (bool) {
        return _revoked[batchId][index >> 8] & (1 << (index & 0xff)) != 0;
    }

    /// @inheritdoc IDeviceLicenses
    function deviceStatus(uint256 batchId, uint256 index, bytes32 deviceIdHash, bytes32[] calldata proof)
        public
        view
        returns (DeviceStatus)
    {
        Batch storage batch = _batches[batchId];
        BatchStatus status = batch.status;
        if (status == BatchStatus.None) return DeviceStatus.UnknownBatch;
        if (index >= batch.deviceCount) return DeviceStatus.IndexOutOfRange;
        if (!_proves(proof, batch.root, leafHash(index, deviceIdHash), index, batch.deviceCount)) {
            return DeviceStatus.InvalidProof;
        }
        if (status == BatchStatus.Suspended) return DeviceStatus.BatchSuspended;
        if (isRevoked(batchId, index)) return DeviceStatus.Revoked;
        return DeviceStatus.Licensed;
    }

    /// @inheritdoc IDeviceLicenses
    function isLicensed(uint256 batchId, uint256 index, bytes32 deviceIdHash, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        return deviceStatus(batchId, index, deviceIdHash, proof) == DeviceStatus.Licensed;
    }

    /// @notice The Merkle leaf of a device: OpenZeppelin's standard double hash of (index, deviceIdHash).
    /// @param index The device's index in its batch.
    /// @param deviceIdHash keccak256 of the device's canonical id.
    /// @return The leaf hash.
    function leafHash(uint256 index, bytes32 deviceIdHash) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(index, deviceIdHash))));
    }

    /// @notice Whether `proof` leads from `leaf`, at position `index` of a tree of `count` leaves, to `root`.
    /// @dev Level by level from the leaves: if the node is the last of an odd-sized level it moves up
    /// unchanged and takes no proof element; otherwise the next element is its sibling, on the left
    /// of it if `index` is odd, on the right if even. Then index >>= 1 and count = (count + 1) / 2,
    /// until count is 1. A proof too short, too long or leading elsewhere is refused alike.
    /// The caller ensures index < count.
    /// @param proof Sibling hashes from the leaf upwards.
    /// @param root The batch's root.
    /// @param leaf The device's leaf hash.
    /// @param index The device's index in the batch.
    /// @param count The batch's device count.
    /// @return True iff the proof is used up exactly and ends at `root`.
    function _proves(bytes32[] calldata proof, bytes32 root, bytes32 leaf, uint256 index, uint256 count)
        private
        pure
        returns (bool)
    {
        bytes32 node = leaf;
        uint256 length = proof.length;
        uint256 used = 0;
        while (count > 1) {
            if (index != count - 1 || count & 1 == 0) {
                if (used == length) return false;
                bytes32 sibling = proof[used];
                ++used;
                node = index & 1 == 0
                    ? keccak256(bytes.concat(node, sibling))
                    : keccak256(bytes.concat(sibling, node));
            }
            index >>= 1;
            count = (count + 1) >> 1;
        }
        return used == length && node == root;
    }

    function _existing(uint256 batchId) private view returns (Batch storage batch) {
        batch = _batches[batchId];
        if (batch.status == BatchStatus.None) revert DevicesUnknownBatch(batchId);
    }

    function _transition(uint256 batchId, BatchStatus from, BatchStatus to) private {
        Batch storage batch = _existing(batchId);
        BatchStatus current = batch.status;
        if (current != from) revert DevicesInvalidTransition(batchId, current, to);
        batch.status = to;
        emit BatchStatusChanged(batchId, from, to, msg.sender);
    }
}
