"""API shapes of licensing: threshold licences, certificates, device batches and the resolver.

Token amounts are decimal strings in base units (``*_wei``): uint256 values do not fit a JSON
number that JavaScript reads exactly. Hashes and addresses are 0x-hex (addresses EIP-55).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DecimalWei = Field(pattern=r"^[0-9]{1,78}$", description="Base units as a decimal string.")


class TierThreshold(BaseModel):
    tier: Literal["non_profit", "small", "medium", "large"]
    configured: bool = Field(description="False when the tier has no reference address (no threshold).")
    threshold_wei: str | None = Field(description="BPC to lock now; null when the tier is not configured.")


class FeeLicenceTerms(BaseModel):
    offered: bool
    price_wei: str
    term_s: int


class ThresholdsOut(BaseModel):
    """The current BPC threshold per tier, read from the LicenseGate at `block`."""

    chain_id: int
    block: int
    licence_gate: str
    tiers: list[TierThreshold]
    fee_licence: FeeLicenceTerms


class LicenceOut(BaseModel):
    """An address's BPR licence at `block`."""

    holder: str
    licensed: bool = Field(description="Holds a BPR that has not expired at this block.")
    kind: Literal["none", "locked", "non_profit", "fee"]
    tier: Literal["non_profit", "small", "medium", "large"] | None = Field(
        description="The tier the licence was granted at; null without a licence or for a fee licence."
    )
    locked_bpc_wei: str
    expires_at: int | None = Field(description="Unix seconds; null for licences without a term.")
    since_block: int | None
    token_id: str | None
    chain_id: int
    block: int
    block_timestamp: int
    bpr: str


class AcquireIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_wei: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,78}$",
        description="BPC to lock; default the tier's current threshold (zero for non-profit members).",
    )


class TransactionOut(BaseModel):
    """One unsigned transaction; the wallet adds nonce and fees, signs and sends it."""

    model_config = ConfigDict(populate_by_name=True)

    description: str
    chain_id: int
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    data: str
    value: str = Field(description="Wei sent with the call (always 0 here).")
    gas: int | None = Field(description="Gas estimate; null when it depends on the previous step.")
    after_previous: bool = Field(description="Send only after the previous transaction is mined.")


class TransactionsOut(BaseModel):
    action: str
    account: str
    chain_id: int
    transactions: list[TransactionOut]


class CertificateIn(BaseModel):
    """A signed certificate: its EIP-712 document and signature, or the compact text form."""

    model_config = ConfigDict(extra="forbid")

    certificate: dict[str, Any] | None = Field(
        default=None, description="EIP-712 typed data: domain and message (types and primaryType optional)."
    )
    signature: str | None = Field(default=None, pattern=r"^(0x)?([0-9a-fA-F]{2})*$", max_length=8_200)
    compact: str | None = Field(
        default=None, max_length=12_000, description="The BPCERT1: text of a QR code."
    )


class CertificateVerifyIn(CertificateIn):
    block: int | None = Field(default=None, ge=0, description="Check at this block; default the latest.")


class CertificateQrIn(CertificateIn):
    format: Literal["svg", "png"] = "svg"
    module_px: int = Field(default=6, ge=1, le=40)


class ReasonOut(BaseModel):
    code: str
    message: str


class VerificationOut(BaseModel):
    valid: bool
    reasons: list[ReasonOut] = Field(description="Every reason the certificate fails; empty when valid.")
    holder: str
    signer: str | None = Field(description="The key that signed (EOA recovery), when one is found.")
    certificate: dict[str, Any]
    compact: str
    licence: LicenceOut


# --- device batches --------------------------------------------------------------------------------


class BatchOut(BaseModel):
    upload_id: int
    status: Literal["pending", "confirmed"]
    batch_id: int | None = Field(description="The on-chain batch id, once registered.")
    manufacturer: str
    root: str
    device_count: int
    bpc_per_device_wei: str
    registered_block: int | None
    suspended: bool
    chain_id: int
    registry: str
    created_at: datetime


class BatchUploadOut(BaseModel):
    batch: BatchOut
    transactions: list[TransactionOut]


class BatchDevicesOut(BaseModel):
    upload_id: int
    offset: int
    device_ids: list[str] = Field(description="Canonical ids of devices offset, offset + 1, …")


class DeviceAnswer(BaseModel):
    """Everything a verifier needs to check a device against the chain without trusting the service:
    call ``deviceStatus(batch_id, index, id_hash, proof)`` on ``registry`` at ``block``."""

    device_id: str = Field(description="Canonical id; id_hash = keccak256 of it.")
    scheme: Literal["gs1", "imei", "serial"]
    id_hash: str
    status: Literal["licensed", "revoked", "suspended", "unknown"]
    manufacturer: str | None
    batch_id: int | None
    bpc_per_device_wei: str | None
    index: int | None
    proof: list[str] | None = Field(
        description="Sibling hashes from the leaf up; empty for an unknown device, null when a bulk "
        "query asked for no proofs."
    )
    root: str | None
    registry: str
    chain_id: int
    block: int | None = Field(description="The last block the service has applied: the answer holds there.")


class DeviceQueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[str] = Field(
        description="Device ids with a scheme prefix (gs1:, imei:, serial:) or Digital Links; 10,000 at most."
    )
    proofs: bool = Field(
        default=True,
        description="Include each device's Merkle proof (the default). False leaves them out (proof is "
        "null), a fraction of the answer's size: ask again, with proofs, for the devices to check on chain.",
    )
    layout: Literal["devices", "batches"] = Field(
        default="devices",
        description="`devices` (the default): one full answer per device, as a single query gives it. "
        "`batches`: nothing derivable repeated. The fields of each batch come once, in `batches`, with "
        "the proof nodes its devices take, each node once (every node of a level from the first level "
        "the devices' paths cover half of); each device names its `batch_id` and "
        "`index` (its scheme is its id's prefix, its id hash keccak256 of its id). The proof of device "
        "`index` takes, on each level `l` of its batch's `levels`, the node `(index >> l) ^ 1` when "
        "listed.",
    )


class DeviceQueryOut(BaseModel):
    chain_id: int
    registry: str
    block: int | None
    devices: list[DeviceAnswer]


class ProofLevel(BaseModel):
    """The proof nodes of one tree level that the devices of a batched answer take (or all the
    level's nodes, from the first level their paths cover half of)."""

    indices: list[int] = Field(description="The nodes' places in the level, ascending.")
    nodes: str = Field(description="The nodes in that order, as one 0x-hex string of 64 digits per node.")


class BatchNodes(BaseModel):
    """A batch of a batched bulk answer: its fields, and the proof nodes of its devices asked for."""

    batch_id: int
    manufacturer: str
    bpc_per_device_wei: str
    root: str
    levels: list[ProofLevel] | None = Field(
        description="Per level below the root, leaves first, every node that the proofs of this batch's "
        "devices in the answer take, once (from the first level their paths cover half of, every node "
        "of the level); null when the query asked for no proofs."
    )


class BatchedDevice(BaseModel):
    """A device of a batched bulk answer. Its scheme is its id's prefix and its id hash keccak256 of
    its id; its batch's fields are in ``batches``."""

    device_id: str
    status: Literal["licensed", "revoked", "suspended", "unknown"]
    batch_id: int | None = Field(description="The batch in `batches`; null for an unknown device.")
    index: int | None


class DeviceQueryBatchedOut(BaseModel):
    """A bulk answer in the batched layout (``"layout": "batches"``)."""

    chain_id: int
    registry: str
    block: int | None
    proofs: bool
    batches: list[BatchNodes]
    devices: list[BatchedDevice]
