"""API shapes of the auth room."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class NonceOut(BaseModel):
    nonce: str = Field(description="Put this in the `Nonce:` line of the EIP-4361 message. Single use.")
    expires_at: datetime
    domain: str = Field(description="The domain the message must name.")
    chain_id: int = Field(description="The chain id the message must name.")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=4096, description="The EIP-4361 message, exactly as signed.")
    signature: str = Field(
        pattern=r"^0x[0-9a-fA-F]+$", max_length=4098, description="Hex signature (EIP-191 personal_sign)."
    )


class SessionOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type name, not a secret
    expires_at: datetime
    address: str
