"""Signing in through the HTTP API with Sign-In with Ethereum, for tests of any area."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from exchange.auth.siwe import SiweMessage


async def signed_login(
    client: httpx.AsyncClient, account: LocalAccount, **overrides: object
) -> tuple[httpx.Response, str]:
    """Ask for a nonce, sign an EIP-4361 message as ``account`` and log in; the reply and the message."""
    issued = (await client.post("/v1/auth/nonce")).json()
    fields: dict[str, object] = {
        "domain": issued["domain"],
        "address": account.address,
        "statement": "Sign in to the patent pool.",
        "uri": f"http://{issued['domain']}/",
        "chain_id": issued["chain_id"],
        "nonce": issued["nonce"],
        "issued_at": datetime.now(UTC).replace(microsecond=0),
    }
    fields.update(overrides)
    text = SiweMessage(**fields).render()  # type: ignore[arg-type]
    signature = account.sign_message(encode_defunct(text=text)).signature.hex()
    reply = await client.post(
        "/v1/auth/login", json={"message": text, "signature": "0x" + signature.removeprefix("0x")}
    )
    return reply, text


async def bearer_headers(client: httpx.AsyncClient, account: LocalAccount) -> dict[str, str]:
    """Sign in as ``account``; the ``Authorization`` header of its session."""
    reply, _ = await signed_login(client, account)
    if reply.status_code != 200:
        raise AssertionError(f"sign-in of {account.address} failed: {reply.status_code} {reply.text}")
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


def embedded_account(index: int) -> LocalAccount:
    """The embedded EVM's unlocked, funded account ``index`` (its key is ``index + 1``)."""
    account: LocalAccount = Account.from_key((index + 1).to_bytes(32, "big"))
    return account
