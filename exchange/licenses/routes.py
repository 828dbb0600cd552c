"""``/v1/licences``: threshold licences, unsigned licence transactions, licence certificates.

The public routes that read the chain on each request (thresholds, a certificate's draft and
verification, an address's licence) take a token from the client IP's chain-read bucket first
(``exchange.api.dependencies.limit_chain_reads``). So does the QR code, which reads nothing but
costs the server CPU: it is drawn in a worker thread, at most ``MAX_QR_PNG_SIDE_PX`` pixels a side.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated

import segno
from fastapi import APIRouter, Body, Depends, Query, Response

from exchange.api.dependencies import limit_chain_reads
from exchange.api.problems import problem_responses
from exchange.auth.dependencies import CurrentPrincipalAlone
from exchange.chain.pool import LicenceKind, Tier
from exchange.kit.errors import (
    ChainRejected,
    ChainUnavailable,
    Conflict,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from exchange.licenses import service
from exchange.licenses.barcodes import ImageTooLarge, ImageType, render_qr
from exchange.licenses.certificates import Certificate, InvalidCertificate
from exchange.licenses.lifespan import Licensing, licensing
from exchange.licenses.schemas import (
    AcquireIn,
    CertificateIn,
    CertificateQrIn,
    CertificateVerifyIn,
    FeeLicenceTerms,
    LicenceOut,
    ReasonOut,
    ThresholdsOut,
    TierThreshold,
    TransactionOut,
    TransactionsOut,
    VerificationOut,
)
from exchange.licenses.service import LicenceAction, LicenceAt
from exchange.licenses.transactions import UnsignedTransaction

router = APIRouter(prefix="/v1/licences", tags=["licences"])
LicensingDep = Annotated[Licensing, Depends(licensing)]

_TIER_NAMES = {Tier.NON_PROFIT: "non_profit", Tier.SMALL: "small", Tier.MEDIUM: "medium", Tier.LARGE: "large"}
_KIND_NAMES = {
    LicenceKind.NONE: "none",
    LicenceKind.LOCKED: "locked",
    LicenceKind.NON_PROFIT: "non_profit",
    LicenceKind.FEE: "fee",
}


def transaction_out(step: UnsignedTransaction) -> TransactionOut:
    return TransactionOut.model_validate(
        {
            "description": step.description,
            "chain_id": step.chain_id,
            "from": step.sender,
            "to": step.to,
            "data": step.data,
            "value": str(step.value_wei),
            "gas": step.gas,
            "after_previous": step.after_previous,
        }
    )


def licence_out(state: Licensing, at: LicenceAt) -> LicenceOut:
    licence = at.licence
    held, tier = licence.held, licence.member_tier
    return LicenceOut(
        holder=licence.holder,
        licensed=licence.licensed,
        kind=_KIND_NAMES[licence.kind],  # type: ignore[arg-type]
        tier=_TIER_NAMES[tier] if tier is not None else None,  # type: ignore[arg-type]
        locked_bpc_wei=str(licence.locked_bpc_wei),
        expires_at=licence.expires_at or None,
        since_block=licence.since_block if held else None,
        token_id=str(licence.token_id) if held else None,
        chain_id=state.runtime.deployment.chain_id,
        block=at.block,
        block_timestamp=at.block_timestamp,
        bpr=state.runtime.pool.bpr.address,
    )


@router.get(
    "/thresholds",
    response_model=ThresholdsOut,
    summary="BPC threshold per tier",
    responses=problem_responses(RateLimited, ChainUnavailable),
    dependencies=[Depends(limit_chain_reads)],
)
async def get_thresholds(state: LicensingDep) -> ThresholdsOut:
    """The BPC a member of each tier must lock now (the balance at the tier's reference address),
    and the fee licence terms for non-members, read from the LicenseGate at the latest block."""
    result = await service.thresholds(state.runtime)
    return ThresholdsOut(
        chain_id=state.runtime.deployment.chain_id,
        block=result.block,
        licence_gate=state.runtime.pool.gate.address,
        tiers=[
            TierThreshold(
                tier=_TIER_NAMES[tier.tier],  # type: ignore[arg-type]
                configured=tier.threshold_wei is not None,
                threshold_wei=None if tier.threshold_wei is None else str(tier.threshold_wei),
            )
            for tier in result.tiers
        ],
        fee_licence=FeeLicenceTerms(
            offered=result.fee_price_wei > 0 and result.fee_term_s > 0,
            price_wei=str(result.fee_price_wei),
            term_s=result.fee_term_s,
        ),
    )


@router.post(
    "/transactions/{action}",
    response_model=TransactionsOut,
    response_model_by_alias=True,
    summary="Unsigned licence transactions for the caller",
    responses=problem_responses(Unauthorized, ValidationFailed, Conflict, ChainRejected, ChainUnavailable),
)
async def post_transactions(
    action: LicenceAction,
    principal: CurrentPrincipalAlone,
    state: LicensingDep,
    body: Annotated[AcquireIn | None, Body()] = None,
) -> TransactionsOut:
    """The transactions the signed-in member signs itself to ``acquire`` (lock the threshold),
    ``release``, ``renew`` a fee licence or ``buy-fee`` (non-members) — for its own address
    only. A BPC ``approve`` comes first when the allowance is short. The caller is resolved in a
    short transaction of its own: none is open while the chain is read."""
    amount = int(body.amount_wei) if body is not None and body.amount_wei is not None else None
    steps = await service.licence_transactions(state.runtime, principal.address, action, amount)
    return TransactionsOut(
        action=action.value,
        account=principal.address,
        chain_id=state.runtime.deployment.chain_id,
        transactions=[transaction_out(step) for step in steps],
    )


def _certificate(body: CertificateIn) -> tuple[Certificate, bytes]:
    if body.compact is not None:
        if body.certificate is not None or body.signature is not None:
            raise InvalidCertificate("give either compact, or certificate and signature")
        return Certificate.from_compact(body.compact)
    if body.certificate is None or body.signature is None:
        raise InvalidCertificate("give certificate and signature, or compact")
    return Certificate.from_typed_data(body.certificate), service.parse_signature(body.signature)


@router.post(
    "/certificates/verify",
    response_model=VerificationOut,
    summary="Verify a licence certificate",
    responses=problem_responses(ValidationFailed, RateLimited, ChainUnavailable),
    dependencies=[Depends(limit_chain_reads)],
)
async def post_verify_certificate(body: CertificateVerifyIn, state: LicensingDep) -> VerificationOut:
    """Check a certificate's EIP-712 signature (the holder's key, or its ERC-1271 wallet) and
    the holder's on-chain licence at ``block`` (default the latest). An invalid certificate is
    a 200 answer with ``valid: false`` and every reason; a malformed one is a 422."""
    certificate, signature = _certificate(body)
    result = await service.verify_certificate(state.runtime, certificate, signature, body.block)
    return VerificationOut(
        valid=not result.reasons,
        reasons=[ReasonOut(code=reason.code.value, message=reason.message) for reason in result.reasons],
        holder=certificate.holder,
        signer=result.signer,
        certificate=certificate.typed_data(),
        compact=certificate.to_compact(signature),
        licence=licence_out(state, result.licence),
    )


MAX_QR_PNG_SIDE_PX = 4096
"""The largest PNG side the QR route draws: drawing time grows with the pixels (a 177-module
symbol at 40 pixels a module, 7,400 a side, takes a fifth of a second). SVG's size does not grow
with ``module_px``."""


@router.post(
    "/certificates/qr",
    summary="A licence certificate as a QR code",
    description=f"A PNG is at most {MAX_QR_PNG_SIDE_PX} pixels a side: a larger one is refused (422).",
    responses={
        200: {"content": {"image/svg+xml": {}, "image/png": {}}, "description": "The QR code."},
        **problem_responses(ValidationFailed, RateLimited),
    },
    dependencies=[Depends(limit_chain_reads)],
)
async def post_certificate_qr(body: CertificateQrIn) -> Response:
    """The certificate's compact form (``BPCERT1:…``, see ``exchange.licenses.certificates``)
    as a QR code; scanning it gives the text ``POST /v1/licences/certificates/verify`` takes as
    ``compact``. The signature is not checked here."""
    certificate, signature = _certificate(body)
    image_type = ImageType(body.format)
    compact = certificate.to_compact(signature)
    try:
        image = await asyncio.to_thread(
            render_qr, compact, image_type, module_px=body.module_px, max_png_side_px=MAX_QR_PNG_SIDE_PX
        )
    except ImageTooLarge as exc:
        raise ValidationFailed(
            f"this certificate's QR code at {body.module_px} pixels a module is {exc.side_px} pixels a"
            f" side, more than {MAX_QR_PNG_SIDE_PX}; ask for fewer pixels a module, or for SVG",
            extra={"field": "module_px"},
        ) from None
    except segno.DataOverflowError:  # a long statement, or a long contract-wallet signature
        raise ValidationFailed(
            f"the certificate's compact form is {len(compact)} characters, more than a QR code"
            " holds; shorten the statement"
        ) from None
    media = "image/svg+xml" if image_type is ImageType.SVG else "image/png"
    return Response(content=image, media_type=media)


@router.get(
    "/certificates/draft",
    summary="An unsigned licence certificate to sign",
    responses=problem_responses(ValidationFailed, RateLimited, ChainUnavailable),
    dependencies=[Depends(limit_chain_reads)],
)
async def get_certificate_draft(
    state: LicensingDep,
    holder: str,
    statement: Annotated[str, Query(max_length=500)] = "holds a licence to every patent in the pool",
    valid_for_s: Annotated[int, Query(ge=60, le=366 * 86_400)] = 86_400,
    nonce: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, object]:
    """EIP-712 typed data of a certificate for ``holder``, bound to this pool and chain, valid
    from now for ``valid_for_s`` seconds: pass it to the holder's wallet
    (``eth_signTypedData_v4``). Nothing is stored.

    It is issued at the earlier of this server's clock and the latest block's time, which a
    certificate is judged at: a block's time lags the clock (by up to a block interval on a
    busy chain, by hours on an idle one that mines on demand), and a certificate issued after
    it would not be valid until a later block. It expires ``valid_for_s`` after the clock."""
    holder_address = service.address(holder)
    clock = int(time.time())
    now = min(clock, await service.chain_time(state.runtime))
    pool = state.runtime.pool
    certificate = Certificate(
        chain_id=state.runtime.deployment.chain_id,
        verifying_contract=pool.bpr.address,
        holder=holder_address,
        pool=pool.registry.address,
        statement=statement,
        issued_at=now,
        expires_at=clock + valid_for_s,
        nonce=nonce if nonce is not None else secrets.randbits(128),
    )
    return certificate.typed_data()


@router.get(
    "/{address}",
    response_model=LicenceOut,
    summary="An address's licence",
    responses=problem_responses(ValidationFailed, RateLimited, ChainUnavailable),
    dependencies=[Depends(limit_chain_reads)],
)
async def get_licence(
    address: str, state: LicensingDep, block: Annotated[int | None, Query(ge=0)] = None
) -> LicenceOut:
    """BPR licence of ``address`` at ``block`` (default the latest): kind, tier, locked BPC,
    expiry, the block it was granted in, and whether it is live at that block."""
    return licence_out(state, await service.licence_status(state.runtime, address, block))
